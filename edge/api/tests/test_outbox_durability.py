"""Durability with real processes: the cloud API goes down, escalations queue on the edge,
the edge API is killed (-9) and restarted, the cloud comes back, and every escalation
arrives in the cloud exactly once; then a person's label reaches the SDK on the edge.
And an edge killed during the outage still serves the cloud tokens and detectors it knew.
And escalations sent with a depth map reach the cloud with it, byte for byte, across the
same outage and kill, by both delivery paths (one multipart request, a batch)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from groundlight import Groundlight
from PIL import Image

from intellioptics_common.depth import encode_depth_png
from tests.support.cloud_stack import CloudAdmin, CloudProcess, cloud_process
from tests.support.edge_stack import EDGE_TOKEN, install_brightness_model
from tests.support.procs import ManagedProcess, free_port, python_module, running, wait_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def grey(value: int, seed: int) -> bytes:
    """Mid-grey is a coin toss for the brightness model: always escalated."""
    image = Image.new("RGB", (96, 64), (value, value, value))
    image.putpixel((seed % 96, seed // 96 % 64), (0, 0, 0))  # distinct bytes per image
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Stack:
    cloud: CloudProcess
    admin: CloudAdmin
    edge_api: ManagedProcess
    edge_url: str
    detector_id: str
    data_dir: Path
    models_dir: Path
    inference_url: str


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    logs = tmp_path / "logs"
    cloud = cloud_process(tmp_path / "cloud-data", logs)
    cloud.start()
    admin = CloudAdmin(cloud.url)
    device_token = admin.create_token("edge-device", "device")
    detector = admin.request("POST", "/v1/detectors", json={"name": "durable", "query": "Bright?"})
    assert detector.status_code == 201, detector.text
    detector_id = detector.json()["id"]
    models_dir = tmp_path / "models"
    install_brightness_model(models_dir, detector_id)
    config_path = tmp_path / "edge-config.yaml"
    entry = {"detector_id": detector_id, "name": "durable", "query": "Bright?", "confidence_threshold": 0.9}
    config_path.write_text(yaml.safe_dump({"global_config": {"refresh_rate": 1}, "detectors": [entry]}))
    inference_port, edge_port = free_port(), free_port()
    env = {"INTELLIOPTICS_ENVIRONMENT": "test", "INTELLIOPTICS_LOG_LEVEL": "INFO"}
    inference = python_module(
        "inference",
        "intellioptics_inference",
        logs,
        {**env, "INTELLIOPTICS_MODELS_DIR": str(models_dir), "INTELLIOPTICS_INFERENCE_PORT": str(inference_port)},
    )
    edge_api = python_module(
        "edge-api",
        "intellioptics_edge",
        logs,
        {
            **env,
            "INTELLIOPTICS_EDGE_API_HOST": "127.0.0.1",
            "INTELLIOPTICS_EDGE_API_PORT": str(edge_port),
            "INTELLIOPTICS_INFERENCE_URL": f"http://127.0.0.1:{inference_port}",
            "INTELLIOPTICS_CLOUD_URL": cloud.url,
            "INTELLIOPTICS_DEVICE_TOKEN": device_token,
            "INTELLIOPTICS_EDGE_DATA_DIR": str(tmp_path / "edge-data"),
            "INTELLIOPTICS_EDGE_CONFIG": str(config_path),
            "INTELLIOPTICS_EDGE_TOKENS": EDGE_TOKEN,
            "INTELLIOPTICS_MODELS_DIR": str(models_dir),
            "INTELLIOPTICS_OUTBOX_POLL_INTERVAL_S": "0.2",
            "INTELLIOPTICS_OUTBOX_BACKOFF_BASE_S": "0.2",
            "INTELLIOPTICS_OUTBOX_BACKOFF_CAP_S": "1",
            "INTELLIOPTICS_HEARTBEAT_INTERVAL_S": "1",
        },
    )
    try:
        with running(inference), running(edge_api):
            wait_http(f"http://127.0.0.1:{inference_port}/detectors/{detector_id}/ready", timeout=60, process=inference)
            wait_http(f"http://127.0.0.1:{edge_port}/health/live", timeout=60, process=edge_api)
            yield Stack(
                cloud,
                admin,
                edge_api,
                f"http://127.0.0.1:{edge_port}",
                detector_id,
                tmp_path / "edge-data",
                models_dir,
                f"http://127.0.0.1:{inference_port}",
            )
    finally:
        cloud.stop()


def edge_status(stack: Stack) -> dict:
    return httpx.get(f"{stack.edge_url}/status.json", timeout=10).json()


def test_escalations_arrive_exactly_once_across_a_cloud_outage_and_an_edge_kill(stack: Stack) -> None:
    gl = Groundlight(endpoint=stack.edge_url, api_token=EDGE_TOKEN)
    first = gl.submit_image_query(stack.detector_id, grey(128, 0), wait=0)
    assert first.result.from_edge is True
    stack.admin.wait(lambda: edge_status(stack)["outbox"]["delivered"] == 1, 30, "first escalation delivered")

    stack.cloud.stop()
    queued = [gl.submit_image_query(stack.detector_id, grey(128, seed), wait=0).id for seed in range(1, 7)]
    assert edge_status(stack)["outbox"]["pending"]["escalation"] == 6
    stack.admin.wait(lambda: edge_status(stack)["outbox"]["retries"] >= 2, 30, "the sender retries")

    stack.edge_api.kill()  # kill -9 with the queue full
    stack.edge_api.start()
    wait_http(f"{stack.edge_url}/health/live", timeout=60, process=stack.edge_api)
    assert edge_status(stack)["outbox"]["pending"]["escalation"] == 6
    queued.append(gl.submit_image_query(stack.detector_id, grey(128, 7), wait=0).id)

    stack.cloud.start()
    stack.admin.wait(
        lambda: edge_status(stack)["outbox"]["pending"]["escalation"] == 0, 60, "outbox drained after the outage"
    )
    in_cloud = [iq["id"] for iq in stack.admin.image_queries(stack.detector_id)]
    assert sorted(in_cloud) == sorted([first.id, *queued])  # each once, none lost, none doubled
    status = edge_status(stack)
    assert status["outbox"]["delivered"] == 8 and status["outbox"]["dead"] == 0
    assert status["cloud_sync"]["edge_id"] is not None
    edges = stack.admin.request("GET", "/v1/edges").json()
    assert [e["id"] for e in edges] == [status["cloud_sync"]["edge_id"]]  # registered once, across the restart

    # A person answers one of them; the SDK, talking to the edge only, gets the label.
    stack.admin.review(stack.detector_id, lambda item: "YES" if item["image_query_id"] == queued[0] else "NO")
    answered = gl.wait_for_confident_result(queued[0], confidence_threshold=0.9, timeout_sec=30)
    assert _value(answered.result.label) == "YES" and _value(answered.result.source) == "USER"
    stack.cloud.stop()  # kept on the edge once final
    assert _value(gl.get_image_query(queued[0]).result.label) == "YES"


def test_an_edge_killed_during_a_cloud_outage_still_serves_known_cloud_tokens_and_detectors(stack: Stack) -> None:
    camera_token = stack.admin.create_token("camera", "device")
    created = stack.admin.request("POST", "/v1/detectors", json={"name": "cloud-only", "query": "Lit?"})
    assert created.status_code == 201, created.text
    detector_id = created.json()["id"]  # in the cloud only, not in edge-config
    install_brightness_model(stack.models_dir, detector_id)
    wait_http(f"{stack.inference_url}/detectors/{detector_id}/ready", timeout=60)
    gl = Groundlight(endpoint=stack.edge_url, api_token=camera_token)
    white = grey(255, 0)
    before = gl.submit_image_query(detector_id, white, wait=0)  # token and detector checked by the cloud
    assert before.result.from_edge is True and before.query == "Lit?"

    stack.cloud.stop()
    stack.edge_api.kill()
    stack.edge_api.start()
    wait_http(f"{stack.edge_url}/health/live", timeout=60, process=stack.edge_api)
    after = gl.submit_image_query(detector_id, grey(255, 1), wait=0)
    assert after.result.from_edge is True and after.query == "Lit?"
    unknown = httpx.get(f"{stack.edge_url}/device-api/v1/me", headers={"x-api-token": "x" * 40}, timeout=10)
    assert unknown.status_code == 503 and unknown.json()["code"] == "cloud_unavailable"


def depth_map(distance_mm: float, seed: int) -> np.ndarray:
    """A plate under the grey image's 96 x 64 frame, with sub-mm texture (what .npy keeps)."""
    rng = np.random.default_rng(seed)
    return (distance_mm + rng.uniform(0, 0.9, (64, 96))).astype(np.float32)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def submit_with_depth(stack: Stack, image: bytes, depth: bytes, **params: str) -> httpx.Response:
    return httpx.post(
        f"{stack.edge_url}/device-api/v1/image-queries",
        params={"detector_id": stack.detector_id, **params},
        files={"image": ("frame.png", image, "image/png"), "depth": ("depth", depth, "application/octet-stream")},
        headers={"x-api-token": EDGE_TOKEN},
        timeout=30,
    )


