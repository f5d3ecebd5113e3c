"""GET /v1/detectors/{id}/stats/edge-learning: labels so far, edge answer rate from the
edges' hourly counters, and edge accuracy against the human labels."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta


def _metadata(edge_label: str, reason: str = "low_confidence") -> str:
    data = {"edge_result": {"label": edge_label, "confidence": 0.6}, "escalation_reason": reason}
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def _report(device, edge_id: str, detector_id: str, hour: datetime, queries: int, edge_answers: int) -> None:
    entry = {
        "detector_id": detector_id,
        "hour": hour.isoformat(),
        "counters": {"queries": queries, "edge_answers": edge_answers, "escalations": queries - edge_answers},
    }
    assert device.post("/v1/edge/report-metrics", json={"edge_id": edge_id, "entries": [entry]}).status_code == 202


def test_edge_learning_joins_counters_labels_and_edge_answers(admin, other_account, jpeg) -> None:
    detector = admin.create_detector()
    path = f"/v1/detectors/{detector['id']}/stats/edge-learning"
    assert admin.get(path).json() == {"detector_id": detector["id"], "bucket": "hour", "buckets": []}

    device = admin.new_token("device")
    edge_id = device.post(
        "/v1/edges/register", json={"name": "line-1", "software_version": "1", "detector_ids": [detector["id"]]}
    ).json()["id"]
    this_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    _report(device, edge_id, detector["id"], this_hour - timedelta(hours=2), queries=10, edge_answers=4)

    # Three escalations carry the edge's answer; two agree with the reviewer.
    for edge_label, human in (("NO", "NO"), ("YES", "NO"), ("NO", "NO")):
        iq = device.submit(detector["id"], jpeg(), metadata=_metadata(edge_label)).json()
        assert admin.post("/v1/labels", json={"label": human, "image_query_id": iq["id"]}).status_code == 201
    plain = admin.submit(detector["id"], jpeg()).json()  # labeled, no edge answer: counts as a label only
    admin.post("/v1/labels", json={"label": "YES", "image_query_id": plain["id"]})
    unclear = device.submit(detector["id"], jpeg(), metadata=_metadata("YES")).json()  # not in the training set
    admin.post("/v1/labels", json={"label": "UNCLEAR", "image_query_id": unclear["id"]})
    device.submit(detector["id"], jpeg(), metadata=_metadata("YES"))  # not labeled yet: nothing to compare
    now_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    _report(device, edge_id, detector["id"], now_hour, queries=10, edge_answers=8)

    body = admin.get(path).json()
    assert body["bucket"] == "hour"
    first, *_, last = body["buckets"]
    assert datetime.fromisoformat(first["start"]) == this_hour - timedelta(hours=2)
    assert first == {**first, "labels": 0, "queries": 10, "edge_answers": 4, "edge_answer_rate": 0.4}
    assert first["compared"] == 0 and first["edge_accuracy"] is None
    assert datetime.fromisoformat(last["start"]) == now_hour
    assert last["labels"] == 4 and last["edge_answer_rate"] == 0.8
    assert sum(b["compared"] for b in body["buckets"]) == 3 and sum(b["agreed"] for b in body["buckets"]) == 2
    if len(body["buckets"]) == 2:  # all of it in one hour (not split by an hour boundary mid-test)
        assert last["edge_accuracy"] == 2 / 3

    # An hour ten days ago stretches the span past three days: buckets become days.
    _report(device, edge_id, detector["id"], this_hour - timedelta(days=10), queries=5, edge_answers=1)
    daily = admin.get(path).json()
    assert daily["bucket"] == "day"
    assert [b["start"][11:19] for b in daily["buckets"]] == ["00:00:00"] * len(daily["buckets"])
    assert daily["buckets"][0] == {**daily["buckets"][0], "labels": 0, "queries": 5, "edge_answer_rate": 0.2}
    assert sum(b["queries"] for b in daily["buckets"]) == 25 and daily["buckets"][-1]["labels"] == 4
    assert admin.get(path, params={"days": 1}).json()["bucket"] == "hour"

    assert admin.get(path, params={"days": 0}).status_code == 422
    assert other_account.get(path).status_code == 404
