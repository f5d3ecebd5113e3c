"""Hourly counters: counted per detector and hour, kept in SQLite across restarts, sent in
full each time (the cloud replaces an hour), marked reported only once the hour is over."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from intellioptics_common.schemas import InferenceResult, InferenceTimings
from intellioptics_edge.database import EdgeDatabase
from intellioptics_edge.inference_client import InferenceClient
from intellioptics_edge.reporting import CloudReporter, EdgeIdentity, HourlyCounters
from intellioptics_edge.stats import EdgeStats, Outcome, hour_key

DETECTOR = "det_" + "H" * 27


def result(confidence: float) -> InferenceResult:
    return InferenceResult(
        detector_id=DETECTOR, mode="BINARY", label="YES", confidence=confidence, raw_primary_confidence=confidence,
        probabilities={"NO": 1 - confidence, "YES": confidence}, primary_model_version=1, primary_model_id="m",
        timings=InferenceTimings(decode_ms=1, preprocess_ms=1, model_ms=1, total_ms=3),
    )  # fmt: skip


def reporter(tmp_path: Path, stats: EdgeStats, sent: list[dict]) -> CloudReporter:
    def cloud(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/edges/register":
            return httpx.Response(201, json={"id": "edge_h"})
        sent.append(json.loads(request.content))
        return httpx.Response(202, json={"accepted": 1})

    async def no_counters() -> dict[str, float]:
        return {}

    database = EdgeDatabase(tmp_path / "edge.sqlite3")
    return CloudReporter(
        httpx.AsyncClient(base_url="http://cloud.test", transport=httpx.MockTransport(cloud)),
        "token",
        identity=EdgeIdentity(tmp_path / "edge_id"),
        name="edge",
        stats=stats,
        hourly=HourlyCounters(database),
        inference=InferenceClient(httpx.AsyncClient(base_url="http://inference.test")),
        detector_ids=lambda: [DETECTOR],
        outbox_counters=no_counters,
    )


def test_hourly_counters_survive_a_restart_and_are_sent_in_full(tmp_path: Path) -> None:
    stats, sent = EdgeStats(), []
    stats.record(DETECTOR, Outcome.EDGE, 0.01, confident=True, inference=result(0.97))
    stats.record(DETECTOR, Outcome.ESCALATED, 0.01, inference=result(0.55))
    stats.record(DETECTOR, Outcome.CLOUD, 0.01)
    first = reporter(tmp_path, stats, sent)
    assert asyncio.run(first.report_hourly()) == 1
    assert (tmp_path / "edge_id").read_text().strip() == "edge_h"
    hour = hour_key(datetime.now(UTC))
    entry = sent[-1]["entries"][0]
    assert sent[-1]["edge_id"] == "edge_h" and entry["detector_id"] == DETECTOR and entry["hour"] == hour
    assert entry["counters"] == {
        "queries": 3, "edge_only": 1, "escalations": 1, "forwarded_to_cloud": 1, "edge_answers": 2,
        "confident": 1, "confidence_bin_9": 1, "confidence_bin_5": 1,
    }  # fmt: skip

    # A restarted edge (new stats, same database) adds to the hour and sends it all again.
    restarted_stats = EdgeStats()
    restarted_stats.record(DETECTOR, Outcome.AUDITED, 0.01, confident=True, inference=result(0.99))
    asyncio.run(reporter(tmp_path, restarted_stats, sent).report_hourly())
    counters = sent[-1]["entries"][0]["counters"]
    assert counters["queries"] == 4 and counters["audits"] == 1 and counters["confidence_bin_9"] == 2


def test_a_finished_hour_is_sent_until_acknowledged_then_not_again(tmp_path: Path) -> None:
    sent: list[dict] = []
    rep = reporter(tmp_path, EdgeStats(), sent)
    hourly = HourlyCounters(EdgeDatabase(tmp_path / "edge.sqlite3"))
    recent = hour_key(datetime.now(UTC) - timedelta(hours=2))
    old = hour_key(datetime.now(UTC) - timedelta(days=30))
    hourly.add({(DETECTOR, recent): {"queries": 5}, (DETECTOR, old): {"queries": 1}})
    assert asyncio.run(rep.report_hourly()) == 2
    assert asyncio.run(rep.report_hourly()) == 0  # acknowledged and over: not sent again
    assert hourly.all() == [(DETECTOR, recent, {"queries": 5})]  # reported rows older than a week go
