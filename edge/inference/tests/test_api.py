"""The app in-process (httpx.ASGITransport, lifespan run): answers, errors, cache."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from intellioptics_common.confidence import adjust_confidence
from intellioptics_common.schemas import ErrorBody, InferenceResult

pytestmark = pytest.mark.anyio


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (the pixels never come)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))


async def test_infer_answers_with_oodd_adjusted_confidence(app_client, models_dir: Path, kit) -> None:
    kit.write_detector(models_dir, "det_happy", yes_bias=3.0)
    async with app_client() as client:
        response = await client.post("/infer", params={"detector_id": "det_happy"}, content=kit.jpeg(640, 480))
        assert response.status_code == 200, response.text
        result = InferenceResult.model_validate_json(response.content)
    assert result.label == "YES"
    assert result.primary_model_version == 1 and result.oodd_model_version == 1
    assert result.primary_model_id.startswith("det_happy-primary")
    assert set(result.probabilities) == {"NO", "YES"}
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.raw_primary_confidence == pytest.approx(result.probabilities["YES"])
    assert result.oodd_in_domain_score is not None and 0.5 < result.oodd_in_domain_score < 1.0
    expected = adjust_confidence(result.raw_primary_confidence, 1.0 - result.oodd_in_domain_score, 2)
    assert result.confidence == pytest.approx(expected)
    assert result.confidence < result.raw_primary_confidence
    timings = result.timings
    assert timings.total_ms >= timings.decode_ms + timings.preprocess_ms + timings.model_ms > 0


async def test_detector_without_oodd_reports_raw_confidence(app_client, models_dir: Path, kit) -> None:
    kit.write_detector(models_dir, "det_plain", yes_bias=-3.0, oodd=False)
    async with app_client() as client:
        response = await client.post("/infer", params={"detector_id": "det_plain"}, content=kit.jpeg())
    result = InferenceResult.model_validate_json(response.content)
    assert result.label == "NO"
    assert result.oodd_in_domain_score is None and result.oodd_model_version is None
    assert result.confidence == result.raw_primary_confidence


async def test_multiclass_and_png_input(app_client, models_dir: Path, kit) -> None:
    names = ("cat", "dog", "bird")
    kit.write_package(models_dir, "det_multi", "primary", class_names=names, yes_bias=4.0)
    buffer = io.BytesIO()
    Image.new("RGBA", (40, 30), (10, 200, 30, 128)).save(buffer, format="PNG")
    async with app_client() as client:
        response = await client.post(
            "/infer",
            params={"detector_id": "det_multi"},
            content=buffer.getvalue(),
            headers={"content-type": "image/png"},
        )
    result = InferenceResult.model_validate_json(response.content)
    assert result.mode == "MULTI_CLASS" and result.label == "bird"
    assert list(result.probabilities) == list(names)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"", 400, "invalid_image"),
        (b"this is plain text, not an image", 400, "invalid_image"),
        ("truncated", 400, "invalid_image"),
        (_png_header(100_000, 100_000), 413, "image_too_large"),
        ("oversized", 413, "image_too_large"),
    ],
    ids=["empty", "text", "truncated-jpeg", "100-gigapixel-png", "body-over-limit"],
)
async def test_bad_images_are_clear_4xx(app_client, models_dir: Path, kit, body, status: int, code: str) -> None:
    kit.write_detector(models_dir, "det_bad")
    if body == "truncated":
        body = kit.jpeg(640, 480)[:3000]
    elif body == "oversized":
        body = b"\xff\xd8\xff" + b"\x00" * 300_000
    async with app_client(inference_max_image_bytes=200_000) as client:
        response = await client.post("/infer", params={"detector_id": "det_bad"}, content=body)
        assert response.status_code == status, response.text
        error = ErrorBody.model_validate_json(response.content)
        assert error.code == code and error.detail
        # The service stays up and keeps answering.
        ok = await client.post("/infer", params={"detector_id": "det_bad"}, content=kit.jpeg())
        assert ok.status_code == 200


@pytest.mark.parametrize(
    ("params", "path", "status", "code"),
    [
        ({"detector_id": "det_missing"}, "/infer", 404, "detector_not_found"),
        ({"detector_id": "../../etc"}, "/infer", 400, "invalid_detector_id"),
        ({}, "/infer", 422, "validation_error"),
        ({}, "/nowhere", 404, "not_found"),
    ],
)
async def test_bad_requests_are_clear_json_errors(app_client, kit, params, path, status, code) -> None:
    async with app_client() as client:
        response = await client.post(path, params=params, content=kit.jpeg())
    assert response.status_code == status
    error = ErrorBody.model_validate_json(response.content)
    assert error.code == code
    if status == 404 and path == "/infer":
        assert "det_missing" in error.detail


async def test_health_and_detector_readiness(app_client, models_dir: Path, kit) -> None:
    kit.write_detector(models_dir, "det_ready")
    async with app_client() as client:
        assert (await client.get("/health/live")).json() == {"status": "ok"}
        ready = await client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["loaded"] == []
        first = await client.get("/detectors/det_ready/ready")
        assert first.status_code == 503 and first.json()["code"] == "detector_loading"
        for _ in range(100):  # the load runs in the background
            answer = await client.get("/detectors/det_ready/ready")
            if answer.status_code == 200:
                break
            await asyncio.sleep(0.02)
        assert answer.json()["ready"] is True and answer.json()["primary_model_version"] == 1
        assert (await client.get("/detectors/det_nope/ready")).status_code == 404
        listing = (await client.get("/detectors")).json()
        (entry,) = listing["detectors"]
        assert entry["state"] == "loaded" and entry["primary_versions_on_disk"] == [1]
        assert [d["detector_id"] for d in (await client.get("/health/ready")).json()["loaded"]] == ["det_ready"]


async def test_ready_is_503_when_models_dir_is_missing(app_client, models_dir: Path) -> None:
    models_dir.rmdir()
    async with app_client() as client:
        assert (await client.get("/health/live")).status_code == 200
        assert (await client.get("/health/ready")).status_code == 503


async def test_lru_evicts_least_recently_used_beyond_capacity(app_client, models_dir: Path, kit) -> None:
    ids = [f"det_lru{i}" for i in range(7)]
    for detector_id in ids:
        kit.write_detector(models_dir, detector_id)
    image = kit.jpeg()
    async with app_client(inference_cache_size=5) as client:
        for detector_id in ids:
            assert (await client.post("/infer", params={"detector_id": detector_id}, content=image)).status_code == 200
        loaded = [d["detector_id"] for d in (await client.get("/health/ready")).json()["loaded"]]
        assert loaded == ids[2:]
        # Touch the oldest survivor, then load an evicted one: the next oldest goes.
        await client.post("/infer", params={"detector_id": ids[2]}, content=image)
        assert (await client.post("/infer", params={"detector_id": ids[0]}, content=image)).status_code == 200
        loaded = [d["detector_id"] for d in (await client.get("/health/ready")).json()["loaded"]]
        assert loaded == [ids[4], ids[5], ids[6], ids[2], ids[0]]
        await client.post("/infer", params={"detector_id": "det_never_installed"}, content=image)
        metrics = (await client.get("/metrics")).text
    assert "det_never_installed" not in metrics
    assert 'intellioptics_inference_requests_total{detector_id="unknown",status="404"} 1.0' in metrics
    assert 'intellioptics_inference_cache_evictions_total{detector_id="det_lru3"} 1.0' in metrics
    assert 'intellioptics_inference_cache_misses_total{detector_id="det_lru0"} 2.0' in metrics
    assert 'intellioptics_inference_cache_hits_total{detector_id="det_lru2"} 1.0' in metrics
    assert "intellioptics_inference_loaded_detectors 5.0" in metrics


async def test_memory_bound_keeps_fewer_detectors(app_client, models_dir: Path, kit) -> None:
    # About 1.6 MB per detector: a 3 MB bound holds one, not two (the cache size would allow 5).
    big = kit.tiny_model("primary", yes_bias=1.0, padding_floats=400_000)
    for i in range(3):
        kit.write_package(models_dir, f"det_mem{i}", "primary", model_bytes=big)
    async with app_client(inference_max_memory_mb=3) as client:
        for i in range(3):
            await client.post("/infer", params={"detector_id": f"det_mem{i}"}, content=kit.jpeg())
        loaded = (await client.get("/health/ready")).json()["loaded"]
    assert [d["detector_id"] for d in loaded] == ["det_mem2"]
    assert loaded[0]["size_bytes"] > 1_500_000
