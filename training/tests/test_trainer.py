from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from intellioptics_common.model_package import read_latest
from intellioptics_training.api import DatasetError, Sample, TrainingCancelled, export_package, train_detector
from intellioptics_training.backbone import DEFAULT_INPUT
from intellioptics_training.data import prepare, stratified_split
from intellioptics_training.synthetic import generate


def test_progress_is_reported_and_package_is_written(trained, tmp_path: Path) -> None:
    paths = export_package(tmp_path, "det_test", trained, metrics={"balanced_accuracy": 0.5})
    primary = read_latest(tmp_path, "det_test", "primary")
    oodd = read_latest(tmp_path, "det_test", "oodd")
    assert primary is not None and oodd is not None and paths["primary"] == primary.path
    assert primary.pipeline.class_names == ("NO", "YES") and primary.pipeline.mode == "BINARY"
    assert primary.pipeline.output == "probabilities" and oodd.pipeline.output == "in_domain"
    assert primary.pipeline.backbone.sha256 == oodd.pipeline.backbone.sha256 == trained.backbone_sha256
    assert primary.metadata.training_set_size == 32 and primary.metadata.metrics == {"balanced_accuracy": 0.5}


def test_every_image_trains_and_is_answered_out_of_fold(trained, tmp_path: Path) -> None:
    oof = trained.out_of_fold
    assert oof is not None and oof.folds == 3 and len(oof.labels) == trained.training_set_size == 32
    assert oof.probabilities.shape == (32, 2) and np.allclose(oof.probabilities.sum(axis=1), 1.0)
    assert ((oof.in_domain > 0) & (oof.in_domain <= 1)).all()
    calibration = trained.calibration
    assert calibration is not None and calibration.oof_n == 32 and calibration.threshold == 0.9
    assert calibration.temperature >= calibration.nll_temperature
    if calibration.confident_n:
        assert calibration.confident_lower_bound >= 0.9
    export_package(tmp_path, "det_cal", trained)
    extra = read_latest(tmp_path, "det_cal", "primary").metadata.extra
    assert extra["calibration"]["temperature"] == calibration.temperature
    assert extra["validation"]["oof_balanced_accuracy"] == trained.validation["oof_balanced_accuracy"]


def test_cancel_check_stops_training(runner) -> None:
    samples = [Sample(g.rgb, g.label) for g in generate("binary", 4, seed=3)]
    events = []
    with pytest.raises(TrainingCancelled):
        train_detector(
            samples,
            "binary",
            epochs=3,
            runner=runner,
            progress_callback=events.append,
            cancel_check=lambda: any(e.stage == "primary" for e in events),
        )
    assert {e.stage for e in events} == {"features", "crossfit", "primary"}
    assert all(e.total > 0 for e in events)


def test_unclear_is_kept_out_and_unreadable_counted() -> None:
    images = list(generate("binary", 2, seed=4))
    samples = [Sample(g.rgb, g.label) for g in images]
    samples += [Sample(images[0].rgb, "unclear"), Sample(b"not an image", "PASS"), Sample(images[1].rgb, "fail")]
    data = prepare(samples, "binary", DEFAULT_INPUT)
    assert data.unclear == 1 and data.skipped == 1
    assert data.class_counts() == {"NO": 3, "YES": 2}
    with pytest.raises(DatasetError, match="two classes"):
        prepare([Sample(images[0].rgb, "YES")], "binary", DEFAULT_INPUT)


def test_stratified_split_keeps_every_class() -> None:
    labels = np.array([0] * 10 + [1] * 3)
    train, held = stratified_split(labels, 0.25)
    assert set(labels[held]) == {0, 1} and set(labels[train]) == {0, 1}
    assert len(set(train) & set(held)) == 0 and len(train) + len(held) == len(labels)


@pytest.mark.slow
def test_finetune_trainer_one_epoch_on_cpu(runner, tmp_path: Path) -> None:
    import onnxruntime as ort

    samples = [Sample(g.rgb, g.label) for g in generate("binary", 4, seed=5, strength=3.0)]
    events = []
    trained = train_detector(
        samples, "binary", trainer="finetune", epochs=1, runner=runner, progress_callback=events.append
    )
    assert trained.trainer == "finetune-mil" and not trained.primary_shares_backbone
    assert any(e.stage == "primary" and "loss" in e.metrics for e in events)
    x = np.zeros((1, 3, 320, 320), dtype=np.float32)
    probs = ort.InferenceSession(trained.primary_onnx, providers=["CPUExecutionProvider"]).run(
        ["probabilities"], {"image": x}
    )[0]
    assert probs.shape == (1, 2) and abs(float(probs.sum()) - 1.0) < 1e-5
    export_package(tmp_path, "det_ft", trained)
    primary = read_latest(tmp_path, "det_ft", "primary")
    assert primary is not None and primary.pipeline.backbone is None
    assert read_latest(tmp_path, "det_ft", "oodd").pipeline.backbone is not None
