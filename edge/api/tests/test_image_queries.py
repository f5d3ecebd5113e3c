"""The decision tree of POST image-queries, and GET of what the edge answered."""

from __future__ import annotations

import base64
import json

import pytest

from intellioptics_edge.outbox_store import OutboxKind

from .conftest import (
    DET_BINARY,
    DET_DISABLED,
    DET_ESCALATE,
    DET_MULTI,
    DET_NOCLOUD,
    DET_NOMODEL,
    TOKEN,
    Edge,
    MakeEdge,
    base_config,
    huge_png_header,
    jpeg,
)


def pending(edge: Edge) -> list:
    return edge.state.outbox.pending(now=1e12)


def test_confident_answer_comes_from_the_edge_and_is_stored(edge: Edge) -> None:
    response = edge.submit(DET_BINARY, jpeg(255))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"].startswith("iq_")
    assert body["result_type"] == "binary_classification"
    assert body["result"]["label"] == "YES"
    assert body["result"]["from_edge"] is True
    assert body["result"]["source"] == "ALGORITHM"
    assert body["result"]["confidence"] > 0.9
    assert body["done_processing"] is True
    assert body["query"] == "Is it bright?"
    assert pending(edge) == []

    fetched = edge.client.get(f"/v1/image-queries/{body['id']}", headers={"x-api-token": TOKEN})
    assert fetched.status_code == 200
    assert fetched.json() == body
    image = edge.client.get(f"/device-api/v1/image-queries/{body['id']}/image", headers={"x-api-token": TOKEN})
    assert image.status_code == 200
    assert image.content == jpeg(255)
    assert image.headers["content-type"] == "image/jpeg"


def test_unconfident_answer_is_escalated_through_the_outbox(edge: Edge) -> None:
    response = edge.submit(DET_BINARY, jpeg(128))
    assert response.status_code == 201
    body = response.json()
    assert body["done_processing"] is False
    assert body["result"]["confidence"] < 0.9
    items = pending(edge)
    assert [(i.kind, i.image_query_id, i.detector_id) for i in items] == [
        (OutboxKind.ESCALATION, body["id"], DET_BINARY)
    ]
    assert items[0].edge_answer["label"] in ("YES", "NO")
    assert items[0].metadata["escalation_reason"] == "low_confidence"
    assert edge.state.outbox.image(items[0]) == jpeg(128)


def test_threshold_parameter_decides_confidence(edge: Edge) -> None:
    body = edge.submit(DET_BINARY, jpeg(128), confidence_threshold="0.5").json()
    assert body["done_processing"] is True
    assert body["confidence_threshold"] == 0.5
    assert pending(edge) == []


def test_always_return_escalates_at_most_once_per_interval(edge: Edge) -> None:
    first = edge.submit(DET_ESCALATE, jpeg(128)).json()
    second = edge.submit(DET_ESCALATE, jpeg(128)).json()
    assert first["done_processing"] is False
    assert second["done_processing"] is True
    assert [i.image_query_id for i in pending(edge)] == [first["id"]]


def test_no_cloud_detector_answers_without_escalating(edge: Edge) -> None:
    body = edge.submit(DET_NOCLOUD, jpeg(128)).json()
    assert body["done_processing"] is True
    assert body["result"]["from_edge"] is True
    assert pending(edge) == []


def test_audits_are_sampled_at_the_configured_rate(make_edge: MakeEdge) -> None:
    config = base_config()
    config["global_config"]["confident_audit_rate"] = 1.0
    edge = make_edge(config)
    body = edge.submit(DET_BINARY, jpeg(255)).json()
    assert body["done_processing"] is True
    assert [(i.kind, i.image_query_id) for i in pending(edge)] == [(OutboxKind.AUDIT, body["id"])]


def test_multiclass_answer(edge: Edge) -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 250, 10)).save(buffer, format="JPEG")
    body = edge.submit(DET_MULTI, buffer.getvalue()).json()
    assert body["result_type"] == "multi_classification"
    assert body["result"]["label"] == "green"


def test_metadata_inspection_and_image_query_id_are_kept(edge: Edge) -> None:
    metadata = {"camera": "line-3", "n": 7}
    encoded = base64.urlsafe_b64encode(json.dumps(metadata).encode()).decode()
    chosen = "iq_" + "Z" * 27
    body = edge.submit(DET_BINARY, jpeg(255), metadata=encoded, inspection_id="insp-1", image_query_id=chosen).json()
    assert body["id"] == chosen
    assert body["metadata"] == metadata
    again = edge.submit(DET_BINARY, jpeg(255), image_query_id=chosen)
    assert again.status_code == 409
    assert again.json()["code"] == "duplicate_image_query"


def test_want_async_offline_answers_from_the_edge_and_queues(edge: Edge) -> None:
    body = edge.submit(DET_BINARY, jpeg(255), want_async="True").json()
    assert body["done_processing"] is False
    assert [i.kind for i in pending(edge)] == [OutboxKind.ESCALATION]


def test_human_review_always_on_a_no_cloud_detector_is_refused(edge: Edge) -> None:
    response = edge.submit(DET_NOCLOUD, jpeg(255), human_review="ALWAYS")
    assert response.status_code == 400
    assert "disable_cloud_escalation" in response.json()["detail"]


