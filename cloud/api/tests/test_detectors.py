"""Detectors: create/get/list/patch/delete, groups, both route prefixes, bad input."""

from __future__ import annotations

import base64
import json

import pytest


def test_create_get_list_patch_delete(admin) -> None:
    created = admin.create_detector("weld", query="Is there a crack?", confidence_threshold=0.8, group_name="line-1")
    assert created["id"].startswith("det_") and created["mode"] == "BINARY" and created["status"] == "ON"
    assert created["group_name"] == "line-1" and created["confidence_threshold"] == 0.8
    assert admin.get(f"/device-api/v1/detectors/{created['id']}").json() == created
    for i in range(3):
        admin.create_detector(f"other-{i}")
    page = admin.get("/v1/detectors", params={"page": 2, "page_size": 3}).json()
    assert page["count"] == 4 and len(page["results"]) == 1 and page["previous"] and page["next"] is None
    first = admin.get("/v1/detectors", params={"page": 1, "page_size": 3}).json()
    assert first["next"] and "page=2" in first["next"]
    by_name = admin.get("/v1/detectors", params={"name": "weld"}).json()
    assert by_name["count"] == 1 and by_name["results"][0]["id"] == created["id"]
    patched = admin.patch(
        f"/v1/detectors/{created['id']}",
        json={"confidence_threshold": 0.6, "status": "OFF", "escalation_type": "NO_HUMAN_LABELING"},
    ).json()
    assert (patched["confidence_threshold"], patched["status"], patched["escalation_type"]) == (
        0.6,
        "OFF",
        "NO_HUMAN_LABELING",
    )
    assert admin.delete(f"/v1/detectors/{created['id']}").status_code == 204
    assert admin.get(f"/v1/detectors/{created['id']}").status_code == 404
    assert admin.delete(f"/v1/detectors/{created['id']}").status_code == 404


def test_multiclass_and_metadata(admin) -> None:
    metadata = base64.urlsafe_b64encode(json.dumps({"site": "A"}).encode()).decode()
    created = admin.create_detector(
        "colors", mode="MULTI_CLASS", mode_configuration={"class_names": ["red", "green"]}, metadata=metadata
    )
    assert created["mode_configuration"] == {"class_names": ["red", "green"], "num_classes": 2}
    assert created["metadata"] == {"site": "A"}


def test_groups(admin) -> None:
    assert admin.post("/v1/detector-groups", json={"name": "g1"}).status_code == 201
    assert admin.post("/v1/detector-groups", json={"name": "g1"}).status_code == 409
    admin.create_detector(group_name="g2")
    names = [g["name"] for g in admin.get("/device-api/v1/detector-groups").json()]
    assert names == ["g1", "g2"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"name": "x", "query": "q?", "confidence_threshold": 1.5}, 422, "confidence_threshold"),
        ({"name": "x", "query": "q?", "confidence_threshold": -0.1}, 422, "confidence_threshold"),
        ({"name": "x" * 201, "query": "q?"}, 422, "name"),
        ({"name": "x", "query": "q" * 301}, 422, "query"),
        ({"name": "x", "query": "q?", "mode": "SIDEWAYS"}, 422, "mode"),
        ({"name": "x", "query": "q?", "color": "red"}, 422, "color"),
        ({"name": "x", "query": "q?", "mode": "TEXT"}, 400, "not supported"),
        ({"name": "x", "query": "q?", "mode": "COUNT", "mode_configuration": {"max_count": 3}}, 400, "class_name"),
        (
            {"name": "x", "query": "q?", "mode": "COUNT", "mode_configuration": {"class_name": "a", "max_count": 51}},
            400,
            "max_count",
        ),
        (
            {"name": "x", "query": "q?", "mode": "BOUNDING_BOX", "mode_configuration": {"class_name": "a", "max": 3}},
            400,
            "max",
        ),
        (
            {"name": "x", "query": "q?", "mode": "MULTI_CLASS", "mode_configuration": {"class_names": ["a"]}},
            400,
            "class_names",
        ),
        (
            {"name": "x", "query": "q?", "mode": "MULTI_CLASS", "mode_configuration": {"class_names": ["a", "a"]}},
            400,
            "unique",
        ),
        ({"name": "x", "query": "q?", "mode_configuration": {"class_names": ["a", "b"]}}, 400, "BINARY"),
        ({"name": "x", "query": "q?", "metadata": "%%%notbase64"}, 400, "metadata"),
        ({"query": "q?"}, 422, "name"),
    ],
)
def test_bad_detector_bodies_are_clear_4xx_and_write_nothing(admin, settings, helpers, body, status, fragment) -> None:
    response = admin.post("/v1/detectors", json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert set(error) >= {"detail", "code"} and fragment in error["detail"]
    assert helpers.count_rows(settings, "detectors") == 0


def test_malformed_json_duplicates_and_bad_patches(admin) -> None:
    bad = admin.post("/v1/detectors", content=b'{"name": ', headers={"content-type": "application/json"})
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
    detector = admin.create_detector("dup")
    duplicate = admin.post("/v1/detectors", json={"name": "dup", "query": "q?"})
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "duplicate_name"
    path = f"/v1/detectors/{detector['id']}"
    assert admin.patch(path, json={"confidence_threshold": 2}).status_code == 422
    assert admin.patch(path, json={"status": "MAYBE"}).status_code == 422
    assert admin.patch(path, json={"unknown": 1}).status_code == 422
    assert admin.patch(path, json={"confidence_threshold": None}).status_code == 400
    assert admin.get(path).json()["confidence_threshold"] == 0.9
    assert admin.get("/v1/detectors", params={"page": 0}).status_code == 422
    assert admin.get("/v1/detectors", params={"page_size": 5000}).status_code == 422


def test_settings_and_stats(admin, jpeg) -> None:
    detector = admin.create_detector()
    path = f"/v1/detectors/{detector['id']}"
    assert admin.get(f"{path}/settings").json() == {"retrain_every_n_labels": 10, "promotion_policy": "auto"}
    assert admin.post(f"{path}/settings", json={"retrain_every_n_labels": 5}).json()["retrain_every_n_labels"] == 5
    updated = admin.post(f"{path}/settings", json={"promotion_policy": "manual"}).json()
    assert updated == {"retrain_every_n_labels": 5, "promotion_policy": "manual"}
    assert admin.post(f"{path}/settings", json={"promotion_policy": "sometimes"}).status_code == 422
    for label in ("YES", "YES", "NO"):
        iq = admin.submit(detector["id"], jpeg()).json()
        assert admin.post("/v1/labels", json={"label": label, "image_query_id": iq["id"]}).status_code == 201
    admin.submit(detector["id"], jpeg())  # unlabeled: pending review
    stats = admin.get(f"{path}/stats").json()
    assert stats["labels_per_class"] == {"YES": 2, "NO": 1} and stats["total_labels"] == 3
    assert stats["by_source"] == {"USER": 3} and stats["pending_reviews"] == 1
    assert len(stats["over_time"]) == 1 and stats["over_time"][0]["counts"] == {"YES": 2, "NO": 1}
    assert stats["active_model_version"] is None
