"""The background work of a real edge app (lifespan tasks) against a fake cloud: the
escalation is delivered, the human answer comes back through GET and is kept, the edge
registers, heartbeats and reports its hourly counters, and /status and /metrics count."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from .conftest import DET_BINARY, TOKEN, MakeEdge, jpeg, wait_for

DEVICE_TOKEN = "devicetoken_0123456789abcdefghij"


@dataclass
class FakeCloud:
    down: bool = False
    image_queries: dict[str, dict] = field(default_factory=dict)
    heartbeats: list[dict] = field(default_factory=list)
    reports: list[dict] = field(default_factory=list)
    registrations: int = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("down", request=request)
        path = request.url.path
        if path == "/device-api/v1/me":
            return httpx.Response(200, json={"email": "a@b.c", "username": "a", "group": None, "is_superuser": False})
        if path == "/v1/image-queries" and request.method == "POST":
            assert request.headers["x-api-token"] == DEVICE_TOKEN
            iq_id = request.url.params["image_query_id"]
            self.image_queries.setdefault(iq_id, _cloud_iq(iq_id, None))
            return httpx.Response(201, json=self.image_queries[iq_id])
        if path.startswith("/device-api/v1/image-queries/"):
            iq_id = path.rsplit("/", 1)[1]
            if iq_id not in self.image_queries:
                return httpx.Response(404, json={"detail": "not found", "code": "not_found"})
            return httpx.Response(200, json=self.image_queries[iq_id])
        if path == "/v1/edges/register":
            self.registrations += 1
            return httpx.Response(201, json={"id": "edge_abc"})
        if path == "/v1/edges/edge_abc/heartbeat":
            self.heartbeats.append(httpx.Response(200, content=request.content).json())
            return httpx.Response(200, json={"id": "edge_abc"})
        if path == "/v1/edge/report-metrics":
            self.reports.append(httpx.Response(200, content=request.content).json())
            return httpx.Response(202, json={"accepted": 1})
        if path.startswith("/edge-api/v1/fetch-model-urls/"):
            return httpx.Response(200, json={})
        return httpx.Response(404, json={"detail": "no", "code": "not_found"})

    def label(self, iq_id: str, label: str) -> None:
        self.image_queries[iq_id] = _cloud_iq(iq_id, label)


def _cloud_iq(iq_id: str, human_label: str | None) -> dict:
    result = (
        {"label": "UNCLEAR", "confidence": None, "source": "STILL_PROCESSING", "result_type": "binary_classification"}
        if human_label is None
        else {"label": human_label, "confidence": 1.0, "source": "USER", "result_type": "binary_classification"}
    )
    return {
        "id": iq_id,
        "type": "image_query",
        "created_at": datetime.now(UTC).isoformat(),
        "query": "Is it bright?",
        "detector_id": DET_BINARY,
        "result_type": "binary_classification",
        "result": result,
        "done_processing": human_label is not None,
    }


def test_escalation_delivered_and_human_answer_back_through_the_edge(make_edge: MakeEdge, tmp_path: Path) -> None:
    cloud = FakeCloud()
    edge = make_edge(
        cloud=cloud.handle,
        device_token=DEVICE_TOKEN,
        outbox_poll_interval_s=0.02,
        heartbeat_interval_s=0.05,
        metrics_report_interval_s=0.05,
        models_dir=tmp_path / "models",
    )
    escalated = edge.submit(DET_BINARY, jpeg(128)).json()
    assert escalated["done_processing"] is False
    wait_for(lambda: escalated["id"] in cloud.image_queries)
    headers = {"x-api-token": TOKEN}
    url = f"/v1/image-queries/{escalated['id']}"
    assert edge.client.get(url, headers=headers).json()["result"]["source"] == "STILL_PROCESSING"

    cloud.label(escalated["id"], "NO")
    answer = edge.client.get(url, headers=headers).json()
    assert answer["result"]["label"] == "NO" and answer["result"]["source"] == "USER"
    cloud.down = True  # kept locally: no cloud needed any more
    assert edge.client.get(url, headers=headers).json() == answer

    cloud.down = False
    wait_for(lambda: cloud.heartbeats and cloud.reports)
    assert cloud.registrations == 1
    assert (edge.settings.edge_data_dir / "edge_id").read_text().strip() == "edge_abc"
    heartbeat = cloud.heartbeats[-1]
    assert heartbeat["detectors"] == [{"detector_id": DET_BINARY, "primary_version": 3, "oodd_version": None}]
    wait_for(lambda: cloud.heartbeats[-1]["counters"]["outbox_delivered"] == 1)
    entries = [e for e in cloud.reports[-1]["entries"] if e["detector_id"] == DET_BINARY]
    counters = entries[-1]["counters"]
    assert counters["queries"] == 1 and counters["escalations"] == 1 and counters["edge_answers"] == 1
    assert counters["confidence_bin_5"] == 1  # P(YES) of mid-grey is about 0.5

    status = edge.client.get("/status.json").json()
    assert status["outbox"]["delivered"] == 1 and status["outbox"]["pending"]["escalation"] == 0
    assert status["cloud_sync"]["edge_id"] == "edge_abc" and status["cloud_sync"]["enabled"] is True
    assert "delivered 1" in edge.client.get("/status").text
    metrics = edge.client.get("/metrics").text
    assert 'intellioptics_edge_outbox{counter="outbox_delivered"} 1.0' in metrics


def test_without_a_device_token_nothing_is_sent_and_status_says_why(make_edge: MakeEdge, tmp_path: Path) -> None:
    cloud = FakeCloud()
    edge = make_edge(cloud=cloud.handle, outbox_poll_interval_s=0.02, models_dir=tmp_path / "models")
    escalated = edge.submit(DET_BINARY, jpeg(128)).json()
    time.sleep(0.2)
    assert cloud.image_queries == {} and cloud.registrations == 0
    status = edge.client.get("/status.json").json()
    assert status["cloud_sync"]["enabled"] is False
    assert "DEVICE_TOKEN" in status["cloud_sync"]["disabled_reason"]
    assert status["outbox"]["pending"]["escalation"] == 1
    assert escalated["id"] in [i.image_query_id for i in edge.state.outbox.pending(now=1e12)]
