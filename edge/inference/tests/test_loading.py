"""Loads off the request path: single flight, bounded waits, refusals, hot swap."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
from pathlib import Path

import pytest

from intellioptics_common.schemas import InferenceResult
from intellioptics_inference.app import default_loader
from tests.support import hostile_models

pytestmark = pytest.mark.anyio


class GatedLoader:
    """The real loader, held at a gate so a test controls how long a load takes."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls = 0

    def __call__(self, settings):
        real = default_loader(settings)

        def load(detector_id: str):
            self.calls += 1
            assert self.gate.wait(10), "test never opened the gate"
            return real(detector_id)

        return load


async def _infer(client, detector_id: str, image: bytes):
    return await client.post("/infer", params={"detector_id": detector_id}, content=image)


async def test_concurrent_requests_share_one_slow_load_then_503(app_client, models_dir: Path, kit) -> None:
    kit.write_detector(models_dir, "det_slow")
    loader = GatedLoader()
    image = kit.jpeg()
    async with app_client(loader_factory=loader, inference_load_timeout_s=1.0) as client:
        responses = await asyncio.gather(*(_infer(client, "det_slow", image) for _ in range(6)))
        assert [r.status_code for r in responses] == [503] * 6
        for response in responses:
            assert response.json()["code"] == "detector_loading"
            assert response.headers["retry-after"] == "1"
            assert "still loading" in response.json()["detail"]
        # Requests that arrive while it loads wait for the same load, which then completes.
        waiting = [asyncio.create_task(_infer(client, "det_slow", image)) for _ in range(4)]
        await asyncio.sleep(0.1)
        loader.gate.set()
        assert [r.status_code for r in await asyncio.gather(*waiting)] == [200] * 4
        assert loader.calls == 1
        assert (await _infer(client, "det_slow", image)).status_code == 200
        assert loader.calls == 1


def _corrupt_version(models_dir: Path, staging_root: Path, kit, detector_id: str, version: int) -> None:
    """Write a complete package elsewhere, flip one byte of model.buf, then rename it into
    place, as a broken download would appear (the service never sees it unflipped)."""
    path = kit.write_package(staging_root, detector_id, "primary", version=version, yes_bias=-3.0)
    data = bytearray((path / "model.buf").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / "model.buf").write_bytes(bytes(data))
    target = models_dir / detector_id / "primary" / str(version)
    os.rename(path, target)


async def test_corrupt_new_version_is_refused_and_old_keeps_serving(
    app_client, models_dir: Path, tmp_path: Path, kit, caplog
) -> None:
    kit.write_detector(models_dir, "det_corrupt", yes_bias=3.0)
    image = kit.jpeg()
    caplog.set_level(logging.WARNING, logger="intellioptics_inference")
    async with app_client() as client:
        assert InferenceResult.model_validate_json((await _infer(client, "det_corrupt", image)).content).label == "YES"
        _corrupt_version(models_dir, tmp_path / "staging", kit, "det_corrupt", 2)
        for _ in range(15):  # several polls and request-path checks
            response = await _infer(client, "det_corrupt", image)
            assert response.status_code == 200
            result = InferenceResult.model_validate_json(response.content)
            assert (result.primary_model_version, result.label) == (1, "YES")
            await asyncio.sleep(0.05)
        assert "failed sha256 verification" in caplog.text
        (listed,) = (await client.get("/detectors")).json()["detectors"]
        assert listed["state"] == "loaded" and listed["loaded"]["primary_model_version"] == 1
        assert listed["primary_versions_on_disk"] == [1, 2]
        assert "primary v2" in listed["refused_versions"][0] and "sha256" in listed["refused_versions"][0]
        metrics = (await client.get("/metrics")).text
        assert 'intellioptics_inference_model_load_failures_total{detector_id="det_corrupt"} 1.0' in metrics
        # A good version 3 still gets picked up.
        kit.write_package(models_dir, "det_corrupt", "primary", version=3, yes_bias=-3.0)
        for _ in range(100):
            result = InferenceResult.model_validate_json((await _infer(client, "det_corrupt", image)).content)
            if result.primary_model_version == 3:
                break
            await asyncio.sleep(0.02)
        assert (result.primary_model_version, result.label) == (3, "NO")


async def test_cold_load_skips_corrupt_newest_and_refuses_when_nothing_is_valid(
    app_client, models_dir: Path, tmp_path: Path, kit
) -> None:
    kit.write_detector(models_dir, "det_fallback", yes_bias=3.0)
    _corrupt_version(models_dir, tmp_path / "staging", kit, "det_fallback", 2)
    kit.write_package(tmp_path / "staging", "det_broken", "primary", version=1)
    (models_dir / "det_broken" / "primary").mkdir(parents=True)
    _corrupt_version(models_dir, tmp_path / "staging2", kit, "det_broken", 1)
    image = kit.jpeg()
    async with app_client() as client:
        result = InferenceResult.model_validate_json((await _infer(client, "det_fallback", image)).content)
        assert result.primary_model_version == 1
        for _ in range(2):  # refused at once the second time, without reloading
            response = await _infer(client, "det_broken", image)
            assert response.status_code == 503
            assert response.json()["code"] == "model_unusable"
            assert "sha256" in response.json()["detail"]
        listing = {d["detector_id"]: d for d in (await client.get("/detectors")).json()["detectors"]}
        assert listing["det_broken"]["state"] == "refused"
        assert listing["det_fallback"]["loaded"]["primary_model_version"] == 1
        assert len(listing["det_fallback"]["refused_versions"]) == 1


