"""Prometheus metrics of the inference service, in a registry of its own per app.

Detector and model version are labels (never part of a metric name). ``model_version``
is the primary model's version: the OODD version moves with it in practice and a second
label would double the series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5)
_LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
STAGES = ("decode", "preprocess", "model", "total")

CONTENT_TYPE = CONTENT_TYPE_LATEST


class InferenceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # process_resident_memory_bytes and friends: what each loaded model costs in memory.
        ProcessCollector(registry=self.registry)
        self.latency = Histogram(
            "intellioptics_inference_latency_seconds",
            "Time per /infer request by stage (decode, preprocess, model, total).",
            ("detector_id", "model_version", "stage"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "intellioptics_inference_requests_total",
            "/infer requests by detector and HTTP status.",
            ("detector_id", "status"),
            registry=self.registry,
        )
        self.multi_calls = Counter(
            "intellioptics_inference_multi_calls_total",
            "/infer/multi calls (one image for several detectors).",
            registry=self.registry,
        )
        self.multi_backbone_runs = Counter(
            "intellioptics_inference_multi_backbone_runs_total",
            "Backbone passes run by /infer/multi calls (detectors sharing a backbone share a pass).",
            registry=self.registry,
        )
        self.multi_answers = Counter(
            "intellioptics_inference_multi_answers_total",
            "Detectors answered by /infer/multi calls.",
            registry=self.registry,
        )
        self.cache_hits = Counter(
            "intellioptics_inference_cache_hits_total",
            "Requests that found their detector loaded.",
            ("detector_id",),
            registry=self.registry,
        )
        self.cache_misses = Counter(
            "intellioptics_inference_cache_misses_total",
            "Requests that had to wait for (or start) a load.",
            ("detector_id",),
            registry=self.registry,
        )
        self.cache_evictions = Counter(
            "intellioptics_inference_cache_evictions_total",
            "Detectors dropped from the cache (LRU, memory bound, or removed from disk).",
            ("detector_id",),
            registry=self.registry,
        )
        self.load_seconds = Histogram(
            "intellioptics_inference_model_load_seconds",
            "Time to verify, load and warm up a detector's models.",
            ("detector_id", "model_version"),
            buckets=_LOAD_BUCKETS,
            registry=self.registry,
        )
        self.load_failures = Counter(
            "intellioptics_inference_model_load_failures_total",
            "Loads refused (corrupt or unusable packages).",
            ("detector_id",),
            registry=self.registry,
        )
        self.swaps = Counter(
            "intellioptics_inference_model_swaps_total",
            "Hot swaps to a new model version.",
            ("detector_id", "model_version"),
            registry=self.registry,
        )
        self.loaded = Gauge(
            "intellioptics_inference_loaded_detectors",
            "Detectors currently loaded.",
            registry=self.registry,
        )
        self.loaded_bytes = Gauge(
            "intellioptics_inference_loaded_model_bytes",
            "Sum of the loaded models' sizes (what the memory bound counts).",
            registry=self.registry,
        )
        self._children: dict[tuple[str, str], tuple[Histogram, ...]] = {}

    def observe_latency(
        self, detector_id: str, version: int, decode_s: float, preprocess_s: float, model_s: float, total_s: float
    ) -> None:
        key = (detector_id, str(version))
        children = self._children.get(key)
        if children is None:
            # Resolving label children costs a lock and a dict lookup each; keep them.
            children = tuple(self.latency.labels(detector_id, key[1], stage) for stage in STAGES)
            self._children[key] = children
        for child, value in zip(children, (decode_s, preprocess_s, model_s, total_s), strict=True):
            child.observe(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
