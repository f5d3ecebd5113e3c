"""Model registry, cloud answers from the active model, and the edge's signed downloads."""

from __future__ import annotations

import hashlib
import json
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from intellioptics_common.model_package import PipelineConfig


def test_upload_activate_answer_and_registry(admin, jpeg, helpers) -> None:
    detector = admin.create_detector(confidence_threshold=0.8)
    response = helpers.upload_model(admin, detector["id"], activate=True, metrics={"balanced_accuracy": 0.8})
    assert response.status_code == 201, response.text
    v1 = response.json()
    assert v1["version"] == 1 and v1["status"] == "active" and v1["decision"]["action"] == "activate"
    assert v1["primary_sha256"] == hashlib.sha256(helpers.brightness_model(2)).hexdigest()
    bright = admin.submit(detector["id"], jpeg(250)).json()
    assert bright["result"]["label"] == "YES" and bright["result"]["source"] == "ALGORITHM"
    assert bright["result"]["confidence"] >= 0.8 and bright["done_processing"] is True
    dark = admin.submit(detector["id"], jpeg(5)).json()
    assert dark["result"]["label"] == "NO"
    unsure = admin.submit(detector["id"], jpeg(128)).json()  # mid-grey: ~0.5, goes to review
    assert unsure["result"]["confidence"] < 0.8 and unsure["done_processing"] is False
    assert admin.get("/v1/review/queue").json()["items"][0]["reason"] == "low_confidence"
    # A lower per-query threshold makes the same answer confident.
    assert admin.submit(detector["id"], jpeg(128), confidence_threshold=0.4).json()["done_processing"] is True

    v2 = helpers.upload_model(admin, detector["id"], activate=False, metrics={"balanced_accuracy": 0.9}).json()
    assert v2["version"] == 2 and v2["status"] == "candidate"
    compare = admin.get(f"/v1/detectors/{detector['id']}/models/compare", params={"a": 1, "b": 2}).json()
    assert abs(compare["metric_deltas"]["balanced_accuracy"] - 0.1) < 1e-9
    activated = admin.post(f"/v1/detectors/{detector['id']}/models/2/activate").json()
    assert activated["status"] == "active"
    assert admin.get(f"/v1/detectors/{detector['id']}/models/1").json()["status"] == "retired"
    assert admin.get(f"/v1/detectors/{detector['id']}/stats").json()["active_model_version"] == 2
    rolled = admin.post(f"/v1/detectors/{detector['id']}/models/rollback").json()
    assert rolled["version"] == 1 and rolled["status"] == "active"
    assert [m["status"] for m in admin.get(f"/v1/detectors/{detector['id']}/models").json()] == ["active", "retired"]
    assert admin.delete(f"/v1/detectors/{detector['id']}/models/1").status_code == 409
    download = admin.get(f"/v1/detectors/{detector['id']}/models/2/download", params={"kind": "primary"})
    assert hashlib.sha256(download.content).hexdigest() == v2["primary_sha256"]
    assert admin.get(f"/v1/detectors/{detector['id']}/models/2/download", params={"kind": "oodd"}).status_code == 404
    assert admin.delete(f"/v1/detectors/{detector['id']}/models/2").status_code == 204
    assert admin.get(f"/v1/detectors/{detector['id']}/models/2").status_code == 404


def test_oodd_pulls_foreign_images_to_review(admin, jpeg, helpers) -> None:
    detector = admin.create_detector(confidence_threshold=0.8)
    helpers.upload_model(admin, detector["id"], oodd_score=0.1)  # everything looks foreign
    iq = admin.submit(detector["id"], jpeg(250)).json()
    # adjusted = 0.9 * 0.5 + 0.1 * ~1.0 -> well under 0.8
    assert iq["result"]["confidence"] < 0.6 and iq["done_processing"] is False
    assert admin.get("/v1/review/queue").json()["items"][0]["reason"] == "out_of_domain"


