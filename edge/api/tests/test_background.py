"""Local upkeep that runs in every mode (background.Housekeeper), checked on an offline
edge, where no outbox sender ever runs: the outbox stays within its limits by the stated
policy (oldest audits dropped, escalations never: a full outbox refuses new ones), and the hourly counters reach SQLite while the edge runs."""

from __future__ import annotations

import logging

import pytest

from intellioptics_edge.database import EdgeDatabase
from intellioptics_edge.reporting import HourlyCounters

from .conftest import DET_BINARY, MakeEdge, base_config, jpeg, wait_for


def test_an_offline_edge_keeps_its_outbox_bounded_audits_first(
    make_edge: MakeEdge, caplog: pytest.LogCaptureFixture
) -> None:
    config = base_config()
    config["global_config"]["confident_audit_rate"] = 1.0  # every confident answer is an audit
    edge = make_edge(config, outbox_max_items=3, housekeeping_interval_s=0.02)
    assert edge.client.get("/status.json").json()["cloud_sync"]["enabled"] is False  # no sender: offline

    def outbox() -> dict:
        return edge.client.get("/status.json").json()["outbox"]

    for _ in range(3):
        assert edge.submit(DET_BINARY, jpeg(255)).json()["done_processing"] is True  # audited
    escalations = [edge.submit(DET_BINARY, jpeg(128)).json()["id"] for _ in range(3)]
    wait_for(lambda: outbox()["dropped"]["audit"] == 3)
    assert outbox()["pending"] == {"escalation": 3, "audit": 0}
    assert outbox()["dropped"]["escalation"] == 0  # audits alone made room

    # Nothing left to drop but escalations: none is dropped; the outbox is full, the next
    # query that would escalate is refused (503 + Retry-After), stated on /status and logged.
    with caplog.at_level(logging.ERROR, logger="intellioptics_edge.background"):
        wait_for(lambda: outbox()["full"] is True)
    refused = edge.submit(DET_BINARY, jpeg(128))
    assert refused.status_code == 503 and refused.json()["code"] == "outbox_full", refused.text
    assert refused.headers["retry-after"] == "30"
    assert edge.submit(DET_BINARY, jpeg(255)).status_code == 201  # confident answers still come
    assert outbox()["pending"] == {"escalation": 3, "audit": 0}
    assert outbox()["dropped"]["escalation"] == 0
    assert [i.image_query_id for i in edge.state.outbox.pending(now=1e12)] == escalations
    assert any("outbox full of escalations" in r.getMessage() for r in caplog.records)
    metrics = edge.client.get("/metrics").text
    assert 'intellioptics_edge_outbox{counter="outbox_dropped_audits"} 3.0' in metrics
    assert 'intellioptics_edge_outbox{counter="outbox_full"} 1.0' in metrics


def test_hourly_counters_are_on_disk_while_the_edge_runs(make_edge: MakeEdge) -> None:
    edge = make_edge(housekeeping_interval_s=0.02)
    edge.submit(DET_BINARY, jpeg(255))
    edge.submit(DET_BINARY, jpeg(128))
    # A second connection sees what a kill -9 of the edge now would leave behind.
    database = EdgeDatabase(edge.settings.database_path)
    try:
        on_disk = HourlyCounters(database)

        def total(name: str) -> int:
            return sum(c.get(name, 0) for d, _, c in on_disk.all() if d == DET_BINARY)

        wait_for(lambda: total("queries") == 2)
        assert total("edge_only") == 1 and total("escalations") == 1
    finally:
        database.close()
