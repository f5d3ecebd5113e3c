"""Model rollout with real processes: versions registered in the real cloud registry reach
the edge through fetch-model-urls and signed downloads, are swapped in by the inference
service while queries keep being answered, and a registry rollback reaches the edge too."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from intellioptics_common.model_package import InputSpec, PipelineConfig, list_versions, read_latest
from tests.support.cloud_stack import CloudAdmin, CloudProcess, cloud_process
from tests.support.edge_stack import EdgeStack, brightness_model, edge_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (value, value, value)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[CloudProcess]:
    process = cloud_process(tmp_path / "cloud-data", tmp_path / "logs")
    process.start()
    try:
        yield process
    finally:
        process.stop()


def upload(admin: CloudAdmin, detector_id: str, gain: float) -> dict:
    config = PipelineConfig(kind="primary", mode="BINARY", class_names=("NO", "YES"), input=InputSpec(32, 32))
    manifest = {
        "primary_pipeline_config": config.to_dict(),
        "primary_metadata": {"trainer": "test-brightness", "backbone_id": "none", "training_set_size": 0},
        "trainer": "manual",
        "activate": True,
    }
    response = admin.request(
        "POST",
        f"/v1/detectors/{detector_id}/models",
        files={"primary": ("model.buf", brightness_model(("NO", "YES"), gain=gain))},
        data={"manifest": json.dumps(manifest)},
    )
    assert response.status_code == 201, response.text
    return response.json()


def serving(stack: EdgeStack, detector_id: str) -> str | None:
    httpx.get(f"{stack.inference_url}/detectors/{detector_id}/ready", timeout=30)
    for entry in httpx.get(f"{stack.inference_url}/detectors", timeout=10).json()["detectors"]:
        if entry["detector_id"] == detector_id and entry.get("loaded"):
            return entry["loaded"]["primary_model_id"]
    return None


def test_registry_versions_and_a_rollback_reach_the_edge_without_a_failed_request(
    cloud: CloudProcess, tmp_path: Path
) -> None:
    admin = CloudAdmin(cloud.url)
    detector = admin.request("POST", "/v1/detectors", json={"name": "rollout", "query": "Bright?"}).json()
    detector_id = detector["id"]
    config = {
        "global_config": {"refresh_rate": 0.5, "confident_audit_rate": 0},
        "detectors": [{"detector_id": detector_id, "edge_inference_config": "no_cloud", "name": "r", "query": "q"}],
    }
    env = {
        "INTELLIOPTICS_DEVICE_TOKEN": admin.create_token("rollout-edge", "device"),
        "INTELLIOPTICS_MODELS_DIR": str(tmp_path / "models"),
    }
    with edge_stack(tmp_path, config, cloud_url=cloud.url, extra_env=env, models_dir=tmp_path / "models") as stack:
        first = upload(admin, detector_id, gain=2.0)
        admin.wait(lambda: serving(stack, detector_id) == f"{first['id']}-primary", 30, "first version served")

        # Queries all the while the next versions swap in: none may fail.
        failures: list[str] = []
        answered = 0
        stop = threading.Event()

        def ask() -> None:
            nonlocal answered
            with httpx.Client(base_url=stack.gateway_url, headers={"x-api-token": stack.token}) as client:
                while not stop.is_set():
                    response = client.post(
                        "/device-api/v1/image-queries",
                        params={"detector_id": detector_id},
                        content=jpeg(230),
                        headers={"content-type": "image/jpeg"},
                    )
                    if response.status_code != 201 or not response.json()["result"]["from_edge"]:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                    answered += 1

        asker = threading.Thread(target=ask)
        asker.start()
        try:
            second = upload(admin, detector_id, gain=6.0)
            admin.wait(lambda: serving(stack, detector_id) == f"{second['id']}-primary", 30, "second version served")
            rollback = admin.request("POST", f"/v1/detectors/{detector_id}/models/rollback")
            assert rollback.status_code == 200 and rollback.json()["id"] == first["id"]
            admin.wait(lambda: serving(stack, detector_id) == f"{first['id']}-primary", 30, "rolled back")
        finally:
            stop.set()
            asker.join(timeout=30)
        assert failures == [] and answered > 0

        # The rollback is a new local version holding the first version's bytes; two are kept.
        models = tmp_path / "models"
        assert list_versions(models, detector_id, "primary") == [2, 3]
        latest = read_latest(models, detector_id, "primary")
        assert latest is not None and latest.model_bytes() == brightness_model(("NO", "YES"), gain=2.0)
        status = httpx.get(f"{stack.edge_api_url}/status.json", timeout=10).json()
        assert status["cloud_sync"]["model_updates"]["updates"] == 3
        assert status["cloud_sync"]["model_updates"]["failures"] == 0