def test_no_model_offline_is_503_with_reason(edge: Edge) -> None:
    response = edge.submit(DET_NOMODEL, jpeg(255))
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "cloud_unavailable"
    assert "no model" in body["detail"] and "offline" in body["detail"]


def test_inference_service_down_with_no_cloud_detector_is_503(edge: Edge) -> None:
    edge.inference.down = True
    response = edge.submit(DET_NOCLOUD, jpeg(255))
    assert response.status_code == 503
    assert response.json()["code"] == "model_not_ready"


@pytest.mark.parametrize(
    ("detector_id", "image", "params", "headers", "status", "code"),
    [
        (DET_BINARY, b"", {}, {}, 400, "invalid_image"),
        (DET_BINARY, b"hello, I am text", {}, {}, 400, "invalid_image"),
        (DET_BINARY, b"hello", {}, {"content-type": "text/plain"}, 415, "unsupported_media_type"),
        (DET_BINARY, jpeg(255)[:300], {}, {}, 400, "invalid_image"),
        (DET_BINARY, huge_png_header(), {}, {}, 413, "image_too_large"),
        ("det_" + "U" * 27, jpeg(255), {}, {}, 404, "detector_not_found"),
        ("not-a-detector", jpeg(255), {}, {}, 400, "invalid_input"),
        (DET_DISABLED, jpeg(255), {}, {}, 403, "detector_disabled"),
        (DET_BINARY, jpeg(255), {"confidence_threshold": "1.5"}, {}, 400, "invalid_input"),
        (DET_BINARY, jpeg(255), {"confidence_threshold": "high"}, {}, 400, "invalid_input"),
        (DET_BINARY, jpeg(255), {"patience_time": "-1"}, {}, 400, "invalid_input"),
        (DET_BINARY, jpeg(255), {"human_review": "SOMETIMES"}, {}, 400, "invalid_input"),
        (DET_BINARY, jpeg(255), {"want_async": "maybe"}, {}, 400, "invalid_input"),
        (DET_BINARY, jpeg(255), {"metadata": "!!!"}, {}, 400, "invalid_input"),
        (DET_BINARY, jpeg(255), {"metadata": base64.urlsafe_b64encode(b"[1]").decode()}, {}, 400, "invalid_input"),
        (DET_BINARY, jpeg(255), {"image_query_id": "iq_../x"}, {}, 400, "invalid_input"),
        (DET_BINARY, jpeg(255), {}, {"x-api-token": ""}, 401, "unauthenticated"),
        (DET_BINARY, jpeg(255), {}, {"x-api-token": "wrong"}, 401, "unauthenticated"),
    ],
)
def test_bad_requests_get_clear_json_errors(
    edge: Edge, detector_id: str, image: bytes, params: dict, headers: dict, status: int, code: str
) -> None:
    response = edge.client.post(
        "/device-api/v1/image-queries",
        params={"detector_id": detector_id, **params},
        content=image,
        headers={"x-api-token": TOKEN, "content-type": "image/jpeg", **headers},
    )
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert len(body["detail"]) > 10


def test_unknown_image_query_is_404_for_the_gateway(edge: Edge) -> None:
    response = edge.client.get("/device-api/v1/image-queries/iq_" + "Q" * 27, headers={"x-api-token": TOKEN})
    assert response.status_code == 404
    assert response.json()["code"] == "image_query_not_found"


def test_offline_listing_pages_through_answers(edge: Edge) -> None:
    ids = [edge.submit(DET_BINARY, jpeg(255)).json()["id"] for _ in range(3)]
    page = edge.client.get(
        "/device-api/v1/image-queries", params={"page": 1, "page_size": 2}, headers={"x-api-token": TOKEN}
    ).json()
    assert page["count"] == 3
    assert len(page["results"]) == 2
    assert page["next"] is not None
    assert {r["id"] for r in page["results"]} <= set(ids)


def test_status_and_metrics_count_answers(edge: Edge) -> None:
    edge.submit(DET_BINARY, jpeg(255))
    edge.submit(DET_BINARY, jpeg(128))
    edge.submit(DET_DISABLED, jpeg(255))
    edge.submit("det_" + "X" * 27, jpeg(255))
    status = edge.client.get("/status.json").json()
    by_id = {d["detector_id"]: d for d in status["detectors"]}
    assert by_id[DET_BINARY]["counts"]["edge"] == 1
    assert by_id[DET_BINARY]["counts"]["escalated"] == 1
    assert by_id[DET_BINARY]["primary_model_version"] == 3
    assert by_id[DET_BINARY]["model_state"] == "loaded"
    assert by_id[DET_BINARY]["serving_model_versions"] == {"primary": 3, "oodd": None}
    assert by_id[DET_NOMODEL]["model_state"] == "not_installed"
    assert status["inference"] == {"reachable": True, "cache_size": 5}
    assert by_id[DET_BINARY]["latency_ms"]["p50"] is not None
    assert by_id[DET_DISABLED]["counts"]["refused"] == 1
    assert by_id["unknown"]["counts"]["refused"] == 1
    assert "det_" + "X" * 27 not in by_id
    assert status["outbox_pending"]["escalation"] == 1
    page = edge.client.get("/status")
    assert page.status_code == 200 and DET_BINARY in page.text and "<table>" in page.text
    metrics = edge.client.get("/metrics").text
    assert f'intellioptics_edge_image_queries_total{{detector_id="{DET_BINARY}",outcome="edge"}} 1.0' in metrics
