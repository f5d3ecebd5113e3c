"""A detector on the real EfficientNet-Lite0 backbone export (``make backbone``), with the
benchmark's classifier and OODD heads: the size and graph the edge serves in practice."""

from __future__ import annotations

from pathlib import Path

import pytest

from intellioptics_common.schemas import InferenceResult
from intellioptics_inference.bench import bench_jpeg, default_backbone, write_bench_detector

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def backbone() -> Path:
    path = default_backbone()
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make backbone` (make test builds it)")
    return path


async def test_real_backbone_detector_answers(app_client, models_dir: Path, backbone: Path) -> None:
    write_bench_detector(models_dir, "det_real", backbone)
    image = bench_jpeg()
    async with app_client() as client:
        response = await client.post("/infer", params={"detector_id": "det_real"}, content=image)
        assert response.status_code == 200, response.text
        result = InferenceResult.model_validate_json(response.content)
        assert result.primary_model_version == 1 and result.oodd_in_domain_score is not None
        assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert result.timings.model_ms > 0.5  # a real network, not a toy graph
        loaded = (await client.get("/health/ready")).json()["loaded"][0]
        assert loaded["size_bytes"] > 10_000_000
        # Same image, same model: the same answer (no state leaks between requests).
        again = InferenceResult.model_validate_json(
            (await client.post("/infer", params={"detector_id": "det_real"}, content=image)).content
        )
        assert again.probabilities == result.probabilities
