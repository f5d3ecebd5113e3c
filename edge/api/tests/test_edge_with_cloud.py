"""The edge in front of the real IntelliOptics cloud API: tokens checked by the cloud,
detector metadata from the cloud, nginx falling back to the cloud for what the edge
does not serve, and queries the edge cannot answer handed to the cloud."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import pytest
from groundlight import Groundlight
from PIL import Image

from tests.support.edge_stack import EdgeStack, edge_stack, install_brightness_model
from tests.support.procs import free_port, python_module, running, wait_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLOUD_TOKEN = "cloudbootstraptoken0_abcdefghijklmnop"


def jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (value, value, value)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeStack]:
    base = tmp_path_factory.mktemp("edge-cloud")
    port = free_port()
    cloud = python_module(
        "cloud",
        "intellioptics_cloud",
        base / "logs",
        {
            "INTELLIOPTICS_ENVIRONMENT": "test",
            "INTELLIOPTICS_LOG_LEVEL": "WARNING",
            "INTELLIOPTICS_DATA_DIR": str(base / "cloud-data"),
            "INTELLIOPTICS_BOOTSTRAP_TOKEN": CLOUD_TOKEN,
            "INTELLIOPTICS_CLOUD_HOST": "127.0.0.1",
            "INTELLIOPTICS_CLOUD_PORT": str(port),
        },
    )
    with running(cloud):
        wait_http(f"http://127.0.0.1:{port}/health/live", timeout=60, process=cloud)
        # The edge belongs to the account of its device token: the bootstrap admin's.
        created = httpx.post(
            f"http://127.0.0.1:{port}/v1/tokens",
            json={"name": "edge", "role": "device"},
            headers={"x-api-token": CLOUD_TOKEN},
            timeout=30,
        )
        assert created.status_code == 201, created.text
        env = {"INTELLIOPTICS_DEVICE_TOKEN": created.json()["token"]}
        cloud_url = f"http://127.0.0.1:{port}"
        with edge_stack(base, {"detectors": []}, cloud_url=cloud_url, extra_env=env) as running_stack:
            yield running_stack


@pytest.fixture(scope="module")
def gl(stack: EdgeStack) -> Groundlight:
    # The edge checks the token with the cloud's /v1/me; the snippet call falls through to the cloud.
    return Groundlight(endpoint=stack.gateway_url, api_token=CLOUD_TOKEN)


def test_cloud_detector_with_an_edge_model_is_answered_on_the_edge(gl: Groundlight, stack: EdgeStack) -> None:
    detector = gl.create_detector(name="edge-bright", query="Is it bright?", confidence_threshold=0.8)
    install_brightness_model(stack.models_dir, detector.id)
    wait_http(f"{stack.inference_url}/detectors/{detector.id}/ready", timeout=60)
    iq = gl.ask_ml(detector, jpeg(255))
    assert iq.result.from_edge is True
    assert iq.query == "Is it bright?"
    assert iq.confidence_threshold == 0.8  # the cloud's threshold, not a local default
    assert gl.get_image_query(iq.id).id == iq.id


def test_without_an_edge_model_the_cloud_answers(gl: Groundlight) -> None:
    detector = gl.create_detector(name="cloud-only", query="Anything?")
    iq = gl.submit_image_query(detector, jpeg(255), wait=0)
    assert not (iq.result and iq.result.from_edge)
    # The edge never saw this id: nginx forwards the GET to the cloud.
    assert gl.get_image_query(iq.id).id == iq.id


def test_a_token_the_cloud_refuses_is_401(stack: EdgeStack) -> None:
    response = httpx.get(f"{stack.gateway_url}/device-api/v1/me", headers={"x-api-token": "x" * 30})
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"
