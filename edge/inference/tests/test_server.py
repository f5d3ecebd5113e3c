"""The real service process (``python -m intellioptics_inference`` under uvicorn)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from intellioptics_common.schemas import InferenceResult
from tests.support.procs import ManagedProcess, free_port, python_module, wait_http

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("inference")
    models = root / "models"
    models.mkdir()
    port = free_port()
    env = {
        "INTELLIOPTICS_MODELS_DIR": str(models),
        "INTELLIOPTICS_INFERENCE_PORT": str(port),
        "INTELLIOPTICS_MODEL_POLL_INTERVAL_S": "0.2",
        "INTELLIOPTICS_LOG_LEVEL": "INFO",
    }
    process: ManagedProcess = python_module("inference", "intellioptics_inference", root, env)
    process.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/health/ready", timeout=60, process=process)
        yield f"http://127.0.0.1:{port}", models
    finally:
        process.stop()
    assert process.poll() is not None


def test_infer_over_http_and_metrics_with_labels(server, kit) -> None:
    base, models = server
    kit.write_detector(models, "det_http", yes_bias=3.0)
    with httpx.Client(base_url=base, timeout=10) as client:
        response = client.post(
            "/infer",
            params={"detector_id": "det_http"},
            content=kit.jpeg(640, 480),
            headers={"content-type": "image/jpeg"},
        )
        assert response.status_code == 200, response.text
        result = InferenceResult.model_validate_json(response.content)
        assert (result.detector_id, result.label, result.primary_model_version) == ("det_http", "YES", 1)
        assert client.post("/infer", params={"detector_id": "det_http"}, content=b"GIF89a").status_code == 400
        metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for stage in ("decode", "preprocess", "model", "total"):
        assert (
            f'intellioptics_inference_latency_seconds_count{{detector_id="det_http",model_version="1",stage="{stage}"}} 1.0'
            in text
        )
    assert 'intellioptics_inference_requests_total{detector_id="det_http",status="200"} 1.0' in text
    assert 'intellioptics_inference_requests_total{detector_id="det_http",status="400"} 1.0' in text
    assert 'intellioptics_inference_model_load_seconds_count{detector_id="det_http",model_version="1"} 1.0' in text


@pytest.mark.slow
def test_hot_swap_under_concurrent_load_fails_no_request(server, kit) -> None:
    """Four clients hammer /infer while four new versions appear; every answer is a 200
    from a complete model (its label matches its version: odd YES, even NO)."""
    base, models = server
    kit.write_detector(models, "det_swap", yes_bias=3.0)
    image = kit.jpeg()
    stop = threading.Event()
    seen: Counter[tuple[int, str]] = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def hammer() -> None:
        with httpx.Client(base_url=base, timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.post("/infer", params={"detector_id": "det_swap"}, content=image)
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append(repr(exc))
                    continue
                with lock:
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text}")
                    else:
                        result = InferenceResult.model_validate_json(response.content)
                        seen[(result.primary_model_version, result.label)] += 1

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()

    def answered_by(version: int) -> bool:
        """Wait (on what the clients see, not a fixed time) for an answer of ``version``."""
        deadline = time.monotonic() + 15  # a loaded machine may take a while to swap
        while time.monotonic() < deadline:
            with lock:
                if any(seen_version == version for seen_version, _ in seen):
                    return True
            time.sleep(0.02)
        return False

    try:
        assert answered_by(1)
        for version in range(2, 6):
            kit.write_package(models, "det_swap", "primary", version=version, yes_bias=3.0 if version % 2 else -3.0)
            assert answered_by(version), f"v{version} never answered: {seen}"
        deadline = time.monotonic() + 15  # enough answers in all to trust the counts below
        while time.monotonic() < deadline:
            with lock:
                if sum(seen.values()) > 50:
                    break
            time.sleep(0.02)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == []
    versions = {version for version, _ in seen}
    assert 5 in versions and len(versions) >= 3, seen
    for version, label in seen:
        assert label == ("YES" if version % 2 else "NO"), seen
    assert sum(seen.values()) > 50
    metrics = httpx.get(f"{base}/metrics").text
    assert 'intellioptics_inference_model_swaps_total{detector_id="det_swap",model_version="5"} 1.0' in metrics