def test_multiclass_model(admin, jpeg, helpers) -> None:
    detector = admin.create_detector(
        mode="MULTI_CLASS", mode_configuration={"class_names": ["dark", "mid", "bright"]}, confidence_threshold=0.5
    )
    response = helpers.upload_model(admin, detector["id"], ["dark", "mid", "bright"], mode="MULTI_CLASS")
    assert response.status_code == 201, response.text
    iq = admin.submit(detector["id"], jpeg(250)).json()
    assert iq["result"] == {**iq["result"], "label": "bright", "result_type": "multi_classification"}


def test_bad_uploads_are_4xx_and_leave_no_blobs(admin, helpers, settings) -> None:
    detector = admin.create_detector()
    path = f"/v1/detectors/{detector['id']}/models"
    good = {
        "primary_pipeline_config": helpers.pipeline_config("primary", ["NO", "YES"]),
        "training_set_size": 3,
    }
    model = ("model.buf", helpers.brightness_model(2), "application/octet-stream")
    cases = [
        ({"primary": ("model.buf", b"not onnx", "application/octet-stream")}, json.dumps(good), 422),
        ({"primary": model}, "{not json", 400),
        ({"primary": model}, json.dumps({**good, "surprise": 1}), 400),
        ({"primary": model}, json.dumps({**good, "primary_pipeline_config": {"kind": "oodd"}}), 400),
        (
            {"primary": model},
            json.dumps({**good, "primary_pipeline_config": helpers.pipeline_config("primary", ["A", "B"])}),
            400,
        ),
        ({"primary": model}, json.dumps({**good, "oodd_pipeline_config": helpers.pipeline_config("oodd", ["x"])}), 400),
        (  # a model trained for another mode (here a counting model) for this BINARY detector
            {"primary": model},
            json.dumps({**good, "primary_pipeline_config": helpers.pipeline_config("primary", ["NO", "YES"], "COUNT")}),
            400,
        ),
    ]
    for files, manifest, status in cases:
        response = admin.post(path, files=files, data={"manifest": manifest})
        assert response.status_code == status, (manifest, response.text)
        assert set(response.json()) >= {"detail", "code"}
    assert admin.post(path, data={"manifest": json.dumps(good)}).status_code == 422  # no primary file
    assert helpers.count_rows(settings, "model_versions") == 0
    assert helpers.blob_files(settings) == []
    reviewer = admin.new_token("reviewer")
    assert reviewer.post(path, files={"primary": model}, data={"manifest": json.dumps(good)}).status_code == 403
    worker = admin.new_token("worker")  # workers register the versions they train
    assert worker.post(path, files={"primary": model}, data={"manifest": json.dumps(good)}).status_code == 201


def test_fetch_model_urls_and_signed_downloads(admin, helpers, client) -> None:
    detector = admin.create_detector()
    device = admin.new_token("device")
    empty = device.get(f"/edge-api/v1/fetch-model-urls/{detector['id']}/").json()
    # No model yet: fields without a value are left out (SDK 1.3.1 refuses null for them).
    assert empty == {"minimal_compatible": False}
    version = helpers.upload_model(admin, detector["id"], oodd_score=0.9).json()
    info = device.get(f"/edge-api/v1/fetch-model-urls/{detector['id']}").json()
    with_slash = device.get(f"/edge-api/v1/fetch-model-urls/{detector['id']}/").json()
    assert with_slash["model_binary_id"] == info["model_binary_id"]
    assert info["model_binary_id"] == f"{version['id']}-primary"
    assert info["model_binary_sha256"] == version["primary_sha256"]
    assert info["oodd_model_binary_sha256"] == version["oodd_sha256"]
    # The pipeline configs are the YAML dict the edge writes out as pipeline_config.yaml.
    assert PipelineConfig.from_yaml(yaml.safe_dump(info["pipeline_config"])).kind == "primary"
    assert PipelineConfig.from_dict(info["oodd_pipeline_config"]).kind == "oodd"
    assert info["predictor_metadata"] == {"trainer": "test"}
    for key, digest in (
        ("model_binary_url", version["primary_sha256"]),
        ("oodd_model_binary_url", version["oodd_sha256"]),
    ):
        url = urlparse(info[key])
        anonymous = client.get(f"{url.path}?{url.query}")  # no token: the signature authorises
        assert anonymous.status_code == 200 and hashlib.sha256(anonymous.content).hexdigest() == digest
    url = urlparse(info["model_binary_url"])
    query = parse_qs(url.query)
    tampered = client.get(url.path, params={"expires": query["expires"][0], "signature": "0" * 64})
    assert tampered.status_code == 403
    longer = client.get(url.path, params={"expires": int(query["expires"][0]) + 10, "signature": query["signature"][0]})
    assert longer.status_code == 403
    client.app.state.resources.settings.__dict__["model_url_ttl_s"] = -5
    expired = urlparse(device.get(f"/edge-api/v1/fetch-model-urls/{detector['id']}").json()["model_binary_url"])
    response = client.get(f"{expired.path}?{expired.query}")
    assert response.status_code == 403 and "expired" in response.json()["detail"]
    assert admin.new_token("reviewer").get(f"/edge-api/v1/fetch-model-urls/{detector['id']}").status_code == 403
    assert device.get(f"/v1/edge/fetch-model-urls/{detector['id']}/").status_code == 200  # the SDK's path


