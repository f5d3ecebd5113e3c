"""``POST /infer/multi``: one image, several detectors, one backbone pass.

Real graphs: detectors on the EfficientNet-Lite0 export (``make backbone``) with their
own heads, one with and one without OODD, an anomaly detector trained from good images
(a multi-scale cut: two backbone outputs and two extra outputs), and a small test graph on
another backbone. Each detector's answer must be what ``POST /infer`` gives it alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from intellioptics_common.schemas import InferenceResult, MultiInferenceResult
from intellioptics_inference.bench import bench_jpeg, default_backbone, write_bench_detector
from intellioptics_training.anomaly import AnomalyOptions, export_anomaly_package, train_anomaly
from intellioptics_training.backbone import DEFAULT_INPUT
from intellioptics_training.data import Sample, prepare_good
from intellioptics_training.features import BackboneRunner
from intellioptics_training.synthetic import encode_png, generate_anomaly

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def anomaly_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not default_backbone().is_file():
        pytest.fail(f"{default_backbone()} is missing: run `make backbone` (make test builds it)")
    models = tmp_path_factory.mktemp("multi-anomaly")
    good = [g.rgb for g in generate_anomaly("metal", 8, 0, seed=41, strength=4.0)]
    trained = train_anomaly(
        prepare_good([Sample(rgb, "NO") for rgb in good], DEFAULT_INPUT),
        AnomalyOptions(max_bank_patches=512, folds=4),
        runner=BackboneRunner(threads=2),
    )
    export_anomaly_package(models, "det_anomaly", trained)
    export_anomaly_package(models, "det_anomaly2", trained)
    return models


def _same(alone: InferenceResult, shared: InferenceResult) -> None:
    assert shared.label == alone.label
    assert shared.confidence == pytest.approx(alone.confidence, abs=TOLERANCE)
    assert shared.raw_primary_confidence == pytest.approx(alone.raw_primary_confidence, abs=TOLERANCE)
    if alone.oodd_in_domain_score is None:
        assert shared.oodd_in_domain_score is None
    else:
        assert shared.oodd_in_domain_score == pytest.approx(alone.oodd_in_domain_score, abs=TOLERANCE)
    assert shared.probabilities.keys() == alone.probabilities.keys()
    for name, value in alone.probabilities.items():
        assert shared.probabilities[name] == pytest.approx(value, abs=TOLERANCE)
    assert (shared.anomaly is None) == (alone.anomaly is None)
    if alone.anomaly is not None and shared.anomaly is not None:
        assert shared.anomaly.anomaly_score == pytest.approx(alone.anomaly.anomaly_score, abs=TOLERANCE)
        assert shared.anomaly.severity == alone.anomaly.severity
        assert len(shared.anomaly.rois) == len(alone.anomaly.rois)


async def test_one_image_many_detectors_answers_as_each_alone(
    app_client, models_dir: Path, anomaly_models, kit
) -> None:
    for n, oodd in enumerate((True, False, True)):
        write_bench_detector(models_dir, f"det_b{n}", default_backbone(), oodd=oodd, seed=n + 1)
    for name in ("det_anomaly", "det_anomaly2"):
        (models_dir / name).symlink_to(anomaly_models / name, target_is_directory=True)
    kit.write_detector(models_dir, "det_tiny", yes_bias=0.3)  # another backbone: answered alone
    wanted = ["det_b0", "det_b1", "det_anomaly", "det_missing", "det_tiny", "det_b2", "det_anomaly2"]
    images = [bench_jpeg(), encode_png(next(iter(generate_anomaly("metal", 0, 1, seed=42, strength=4.0))).rgb)]
    async with app_client() as client:
        for image in images:
            response = await client.post("/infer/multi", params={"detector_id": wanted}, content=image)
            assert response.status_code == 200, response.text
            many = MultiInferenceResult.model_validate_json(response.content)
            assert [r.detector_id for r in many.results] == wanted
            # One pass for the three bench heads (cut at feat_head), one for the two anomaly
            # models (cut at feat_s8 + feat_s16, as every trained package is), one for det_tiny.
            assert many.backbone_runs == 3, many
            for answer in many.results:
                if answer.detector_id == "det_missing":
                    assert answer.status_code == 404 and answer.result is None
                    assert answer.error is not None and "det_missing" in answer.error.detail
                    continue
                assert answer.status_code == 200 and answer.result is not None, answer
                alone = await client.post("/infer", params={"detector_id": answer.detector_id}, content=image)
                assert alone.status_code == 200, alone.text
                _same(InferenceResult.model_validate_json(alone.content), answer.result)
            heads = {r.detector_id: r.result.probabilities for r in many.results if r.result is not None}
            assert heads["det_b0"] != heads["det_b2"], "each detector answers with its own head"


async def test_multi_refuses_what_it_cannot_answer(app_client, models_dir: Path, kit) -> None:
    kit.write_detector(models_dir, "det_a", yes_bias=0.3)
    async with app_client() as client:
        bad_image = await client.post("/infer/multi", params={"detector_id": ["det_a"]}, content=b"not an image")
        assert bad_image.status_code == 400 and "image" in bad_image.json()["detail"].lower()
        twice = await client.post("/infer/multi", params={"detector_id": ["det_a", "det_a"]}, content=kit.jpeg())
        assert twice.status_code == 400 and "twice" in twice.json()["detail"]
        none = await client.post("/infer/multi", content=kit.jpeg())
        assert none.status_code in (400, 422) and "detector_id" in none.text
        many = await client.post(
            "/infer/multi", params={"detector_id": [f"det_{n}" for n in range(33)]}, content=kit.jpeg()
        )
        assert many.status_code == 400 and "1 to 32" in many.json()["detail"]
        bad_id = await client.post("/infer/multi", params={"detector_id": ["det_a", "../x"]}, content=kit.jpeg())
        assert bad_id.status_code == 200
        results = bad_id.json()["results"]
        assert results[0]["status_code"] == 200 and results[1]["status_code"] == 400
