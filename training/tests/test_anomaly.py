"""Anomaly training: coreset, threshold, bank bounds, ONNX / in-memory parity, and the CLI
end to end on generated surfaces (real backbone, real ONNX Runtime, real processes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from intellioptics_common.anomaly import SeverityCuts
from intellioptics_common.model_package import read_latest
from intellioptics_training.anomaly import (
    AnomalyOptions,
    TrainedAnomaly,
    bank_budget,
    greedy_coreset,
    threshold_from_good,
    train_anomaly,
)
from intellioptics_training.backbone import DEFAULT_INPUT
from intellioptics_training.cli import main
from intellioptics_training.data import Sample, prepare_good
from intellioptics_training.errors import DatasetError
from intellioptics_training.features import BackboneRunner, make_session
from intellioptics_training.synthetic import encode_png, generate, generate_anomaly, write_anomaly_dataset

CLI = [sys.executable, "-c", "from intellioptics_training.cli import main; main()"]


def test_coreset_keeps_rare_patterns_and_returns_bank_rows() -> None:
    generator = torch.Generator().manual_seed(0)
    common = torch.randn(3000, 16, generator=generator) * 0.1
    rare = torch.full((1, 16), 5.0)
    patches = torch.cat([common, rare])
    bank = greedy_coreset(patches, 50, seed=3)
    assert bank.shape == (50, 16)
    assert any(torch.equal(row, rare[0]) for row in bank), "the one far patch must be a centre"
    rows = {tuple(r.tolist()) for r in patches}
    assert all(tuple(r.tolist()) in rows for r in bank)
    assert torch.equal(greedy_coreset(patches[:10], 50), patches[:10])


def test_bank_is_bounded_in_bytes() -> None:
    assert bank_budget(AnomalyOptions(max_bank_patches=100_000, max_bank_bytes=64 * 2**20), 152) * 152 * 4 <= 64 * 2**20
    assert bank_budget(AnomalyOptions(max_bank_patches=100_000, max_bank_bytes=152 * 4 * 10), 152) == 10


def test_threshold_from_crossfitted_good_scores() -> None:
    scores = np.random.default_rng(0).normal(10.0, 1.0, 200)
    threshold, scale = threshold_from_good(scores, 0.01)
    assert threshold >= np.quantile(scores, 0.99) and threshold == pytest.approx(12.3, abs=0.5)
    normalised = lambda raw: 1 / (1 + np.exp(-(raw - threshold) / scale))  # noqa: E731
    assert normalised(threshold) == pytest.approx(0.5)
    assert normalised(np.median(scores)) == pytest.approx(0.10)  # a typical good image: NO at confidence 0.9
    loose, _ = threshold_from_good(scores, 0.1)
    assert loose < threshold
    with pytest.raises(DatasetError, match="false-alarm"):
        AnomalyOptions(target_false_alarm=0.7)


@pytest.fixture(scope="module")
def small_anomaly(runner: BackboneRunner) -> TrainedAnomaly:
    good = [g.rgb for g in generate_anomaly("metal", 8, 0, seed=5, strength=3.0)]
    data = prepare_good([Sample(rgb, "NO") for rgb in good], DEFAULT_INPUT)
    return train_anomaly(data, AnomalyOptions(max_bank_patches=512, folds=4), runner=runner)


def test_onnx_graph_matches_the_in_memory_head(small_anomaly: TrainedAnomaly, runner: BackboneRunner) -> None:
    images = [g.rgb for g in generate_anomaly("metal", 1, 2, seed=6, strength=3.0)]
    maps = runner.maps(images, DEFAULT_INPUT)
    with torch.no_grad():
        probs, score, amap = small_anomaly.head(torch.from_numpy(maps[0]), torch.from_numpy(maps[1]))
    session = make_session(small_anomaly.primary_onnx, 2)
    from intellioptics_common.preprocessing import to_input_tensor

    batch = np.concatenate([to_input_tensor(rgb, DEFAULT_INPUT) for rgb in images])
    o_probs, o_score, o_map = session.run(["probabilities", "anomaly_score", "anomaly_map"], {"image": batch})
    assert o_map.shape == (3, 1, 320, 320)
    np.testing.assert_allclose(o_score, score.numpy(), atol=1e-4)
    np.testing.assert_allclose(o_probs, probs.numpy(), atol=1e-4)
    np.testing.assert_allclose(o_map, amap.numpy(), atol=1e-3)
    assert small_anomaly.bank_patches == 512 and small_anomaly.bank_bytes == 512 * 152 * 4
    assert len(small_anomaly.crossfit_scores) == 8


def _run(args: list[str], backbone_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "INTELLIOPTICS_BACKBONE_DIR": str(backbone_path), "INTELLIOPTICS_THREADS": "2"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=240, env=env, check=False)


@pytest.mark.slow
def test_cli_trains_from_good_images_and_finds_defects(tmp_path: Path, backbone_path: Path) -> None:
    train, test, models = tmp_path / "train", tmp_path / "test", tmp_path / "models"
    write_anomaly_dataset(train, "metal", 14, 0, seed=31, strength=3.0)
    write_anomaly_dataset(test, "metal", 10, 10, seed=32, strength=3.0)
    (train / "NO" / "broken.png").write_bytes(b"\x89PNG not really")

    result = _run(["train", str(train), "--mode", "anomaly", "--out", str(models), "--json"], backbone_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["good_images"] == 14 and summary["skipped_unreadable"] == 1
    assert summary["bank_bytes"] <= 64 * 2**20

    result = _run(["evaluate", str(models), str(test), "--json"], backbone_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n_good"] == 10 and report["n_defect"] == 10
    assert report["image_auroc"] >= 0.85, report
    assert report["pixel_auroc"] >= 0.95, report
    assert report["false_alarm_rate"] <= 0.2 and report["detection_rate"] >= 0.6, report
    assert report["box_hit_rate"] >= 0.6, report
    assert sum(report["severity_counts"]["YES"].values()) == 10
    # What the edge would answer on its own at 0.9, and how often it is right (strength-3 defects).
    assert report["confident_threshold"] == 0.9 and report["confident_coverage"] > 0.2, report
    assert report["confident_accuracy"] >= 0.9, report

    # The same test set in MVTec AD's layout: good/, a folder per defect kind, and
    # ground_truth/<kind>/<stem>_mask.png (here some TIFF): the same figures.
    mvtec = tmp_path / "mvtec"
    shutil.copytree(test / "NO", mvtec / "good")
    defects = sorted((test / "YES").iterdir())
    for index, image in enumerate(defects):
        kind = "crack" if index % 2 else "hole"
        (mvtec / kind).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, mvtec / kind / image.name)
        mask = Image.open(test / "masks" / f"{image.stem}.png")
        (mvtec / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
        mask.save(mvtec / "ground_truth" / kind / f"{image.stem}_mask.{'tif' if index % 3 == 0 else 'png'}")
    result = _run(["evaluate", str(models), str(mvtec), "--json"], backbone_path)
    assert result.returncode == 0, result.stderr
    again = json.loads(result.stdout)
    assert again["masks_missing"] == 0 and again["n_defect"] == 10 and again["n_good"] == 10, again
    for key in ("image_auroc", "pixel_auroc", "false_alarm_rate", "detection_rate", "box_hit_rate"):
        assert again[key] == pytest.approx(report[key], abs=1e-6), key

    defect = sorted((test / "YES").iterdir())[0]
    small = tmp_path / "small.png"
    Image.open(defect).resize((200, 150)).save(small)
    maps, overlays = tmp_path / "maps", tmp_path / "overlays"
    foreign = tmp_path / "foreign.png"
    foreign.write_bytes(encode_png(next(iter(generate("ood", 1, seed=5))).rgb))
    args = ["predict", str(models), str(defect), str(small), str(foreign), "--json"]
    args += ["--maps", str(maps), "--overlays", str(overlays)]
    result = _run(args, backbone_path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["image"] for line in lines] == [str(defect), str(small), str(foreign)]
    # A foreign scene is out of domain: said so, not only called a defect.
    assert lines[2]["in_domain"] < 0.5 and lines[2]["out_of_domain"] is True, lines[2]
    assert lines[0]["out_of_domain"] is False, lines[0]
    for line in lines:
        assert line["label"] in ("YES", "NO") and 0.0 <= line["anomaly_score"] <= 1.0
        assert 0.0 <= line["confidence"] <= 1.0 and 0.0 <= line["in_domain"] <= 1.0
        assert line["severity"] in ("Normal", "Potential", "Moderate", "Critical")
        if line["label"] == "YES" and not line["out_of_domain"]:
            assert line["rois"], line  # a defect says where it is
        for roi in line["rois"]:
            assert roi["label"] == "anomaly" and 0.0 <= roi["score"] <= 1.0
        for roi in line["rois"]:
            g = roi["geometry"]
            assert 0.0 <= g["left"] < g["right"] <= 1.0 and 0.0 <= g["top"] < g["bottom"] <= 1.0
    assert np.load(maps / "small.npy").shape == (150, 200) and np.load(maps / "small.npy").dtype == np.float32
    assert (overlays / f"{defect.stem}_heatmap.png").is_file() and (overlays / f"{defect.stem}_boxes.png").is_file()


def test_cli_refuses_bad_good_image_folders(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    single = tmp_path / "single"
    mixed = tmp_path / "mixed"
    broken = tmp_path / "broken"
    for folder in (single, mixed, broken):
        folder.mkdir()
    images = [g.rgb for g in generate_anomaly("wood", 5, 0, seed=1)]
    (single / "one.png").write_bytes(encode_png(images[0]))
    for i, rgb in enumerate(images):
        (mixed / f"{i}.png").write_bytes(encode_png(rgb if i % 2 else rgb[:200, :240]))
    for i in range(3):
        (broken / f"{i}.jpg").write_bytes(b"\xff\xd8\xff nope")
    expected = {
        empty: "holds no good images",
        single: "at least 4 good images, found 1",
        mixed: "2 different sizes",
        broken: "3 unreadable skipped",
    }
    # In-process (click's runner) to keep this fast; the test above runs the real executable.
    # Every case is refused before the backbone runs.
    for folder, message in expected.items():
        result = CliRunner().invoke(main, ["train", str(folder), "--mode", "anomaly", "--out", str(tmp_path / "m")])
        assert result.exit_code == 2, result.output
        assert isinstance(result.exception, SystemExit), result.exception
        assert message in result.stderr, result.stderr


def test_cli_good_folder_false_alarm_rate_and_severity_cuts(tmp_path: Path, backbone_path: Path) -> None:
    """``DATA/good/`` (MVTec AD's train layout), a looser false-alarm target and the
    detector's own severity cuts reach the package the edge serves."""
    data, strict, loose = tmp_path / "data", tmp_path / "strict", tmp_path / "loose"
    (data / "good").mkdir(parents=True)
    for i, image in enumerate(generate_anomaly("wood", 10, 0, seed=41)):
        (data / "good" / f"{i:03d}.png").write_bytes(encode_png(image.rgb))
    env = {"INTELLIOPTICS_BACKBONE_DIR": str(backbone_path)}
    summaries = {}
    for out, extra in ((strict, []), (loose, ["--false-alarm-rate", "0.2", "--severity-cuts", "0.2,0.4,0.9"])):
        args = ["train", str(data), "--mode", "anomaly", "--out", str(out), "--json", *extra]
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 0, result.output
        summaries[out] = json.loads(result.stdout)
    assert summaries[strict]["good_images"] == summaries[loose]["good_images"] == 10
    assert summaries[strict]["target_false_alarm"] == 0.01 and summaries[loose]["target_false_alarm"] == 0.2
    assert summaries[strict]["severity_cuts"] == {"potential": 0.3, "moderate": 0.5, "critical": 0.8}
    assert summaries[loose]["severity_cuts"] == {"potential": 0.2, "moderate": 0.4, "critical": 0.9}
    # A higher tolerated false-alarm rate is a lower raw threshold on the same good images.
    assert summaries[loose]["raw_threshold"] < summaries[strict]["raw_threshold"]
    spec = read_latest(loose, "det_local", "primary").pipeline.anomaly
    assert spec is not None and spec.severity_cuts == SeverityCuts(0.2, 0.4, 0.9)

    for bad, message in (
        ("0.5,0.4,0.9", "potential <= moderate"),
        ("0.3,0.5", "exactly three"),
        ("a,b,c", "could not"),
    ):
        args = ["train", str(data), "--mode", "anomaly", "--out", str(tmp_path / "x"), "--severity-cuts", bad]
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 2 and message in result.stderr, result.output
