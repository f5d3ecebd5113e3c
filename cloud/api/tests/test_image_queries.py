"""Image queries and labels: submit, escalations, idempotency, bad input, nothing half-written."""

from __future__ import annotations

import base64
import json

import pytest

from intellioptics_common.ratelimit import FailedAuthLimiter


def _metadata(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_without_a_model_the_query_waits_for_review(admin, jpeg, settings, helpers) -> None:
    detector = admin.create_detector()
    response = admin.submit(detector["id"], jpeg(), want_async="True", patience_time=20, inspection_id="i-1")
    assert response.status_code == 201
    iq = response.json()
    assert iq["result"]["source"] == "STILL_PROCESSING" and iq["result"]["confidence"] is None
    assert iq["result_type"] == "binary_classification" and iq["done_processing"] is False
    assert iq["confidence_threshold"] == 0.9 and iq["patience_time"] == 20
    queue = admin.get("/v1/review/queue").json()
    assert queue["count"] == 1 and queue["items"][0]["reason"] == "no_model"
    assert admin.get(f"/device-api/v1/image-queries/{iq['id']}").json()["id"] == iq["id"]
    image = admin.get(f"/v1/image-queries/{iq['id']}/image")
    assert image.status_code == 200 and image.content == jpeg() and image.headers["content-type"] == "image/jpeg"
    assert len(helpers.blob_files(settings)) == 1


def test_label_makes_the_human_answer(admin, jpeg) -> None:
    detector = admin.create_detector()
    iq = admin.submit(detector["id"], jpeg()).json()
    rois = [{"label": "crack", "score": 0.8, "geometry": {"left": 0.1, "top": 0.2, "right": 0.3, "bottom": 0.4}}]
    response = admin.post("/v1/labels", json={"label": "pass", "image_query_id": iq["id"], "rois": rois})
    assert response.status_code == 201 and response.json()["class_name"] == "YES"
    answered = admin.get(f"/v1/image-queries/{iq['id']}").json()
    assert answered["result"] == {
        "confidence": 1.0,
        "source": "USER",
        "from_edge": False,
        "result_type": "binary_classification",
        "label": "YES",
    }
    assert answered["done_processing"] is True
    assert answered["rois"][0]["geometry"]["x"] == pytest.approx(0.2)
    assert admin.get("/v1/review/queue").json()["count"] == 0
    dataset = admin.get(f"/v1/detectors/{detector['id']}/dataset").json()
    assert [(d["image_query_id"], d["label"]) for d in dataset] == [(iq["id"], "YES")]


def test_bad_labels_are_clear_4xx(admin, other_account, jpeg, settings, helpers) -> None:
    detector = admin.create_detector()
    multi = admin.create_detector(mode="MULTI_CLASS", mode_configuration={"class_names": ["a", "b"]})
    iq = admin.submit(detector["id"], jpeg()).json()
    iq_multi = admin.submit(multi["id"], jpeg()).json()
    assert admin.post("/v1/labels", json={"label": "MAYBE", "image_query_id": iq["id"]}).status_code == 400
    assert admin.post("/v1/labels", json={"label": "c", "image_query_id": iq_multi["id"]}).status_code == 400
    assert admin.post("/v1/labels", json={"label": "YES", "image_query_id": "iq_nope1234567890"}).status_code == 404
    assert admin.post("/v1/labels", json={"label": "YES"}).status_code == 422
    assert admin.post("/v1/labels", json={"label": "YES", "image_query_id": iq["id"], "x": 1}).status_code == 422
    bad_roi = {"label": "c", "geometry": {"left": 0.5, "top": 0.5, "right": 0.1, "bottom": 0.9}}
    assert (
        admin.post("/v1/labels", json={"label": "YES", "image_query_id": iq["id"], "rois": [bad_roi]}).status_code
        == 400
    )
    foreign = other_account.post("/v1/labels", json={"label": "YES", "image_query_id": iq["id"]})
    assert foreign.status_code == 404
    assert helpers.count_rows(settings, "labels") == 0
    assert admin.get(f"/v1/image-queries/{iq['id']}").json()["result"]["source"] == "STILL_PROCESSING"


@pytest.mark.parametrize(
    ("params", "body", "content_type", "status"),
    [
        ({}, b"this is not an image", "image/jpeg", 400),
        ({}, b"", "image/jpeg", 400),
        ({}, b"\xff\xd8\xff\xe0 truncated", "image/jpeg", 400),
        ({}, None, "application/json", 415),
        ({"confidence_threshold": 1.5}, None, "image/jpeg", 422),
        ({"patience_time": -1}, None, "image/jpeg", 422),
        ({"human_review": "SOMETIMES"}, None, "image/jpeg", 422),
        ({"metadata": "!!!"}, None, "image/jpeg", 400),
        ({"metadata": _metadata({"x": "y" * 2000})}, None, "image/jpeg", 422),
        ({"metadata": _metadata([1, 2])}, None, "image/jpeg", 400),
        ({"image_query_id": "not-an-id"}, None, "image/jpeg", 400),
        ({"detector_id": "det_doesnotexist000000"}, None, "image/jpeg", 404),
    ],
)
def test_bad_submissions_are_clear_4xx_and_leave_nothing(
    admin, jpeg, settings, helpers, params, body, content_type, status
) -> None:
    detector = admin.create_detector()
    query = {"detector_id": detector["id"], **params}
    response = admin.post(
        "/v1/image-queries",
        params=query,
        content=jpeg() if body is None else body,
        headers={"content-type": content_type},
    )
    assert response.status_code == status, response.text
    assert set(response.json()) >= {"detail", "code"}
    assert helpers.count_rows(settings, "image_queries") == 0
    assert helpers.count_rows(settings, "review_items") == 0
    assert helpers.blob_files(settings) == []


def test_oversized_images_are_413(admin, jpeg, settings, helpers, client) -> None:
    detector = admin.create_detector()
    client.app.state.resources.settings.__dict__["max_image_bytes"] = 2048
    response = admin.submit(detector["id"], jpeg(noise=60, size=(200, 200)))
    assert response.status_code == 413 and response.json()["code"] == "image_too_large"
    assert helpers.blob_files(settings) == []


def test_a_refused_caller_is_answered_before_the_body_is_read(admin, client, settings, helpers) -> None:
    detector = admin.create_detector()["id"]
    pulled: list[int] = []

    async def body():  # type: ignore[no-untyped-def]
        for _ in range(16):  # 16 MiB in all, the default limit, sent only as the server reads
            pulled.append(1)
            yield bytes(1024 * 1024)

    stranger = admin.as_token("io_notarealtokenatall_0123456789")
    response = stranger.submit(detector, body())
    assert response.status_code == 401 and response.json()["code"] == "unauthenticated"
    assert pulled == []
    declared = stranger.post(
        "/v1/image-queries", params={"detector_id": detector}, content=b"x", headers={"content-length": "99999999"}
    )
    assert declared.status_code == 401  # not 413: who is asking comes before what is sent
    assert admin.as_token("").submit(detector, body()).status_code == 401 and pulled == []

    client.app.state.auth_limiter = FailedAuthLimiter(max_failures=1, window_s=60)
    assert stranger.submit(detector, body()).status_code == 401
    blocked = stranger.submit(detector, body())
    assert blocked.status_code == 429 and blocked.json()["code"] == "too_many_failed_attempts"
    assert pulled == []
    assert helpers.count_rows(settings, "image_queries") == 0


def test_a_streamed_image_from_a_valid_caller_is_read(admin, jpeg) -> None:
    detector = admin.create_detector()["id"]
    image = jpeg()

    async def body():  # type: ignore[no-untyped-def]
        for start in range(0, len(image), 256):
            yield image[start : start + 256]

    response = admin.submit(detector, body())
    assert response.status_code == 201, response.text


def test_a_failed_commit_leaves_no_rows_or_blobs(admin, jpeg, settings, helpers, client) -> None:
    """Break the database under a submit: the request fails and the stored image is removed."""
    detector = admin.create_detector()
    from sqlalchemy import event

    engine = client.app.state.resources.engine

    def refuse(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("INSERT INTO REVIEW_ITEMS"):
            raise RuntimeError("simulated database failure")

    event.listen(engine, "before_cursor_execute", refuse)
    try:
        response = admin.submit(detector["id"], jpeg())
    finally:
        event.remove(engine, "before_cursor_execute", refuse)
    assert response.status_code == 500 and response.json()["code"] == "internal_error"
    assert helpers.count_rows(settings, "image_queries") == 0
    assert helpers.blob_files(settings) == []


def test_off_detector_refuses(admin, jpeg) -> None:
    detector = admin.create_detector()
    admin.patch(f"/v1/detectors/{detector['id']}", json={"status": "OFF"})
    assert admin.submit(detector["id"], jpeg()).status_code == 409


def test_edge_escalation_is_idempotent_and_carries_the_edge_answer(admin, jpeg, settings, helpers) -> None:
    detector = admin.create_detector()
    device = admin.new_token("device")
    meta = _metadata(
        {
            "edge_result": {
                "label": "NO",
                "confidence": 0.55,
                "primary_model_version": 3,
                "oodd_in_domain_score": 0.9,
                "probabilities": {"NO": 0.6, "YES": 0.4},
            },
            "escalation_reason": "low_confidence",
            "camera": "c1",
        }
    )
    params = {"image_query_id": "iq_2abcdefghijklmnopqrstuvwxyz", "metadata": meta}
    first = device.submit(detector["id"], jpeg(), **params)
    assert first.status_code == 201
    retry = device.submit(detector["id"], jpeg(), **params)
    assert retry.status_code == 200 and retry.json() == first.json()
    iq = first.json()
    assert iq["id"] == params["image_query_id"]
    assert iq["metadata"]["camera"] == "c1"
    assert iq["result"]["source"] == "EDGE" and iq["result"]["from_edge"] is True and iq["result"]["label"] == "NO"
    assert helpers.count_rows(settings, "image_queries") == 1 and len(helpers.blob_files(settings)) == 1
    item = admin.get("/v1/review/queue").json()["items"][0]
    assert item["reason"] == "low_confidence"
    # The reviewer's panel gets the edge model's version, scores per class and in-domain score.
    assert item["edge_answer"] == {
        "label": "NO",
        "confidence": 0.55,
        "from_edge": True,
        "source": "EDGE",
        "model_version": 3,
        "probabilities": {"NO": 0.6, "YES": 0.4},
        "in_domain_score": 0.9,
    }
    bad = device.submit(detector["id"], jpeg(), metadata=_metadata({"escalation_reason": "bored"}))
    assert bad.status_code == 400 and "escalation_reason" in bad.json()["detail"]


def test_list_filters_and_pages(admin, jpeg) -> None:
    first = admin.create_detector()
    second = admin.create_detector()
    ids = [admin.submit(first["id"], jpeg()).json()["id"] for _ in range(3)]
    admin.submit(second["id"], jpeg())
    everything = admin.get("/v1/image-queries", params={"page_size": 10}).json()
    assert everything["count"] == 4
    mine = admin.get("/v1/image-queries", params={"detector_id": first["id"], "page_size": 2}).json()
    assert mine["count"] == 3 and len(mine["results"]) == 2 and mine["next"]
    rest = admin.get("/v1/image-queries", params={"detector_id": first["id"], "page_size": 2, "page": 2}).json()
    assert {r["id"] for r in mine["results"] + rest["results"]} == set(ids)


def test_human_review_never_and_no_human_labeling_skip_the_queue(admin, jpeg) -> None:
    detector = admin.create_detector()
    admin.submit(detector["id"], jpeg(), human_review="NEVER")
    other = admin.create_detector()
    admin.patch(f"/v1/detectors/{other['id']}", json={"escalation_type": "NO_HUMAN_LABELING"})
    admin.submit(other["id"], jpeg())
    assert admin.get("/v1/review/queue").json()["count"] == 0
