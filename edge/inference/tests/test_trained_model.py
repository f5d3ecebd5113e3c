"""A model trained by the real ``intellioptics train`` CLI, served by this service, must
give the answers the training library's own ``intellioptics predict`` gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from intellioptics_common.schemas import InferenceResult
from intellioptics_inference.bench import default_backbone

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.integration]
CLI = Path(sys.executable).parent / "intellioptics"


def _cli(*args: str, timeout: float = 240) -> str:
    done = subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"intellioptics {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    if not default_backbone().is_file():
        pytest.fail(f"{default_backbone()} is missing: run `make backbone` (make test builds it)")
    root = tmp_path_factory.mktemp("trained")
    _cli("dataset", "generate", "--kind", "binary", "--n-per-class", "12", "--seed", "3", str(root / "data"))
    # One epoch is enough here: the test is about serving what training wrote, not accuracy.
    _cli("train", str(root / "data"), "--out", str(root / "models"), "--detector-id", "det_trained",
         "--trainer", "fast", "--epochs", "1")  # fmt: skip
    images = sorted((root / "data" / "YES").glob("*.png"))[:2] + sorted((root / "data" / "NO").glob("*.png"))[:2]
    return root / "models", images


async def test_service_answers_like_the_training_library(app_client, trained, models_dir: Path) -> None:
    source, images = trained
    (models_dir / "det_trained").symlink_to(source / "det_trained", target_is_directory=True)
    lines = _cli("predict", str(source), *map(str, images), "--detector-id", "det_trained", "--json").splitlines()
    expected = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(expected) == len(images)
    async with app_client() as client:
        for image, reference in zip(images, expected, strict=True):
            response = await client.post("/infer", params={"detector_id": "det_trained"}, content=image.read_bytes())
            assert response.status_code == 200, response.text
            result = InferenceResult.model_validate_json(response.content)
            assert result.label == reference["label"], image
            assert result.confidence == pytest.approx(reference["confidence"], abs=1e-4)
            assert result.oodd_in_domain_score == pytest.approx(reference["in_domain"], abs=1e-4)
            for name, value in reference["raw"].items():
                assert result.probabilities[name] == pytest.approx(value, abs=2e-4)
        assert result.primary_model_version == 1 and result.oodd_model_version == 1
        # The training library's packages share the backbone: one session, one backbone pass.
        assert (await client.get("/detectors/det_trained/ready")).json()["fused"] is True
