"""Model uploads are data, never paths (issue 11, finding 2): external data, memory bombs,
disallowed operators, and the promotion policy for every uploader."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from intellioptics_common.model_check import ModelLimits
from tests.support import hostile_models


def _post(api, detector_id: str, primary: bytes, *, activate: bool = False, oodd: bytes | None = None, helpers=None):  # type: ignore[no-untyped-def]
    config = helpers.pipeline_config("primary", ["NO", "YES"])
    manifest: dict[str, object] = {"primary_pipeline_config": config, "activate": activate, "training_set_size": 4}
    files = {"primary": ("model.buf", primary, "application/octet-stream")}
    if oodd is not None:
        manifest["oodd_pipeline_config"] = helpers.pipeline_config("oodd", ["in_domain"])
        files["oodd"] = ("model.buf", oodd, "application/octet-stream")
    return api.post(f"/v1/detectors/{detector_id}/models", files=files, data={"manifest": json.dumps(manifest)})


def test_external_data_pointing_at_the_makefile_is_refused_and_leaks_nothing(admin, helpers, settings) -> None:
    makefile = Path("Makefile")
    assert makefile.is_file(), "the test runs from the repository root, where ./Makefile is what leaked"
    secret = makefile.read_bytes()[:6]
    detector = admin.create_detector()
    for primary, oodd in (
        (hostile_models.external_data_model("Makefile"), None),
        (hostile_models.external_data_model("./Makefile"), None),
        (hostile_models.external_data_model("../../../../../../etc/hostname"), None),
        (helpers.brightness_model(2), hostile_models.external_data_model("Makefile", length=3)),
    ):
        response = _post(admin, detector["id"], primary, oodd=oodd, helpers=helpers, activate=True)
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["code"] == "unsafe_model" and "external data" in body["detail"]
        assert secret not in response.content and secret.decode() not in body["detail"]
    assert helpers.count_rows(settings, "model_versions") == 0
    assert helpers.blob_files(settings) == []
    assert admin.get(f"/v1/detectors/{detector['id']}/stats").json()["active_model_version"] is None


def test_a_model_that_allocates_a_gigabyte_when_run_is_refused_within_the_time_limit(admin, helpers, settings) -> None:
    detector = admin.create_detector()
    start = time.monotonic()
    response = _post(admin, detector["id"], hostile_models.memory_bomb_model(1_200_000_000), helpers=helpers)
    elapsed = time.monotonic() - start
    print(f"\n1.2 GB-at-run-time model refused in {elapsed:.2f} s")
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "unsafe_model" and "memory" in response.json()["detail"]
    assert elapsed < ModelLimits().trial_timeout_s
    assert helpers.count_rows(settings, "model_versions") == 0 and helpers.blob_files(settings) == []
    # The same graph with a small allocation is an ordinary model: the cap is what refuses the bomb.
    small = _post(admin, detector["id"], hostile_models.memory_bomb_model(4_000_000), helpers=helpers)
    assert small.status_code == 201, small.text


@pytest.mark.parametrize(("op_type", "domain"), [("Einsum", ""), ("FusedGemm", "com.microsoft")])
def test_operators_outside_the_allow_list_are_refused(admin, helpers, settings, op_type, domain) -> None:
    detector = admin.create_detector()
    response = _post(admin, detector["id"], hostile_models.disallowed_op_model(op_type, domain), helpers=helpers)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "unsafe_model" and op_type in response.json()["detail"]
    assert helpers.count_rows(settings, "model_versions") == 0


def test_a_worker_cannot_activate_under_the_manual_policy(admin, helpers) -> None:
    detector = admin.create_detector()
    path = f"/v1/detectors/{detector['id']}"
    worker = admin.new_token("worker")
    auto = helpers.upload_model(worker, detector["id"], activate=True).json()
    assert auto["status"] == "active"  # the auto policy lets the worker promote
    assert admin.post(f"{path}/settings", json={"promotion_policy": "manual"}).status_code == 200
    kept = helpers.upload_model(worker, detector["id"], activate=True)
    assert kept.status_code == 201, kept.text
    assert kept.json()["status"] == "candidate"
    assert kept.json()["decision"]["action"] == "keep_candidate"
    assert "promotion policy is manual" in kept.json()["decision"]["reason"]
    assert admin.get(f"{path}/stats").json()["active_model_version"] == auto["version"]
    # An admin's upload is a person's decision: it activates, as POST .../activate would.
    by_admin = helpers.upload_model(admin, detector["id"], activate=True).json()
    assert by_admin["status"] == "active"
    assert admin.post(f"{path}/models/{kept.json()['version']}/activate").json()["status"] == "active"


def _nested(depth: int) -> str:
    return '{"a":' * depth + "{}" + "}" * depth


@pytest.mark.parametrize("depth", [40, 900, 100_000])
def test_a_deeply_nested_manifest_is_a_400(admin, helpers, settings, depth) -> None:
    detector = admin.create_detector()
    good = json.dumps({"primary_pipeline_config": helpers.pipeline_config("primary", ["NO", "YES"])})
    manifest = good[:-1] + ', "metrics": ' + _nested(depth) + "}"
    files = {"primary": ("model.buf", helpers.brightness_model(2), "application/octet-stream")}
    response = admin.post(f"/v1/detectors/{detector['id']}/models", files=files, data={"manifest": manifest})
    assert response.status_code == 400, response.text[:200]
    assert "nested more than 32 levels" in response.json()["detail"]
    assert helpers.count_rows(settings, "model_versions") == 0


def test_every_cloud_json_route_answers_deep_nesting_with_a_4xx(admin) -> None:
    detector = admin.create_detector()
    spec = admin.get("/openapi.json").json()
    checked = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if method not in ("post", "put", "patch") or "application/json" not in content:
                continue
            url = path.replace("{detector_id}", detector["id"])
            for depth in (900, 100_000):
                response = admin.request(
                    method.upper(), url, content=_nested(depth), headers={"content-type": "application/json"}
                )
                assert 400 <= response.status_code < 500, (method, url, depth, response.text[:200])
                checked += 1
    assert checked >= 20