def escalate_with_depth(stack: Stack, image: bytes, depth: bytes) -> str:
    response = submit_with_depth(stack, image, depth)
    assert response.status_code == 201, response.text
    assert response.json()["result"]["from_edge"] is True and response.json()["done_processing"] is False
    return str(response.json()["id"])


def test_escalations_with_depth_reach_the_cloud_with_it_across_an_outage_and_an_edge_kill(stack: Stack) -> None:
    def cloud_depth(iq_id: str) -> httpx.Response:
        return stack.admin.request("GET", f"/v1/image-queries/{iq_id}/depth", params={"view": "original"})

    sent: dict[str, bytes] = {}
    forwarded = submit_with_depth(stack, grey(128, 9), npy(depth_map(490.0, 9)), human_review="ALWAYS")
    assert forwarded.status_code == 201 and forwarded.json()["result"]["source"] == "STILL_PROCESSING"
    sent[forwarded.json()["id"]] = npy(depth_map(490.0, 9))  # forwarded at once, as the camera sent it
    first = npy(depth_map(500.0, 0))
    sent[escalate_with_depth(stack, grey(128, 0), first)] = first  # delivered alone: one multipart request
    stack.admin.wait(lambda: edge_status(stack)["outbox"]["delivered"] == 1, 30, "first escalation delivered")

    stack.cloud.stop()
    for seed, depth in [(1, npy(depth_map(510.0, 1))), (2, encode_depth_png(depth_map(520.0, 2)))]:
        sent[escalate_with_depth(stack, grey(128, seed), depth)] = depth
    plain = Groundlight(endpoint=stack.edge_url, api_token=EDGE_TOKEN).submit_image_query(
        stack.detector_id, grey(128, 3), wait=0
    )
    stack.edge_api.kill()  # kill -9 with depth maps in the outbox
    stack.edge_api.start()
    wait_http(f"{stack.edge_url}/health/live", timeout=60, process=stack.edge_api)
    assert edge_status(stack)["outbox"]["pending"]["escalation"] == 3

    stack.cloud.start()  # the three go in one batch request
    stack.admin.wait(lambda: edge_status(stack)["outbox"]["pending"]["escalation"] == 0, 60, "outbox drained")
    assert edge_status(stack)["outbox"]["dead"] == 0
    for iq_id, depth in sent.items():
        stored = cloud_depth(iq_id)
        assert stored.status_code == 200 and stored.content == depth, iq_id  # as sent, fractions of a mm kept
    without = cloud_depth(plain.id)
    assert without.status_code == 404 and without.json()["code"] == "no_depth"
    # Kept beside the images until the answered queries age out (the restart removed none).
    files = {path.name for path in (stack.data_dir / "images").iterdir()}
    assert {f"{iq_id}-depth" for iq_id in sent if iq_id != forwarded.json()["id"]} <= files


def _value(field: object) -> object:
    """The SDK's models give some fields as enums, others as plain strings."""
    return getattr(field, "value", field)