async def test_unusable_onnx_with_valid_checksum_is_refused(app_client, models_dir: Path, kit) -> None:
    kit.write_package(models_dir, "det_garbage", "primary", model_bytes=b"not an onnx graph at all")
    async with app_client() as client:
        response = await _infer(client, "det_garbage", kit.jpeg())
    assert response.status_code == 503 and response.json()["code"] == "model_unusable"


async def test_removed_detector_is_evicted_by_the_watcher(app_client, models_dir: Path, kit) -> None:
    kit.write_detector(models_dir, "det_gone")
    async with app_client() as client:
        assert (await _infer(client, "det_gone", kit.jpeg())).status_code == 200
        shutil.rmtree(models_dir / "det_gone")
        for _ in range(50):
            if not (await client.get("/health/ready")).json()["loaded"]:
                break
            await asyncio.sleep(0.05)
        assert (await client.get("/health/ready")).json()["loaded"] == []
        assert (await _infer(client, "det_gone", kit.jpeg())).status_code == 404


async def test_unexpected_load_error_is_503_and_retried(app_client, models_dir: Path, kit) -> None:
    kit.write_detector(models_dir, "det_flaky")
    attempts: list[str] = []

    def flaky_factory(settings):
        real = default_loader(settings)

        def load(detector_id: str):
            attempts.append(detector_id)
            if len(attempts) == 1:
                raise MemoryError("simulated: the first attempt ran out of memory")
            return real(detector_id)

        return load

    async with app_client(loader_factory=flaky_factory) as client:
        first = await _infer(client, "det_flaky", kit.jpeg())
        assert first.status_code == 503 and first.json()["code"] == "model_unusable"
        assert "MemoryError" in first.json()["detail"]
        # Not remembered as a refusal: the next request loads again and succeeds.
        assert (await _infer(client, "det_flaky", kit.jpeg())).status_code == 200
    assert attempts == ["det_flaky", "det_flaky"]


async def test_detector_ready_reports_a_refused_package(app_client, models_dir: Path, kit) -> None:
    kit.write_package(models_dir, "det_refused", "primary", model_bytes=b"garbage")
    async with app_client() as client:
        statuses = []
        for _ in range(50):
            response = await client.get("/detectors/det_refused/ready")
            statuses.append(response.json()["code"])
            if response.json()["code"] != "detector_loading":
                break
            await asyncio.sleep(0.02)
    assert response.status_code == 503 and statuses[-1] == "model_unusable"


def test_settings_come_from_intellioptics_variables(monkeypatch, tmp_path: Path) -> None:
    from intellioptics_inference.settings import InferenceSettings

    monkeypatch.setenv("INTELLIOPTICS_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("INTELLIOPTICS_INFERENCE_CACHE_SIZE", "7")
    monkeypatch.setenv("INTELLIOPTICS_ORT_EXECUTION_MODE", "parallel")
    settings = InferenceSettings()
    assert (settings.models_dir, settings.inference_cache_size, settings.ort_execution_mode) == (
        tmp_path,
        7,
        "parallel",
    )
    assert settings.inference_port == 8001
    monkeypatch.setenv("INTELLIOPTICS_ORT_EXECUTION_MODE", "sideways")
    with pytest.raises(ValueError, match="ort_execution_mode"):
        InferenceSettings()


async def test_package_whose_outputs_do_not_match_its_classes_is_refused(app_client, models_dir: Path, kit) -> None:
    two_class_graph = kit.tiny_model("primary", num_classes=2)
    kit.write_package(models_dir, "det_mismatch", "primary", class_names=("a", "b", "c"), model_bytes=two_class_graph)
    async with app_client() as client:
        response = await _infer(client, "det_mismatch", kit.jpeg())
    assert response.status_code == 503 and response.json()["code"] == "model_unusable"
    assert "2 probabilities for 3 classes" in response.json()["detail"]


async def test_model_files_with_external_data_are_refused_before_onnx_runtime_sees_them(
    app_client, models_dir: Path, kit, caplog
) -> None:
    """A package whose model.buf points at ./Makefile would answer with the file's bytes
    (ONNX Runtime reads external data relative to the working directory): refused."""
    size = kit.spec.height
    assert Path("Makefile").is_file()  # what the graph would read from this working directory
    leak = hostile_models.external_data_model("Makefile", size=size)
    kit.write_detector(models_dir, "det_leak", yes_bias=3.0, oodd=False)
    kit.write_package(models_dir, "det_leak", "primary", version=2, model_bytes=leak)
    kit.write_package(models_dir, "det_leakonly", "primary", model_bytes=leak)
    image = kit.jpeg()
    caplog.set_level(logging.WARNING, logger="intellioptics_inference")
    async with app_client() as client:
        result = InferenceResult.model_validate_json((await _infer(client, "det_leak", image)).content)
        assert (result.primary_model_version, result.label) == (1, "YES")  # v2 refused, v1 serves
        response = await _infer(client, "det_leakonly", image)
        assert response.status_code == 503 and response.json()["code"] == "model_unusable"
        assert "external data" in response.json()["detail"]
        listing = {d["detector_id"]: d for d in (await client.get("/detectors")).json()["detectors"]}
        assert "external data" in listing["det_leak"]["refused_versions"][0]
    assert "external data" in caplog.text
