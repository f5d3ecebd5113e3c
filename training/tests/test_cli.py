"""End to end through the real ``intellioptics`` executable on generated data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from intellioptics_training.synthetic import write_dataset

CLI = [sys.executable, "-c", "from intellioptics_training.cli import main; main()"]


def _run(args: list[str], backbone_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "INTELLIOPTICS_BACKBONE_DIR": str(backbone_path), "INTELLIOPTICS_THREADS": "2"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


@pytest.mark.slow
def test_train_evaluate_predict(tmp_path: Path, backbone_path: Path) -> None:
    train, test, ood, models = tmp_path / "train", tmp_path / "test", tmp_path / "ood", tmp_path / "models"
    # Clearly visible defects: this checks the pipeline learns, the bench measures the hard set.
    write_dataset(train, "binary", 24, seed=21, strength=6.0)
    write_dataset(test, "binary", 16, seed=22, strength=6.0)
    write_dataset(ood, "ood", 12, seed=23)
    (train / "YES" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")

    result = _run(
        ["train", str(train), "--mode", "binary", "--out", str(models), "--epochs", "20", "--json"], backbone_path
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["skipped_unreadable"] == 1
    assert summary["class_counts"] == {"NO": 24, "YES": 24}
    assert summary["calibration"]["threshold"] == 0.9 and summary["calibration"]["oof_n"] == 48
    assert (models / "det_local" / "primary" / "1" / "model.buf").is_file()
    assert (models / "det_local" / "oodd" / "1" / "model.buf").is_file()

    result = _run(
        ["evaluate", str(models), str(test), "--threshold", "0.9", "--ood", str(ood), "--json"], backbone_path
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == 32 and report["threshold"] == 0.9
    assert report["balanced_accuracy"] >= 0.7, report
    assert report["roc_auc"] >= 0.8, report
    if report["confident_accuracy"] is not None:
        assert report["confident_accuracy"] >= 0.85, report
    assert report["ood_escalation_rate"] >= 0.9, report

    image = next((test / "YES").iterdir())
    result = _run(["predict", str(models / "det_local"), str(image), "--json"], backbone_path)
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout.splitlines()[0])
    assert line["label"] in ("YES", "NO") and 0.0 <= line["confidence"] <= 1.0
    assert set(line["raw"]) == {"NO", "YES"}


def test_empty_folder_fails_with_message(tmp_path: Path, backbone_path: Path) -> None:
    (tmp_path / "data" / "YES").mkdir(parents=True)
    result = _run(["train", str(tmp_path / "data"), "--out", str(tmp_path / "m")], backbone_path)
    assert result.returncode != 0
    assert "no images" in result.stderr
    assert "Traceback" not in result.stderr


def test_one_class_only_fails_with_message(tmp_path: Path, backbone_path: Path) -> None:
    write_dataset(tmp_path / "all", "binary", 3, seed=1)
    data = tmp_path / "data" / "YES"
    data.mkdir(parents=True)
    for path in (tmp_path / "all" / "YES").iterdir():
        (data / path.name).write_bytes(path.read_bytes())
    (data / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    result = _run(["train", str(tmp_path / "data"), "--out", str(tmp_path / "m")], backbone_path)
    assert result.returncode != 0
    assert "two classes" in result.stderr and "1 unreadable" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_label_folder_fails_with_message(tmp_path: Path, backbone_path: Path) -> None:
    write_dataset(tmp_path / "data", "multiclass", 1, seed=1)
    result = _run(["train", str(tmp_path / "data"), "--mode", "binary", "--out", str(tmp_path / "m")], backbone_path)
    assert result.returncode != 0
    assert "not a binary label" in result.stderr


def test_evaluate_missing_package_fails_with_message(tmp_path: Path, backbone_path: Path) -> None:
    write_dataset(tmp_path / "test", "binary", 1, seed=1)
    (tmp_path / "models").mkdir()
    result = _run(["evaluate", str(tmp_path / "models"), str(tmp_path / "test")], backbone_path)
    assert result.returncode != 0
    assert "error:" in result.stderr and "Traceback" not in result.stderr