def test_escalations_meet_the_cloud_model(admin, jpeg, helpers) -> None:
    """A confident cloud model answers a low-confidence escalation; an audit is reviewed anyway."""
    import base64

    def meta(reason: str) -> str:
        data = {"edge_result": {"label": "NO", "confidence": 0.6}, "escalation_reason": reason}
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()

    detector = admin.create_detector(confidence_threshold=0.8)
    helpers.upload_model(admin, detector["id"])
    device = admin.new_token("device")
    answered = device.submit(detector["id"], jpeg(250), metadata=meta("low_confidence")).json()
    assert answered["result"]["label"] == "YES" and answered["result"]["source"] == "ALGORITHM"
    assert answered["done_processing"] is True
    audited = device.submit(detector["id"], jpeg(250), metadata=meta("audit")).json()
    assert audited["done_processing"] is False
    items = admin.get("/v1/review/queue").json()["items"]
    assert [(i["image_query_id"], i["reason"]) for i in items] == [(audited["id"], "audit")]
    assert items[0]["edge_answer"]["label"] == "NO"


def test_a_cloud_models_doubtful_answer_reaches_the_reviewer_with_its_version_and_scores(admin, jpeg, helpers) -> None:
    detector = admin.create_detector(confidence_threshold=1.0)  # nothing is sure enough: all reviewed
    helpers.upload_model(admin, detector["id"], oodd_score=0.9)
    iq = admin.submit(detector["id"], jpeg(250)).json()
    assert iq["result"]["source"] == "ALGORITHM" and iq["done_processing"] is False
    (item,) = admin.get("/v1/review/queue").json()["items"]
    answer = item["edge_answer"]
    assert answer["source"] == "ALGORITHM" and answer["from_edge"] is False and answer["model_version"] == 1
    assert set(answer["probabilities"]) == {"NO", "YES"}
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert answer["label"] == max(answer["probabilities"], key=answer["probabilities"].get)
    assert answer["in_domain_score"] == pytest.approx(0.9, abs=1e-5)


def test_a_broken_active_model_sends_queries_to_people(admin, jpeg, helpers) -> None:
    detector = admin.create_detector()
    config = helpers.pipeline_config("primary", ["NO", "YES"])
    config["output"] = "no_such_output"  # loads fine, fails at run time
    manifest = {"primary_pipeline_config": config, "activate": True}
    files = {"primary": ("model.buf", helpers.brightness_model(2), "application/octet-stream")}
    path = f"/v1/detectors/{detector['id']}/models"
    assert admin.post(path, files=files, data={"manifest": json.dumps(manifest)}).status_code == 201
    iq = admin.submit(detector["id"], jpeg(250))
    assert iq.status_code == 201 and iq.json()["result"]["source"] == "STILL_PROCESSING"
    assert admin.get("/v1/review/queue").json()["items"][0]["reason"] == "model_error"
