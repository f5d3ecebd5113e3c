"""Counters for ``/status`` and ``/metrics``: per detector, kept in memory since start.

Prometheus metrics live in a registry owned by the app (not the process-wide default),
so that several apps in one process (tests) do not collide.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from intellioptics_common.schemas import InferenceResult

_LATENCY_WINDOW = 2000
HISTOGRAM_BINS = 10  # confidence histogram of the hourly counters: [0, 0.1), ..., [0.9, 1.0]
_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


class Outcome(str, Enum):
    EDGE = "edge"  # answered by the edge model, nothing more to do
    ESCALATED = "escalated"  # answered by the edge model, escalation queued
    AUDITED = "audited"  # confident edge answer, sampled for audit
    CLOUD = "cloud"  # forwarded to the cloud, its answer returned
    REFUSED = "refused"  # a 4xx/5xx error answered


@dataclass
class DetectorStats:
    counts: dict[str, int] = field(default_factory=lambda: {outcome.value: 0 for outcome in Outcome})
    confident: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCY_WINDOW))
    primary_model_version: int | None = None
    oodd_model_version: int | None = None
    last_answer_at: float | None = None
    # Answers by the stage that gave them: rule-based, hybrid (rules unsure, model), ml.
    methods: dict[str, int] = field(default_factory=dict)
    # Escalations held back (intellioptics_edge.spending), by reason.
    held_back: dict[str, int] = field(default_factory=dict)


def hour_key(moment: datetime) -> str:
    """The UTC hour a moment falls in, as the cloud's hourly metrics key it."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0).isoformat()


_HOURLY_NAMES = {
    "edge": "edge_only",
    "escalated": "escalations",
    "audited": "audits",
    "cloud": "forwarded_to_cloud",
    "refused": "refused",
}


def _hourly_names(outcome: Outcome, inference: InferenceResult | None, confident: bool) -> list[str]:
    names = ["queries", _HOURLY_NAMES[outcome.value]]
    if outcome in (Outcome.EDGE, Outcome.ESCALATED, Outcome.AUDITED):
        names.append("edge_answers")
    if confident:
        names.append("confident")
    if inference is not None:
        index = min(HISTOGRAM_BINS - 1, max(0, int(inference.confidence * HISTOGRAM_BINS)))
        names.append(f"confidence_bin_{index}")
    return names


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


class EdgeStats:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, CPU seconds, open fds
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._detectors: dict[str, DetectorStats] = {}
        # (detector_id, hour) -> counter -> increments not yet taken by the reporter
        self._hourly: dict[tuple[str, str], dict[str, int]] = {}
        self._queries = Counter(
            "intellioptics_edge_image_queries",
            "Image queries by detector and outcome",
            ["detector_id", "outcome"],
            registry=self.registry,
        )
        self._outbox = Gauge(
            "intellioptics_edge_outbox",
            "Outbox: pending items and bytes, oldest pending age (s), and totals since the database was created "
            "(delivered, retries, dead letters, dropped)",
            ["counter"],
            registry=self.registry,
        )
        self._methods = Counter(
            "intellioptics_edge_answers_by_method",
            "Edge answers by detector and the stage that gave them (rule-based, hybrid, ml)",
            ["detector_id", "method"],
            registry=self.registry,
        )
        self._held_back = Counter(
            "intellioptics_edge_escalations_held_back",
            "Unsure answers not escalated: a near-duplicate of a recent escalation, or the detector's hourly budget spent",
            ["detector_id", "reason"],
            registry=self.registry,
        )
        self._dead_letters = Gauge(
            "intellioptics_edge_outbox_dead_letters",
            "Outbox items parked as dead letters now (waiting to be re-sent or discarded), by reason",
            ["reason"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "intellioptics_edge_image_query_seconds",
            "Time to answer POST image-queries, by outcome",
            ["outcome"],
            buckets=_BUCKETS,
            registry=self.registry,
        )

    def record(
        self,
        detector_id: str,
        outcome: Outcome,
        seconds: float,
        *,
        confident: bool = False,
        inference: InferenceResult | None = None,
        method: str | None = None,
        held_back: str | None = None,
    ) -> None:
        with self._lock:
            stats = self._detectors.setdefault(detector_id, DetectorStats())
            stats.counts[outcome.value] += 1
            if held_back is not None:
                stats.held_back[held_back] = stats.held_back.get(held_back, 0) + 1
            if method is not None:
                stats.methods[method] = stats.methods.get(method, 0) + 1
            stats.confident += int(confident)
            if outcome is not Outcome.REFUSED:
                stats.latencies.append(seconds)
                stats.last_answer_at = time.time()
            hourly = self._hourly.setdefault((detector_id, hour_key(datetime.now(UTC))), {})
            for name in _hourly_names(outcome, inference, confident):
                hourly[name] = hourly.get(name, 0) + 1
            if inference is not None:
                stats.primary_model_version = inference.primary_model_version
                stats.oodd_model_version = inference.oodd_model_version
        self._queries.labels(detector_id=detector_id, outcome=outcome.value).inc()
        if method is not None:
            self._methods.labels(detector_id=detector_id, method=method).inc()
        if held_back is not None:
            self._held_back.labels(detector_id=detector_id, reason=held_back).inc()
        self._latency.labels(outcome=outcome.value).observe(seconds)

    def set_outbox(self, values: dict[str, float]) -> None:
        """Outbox gauges for /metrics, read from SQLite at scrape time (they survive restarts)."""
        for name, value in values.items():
            self._outbox.labels(counter=name).set(value)

    def set_dead_letters(self, by_reason: dict[str, int], reasons: tuple[str, ...]) -> None:
        """Dead letters by reason; every known reason is set, so a cleared one reads 0."""
        for reason in {*reasons, *by_reason}:
            self._dead_letters.labels(reason=reason).set(by_reason.get(reason, 0))

    def take_hourly(self) -> dict[tuple[str, str], dict[str, int]]:
        """The hourly increments since the last call (the reporter adds them to SQLite)."""
        with self._lock:
            taken, self._hourly = self._hourly, {}
        return taken

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            items = [(key, value, list(value.latencies)) for key, value in self._detectors.items()]
        result: dict[str, dict[str, Any]] = {}
        for detector_id, stats, latencies in sorted(items, key=lambda item: item[0]):
            p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
            result[detector_id] = {
                "counts": dict(stats.counts),
                "total": sum(stats.counts.values()),
                "confident": stats.confident,
                "latency_ms": {
                    "p50": None if p50 is None else round(p50 * 1000, 2),
                    "p99": None if p99 is None else round(p99 * 1000, 2),
                    "window": len(latencies),
                },
                "primary_model_version": stats.primary_model_version,
                "oodd_model_version": stats.oodd_model_version,
                "last_answer_at": stats.last_answer_at,
                "methods": dict(stats.methods),
                "held_back": dict(stats.held_back),
            }
        return result
