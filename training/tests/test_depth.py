"""RGB + depth: reading and checking depth maps, fitting and mixing the branches, and the CLI end to end."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from intellioptics_common.depth import DepthSpec, depth_input, encode_depth_png, read_depth
from intellioptics_common.errors import DepthMapError
from intellioptics_common.model_check import check_model_bytes
from intellioptics_training.depth import _choose_rgb_weight, _fit_depth_linear, find_depth
from intellioptics_training.synthetic_depth import write_pairs

CLI = [sys.executable, "-c", "from intellioptics_training.cli import main; main()"]


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def plate(height: int = 60, width: int = 80) -> np.ndarray:
    grid_y, grid_x = np.mgrid[0:height, 0:width]
    return (500.0 + 0.1 * grid_x + 0.05 * grid_y).astype(np.float32)


def test_depth_reads_from_npy_and_16_bit_png_in_millimetres() -> None:
    depth = plate()
    assert np.array_equal(read_depth(npy(depth)), depth)
    from_png = read_depth(encode_depth_png(depth))
    assert from_png.dtype == np.float32 and np.abs(from_png - depth).max() <= 0.5
    grid = depth_input(npy(depth), (800, 600), DepthSpec(height=30, width=40))
    assert grid.shape == (1, 1, 30, 40)
    assert float(grid.min()) >= 500 and float(grid.max()) <= 511


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"not a depth map at all", "neither a readable PNG"),
        (png(np.full((60, 80), 120, dtype=np.uint8)), "8 bits"),
        (npy(np.where(np.eye(60, 80, dtype=bool), np.nan, 500).astype(np.float32)), "NaN"),
        (npy(np.zeros((60, 80), dtype=np.float32)), "all zeros"),
        (npy(np.full((60, 80), -3, dtype=np.float32)), "negative"),
        (npy(np.ones((60, 80, 3), dtype=np.float32)), "2-D"),
    ],
)
def test_bad_depth_maps_are_refused_with_what_to_send(data: bytes, message: str) -> None:
    with pytest.raises(DepthMapError) as caught:
        depth_input(data, (80, 60), DepthSpec())
    assert message in caught.value.public_message
    assert caught.value.status_code == 400


def test_depth_of_another_frame_or_with_few_readings_is_refused() -> None:
    with pytest.raises(DepthMapError, match="aspect ratios differ"):
        depth_input(npy(plate(60, 80)), (80, 80), DepthSpec())
    holes = plate()
    holes[:, :50] = 0
    with pytest.raises(DepthMapError, match="has readings"):
        depth_input(npy(holes), (80, 60), DepthSpec())
    few = plate()
    few[:10, :10] = 0  # no reading: filled with the median
    assert float(depth_input(npy(few), (80, 60), DepthSpec()).min()) >= 500


def test_the_depth_layer_keeps_the_features_that_separate_and_drops_the_rest() -> None:
    rng = np.random.default_rng(3)
    labels = np.tile([0, 1], 100)
    features = rng.normal(size=(200, 12))
    features[:, 4] += 1.5 * labels  # only feature 4 carries the label
    linear = _fit_depth_linear(torch.as_tensor(features, dtype=torch.float32), labels, 2)
    weight = (linear.weight[1] - linear.weight[0]).numpy()
    noise = np.abs(np.delete(weight, 4))
    assert weight[4] > 1.0 and noise.max() < 0.2 * weight[4]
    assert int((noise == 0).sum()) >= 4  # L1 by proximal steps: noise weights are exactly 0


def test_the_mix_follows_the_branch_that_answers_out_of_fold() -> None:
    rng = np.random.default_rng(4)
    labels = np.tile([0, 1], 30)
    signal = np.stack([-(2 * labels - 1), 2 * labels - 1], axis=1).astype(np.float64)

    def noisy(sd: float) -> np.ndarray:
        return signal + rng.normal(0, sd, (60, 2))

    noise = rng.normal(0, 2.0, (60, 2))
    assert _choose_rgb_weight(noisy(0.5), noise, labels) == 0.0  # colour carries nothing: depth alone
    assert _choose_rgb_weight(noise, noisy(0.5), labels) == 1.0
    assert 0.2 <= _choose_rgb_weight(noisy(1.5), noisy(1.5), labels) <= 0.8  # two noisy views: both


def test_pairs_are_found_by_the_rgb_and_depth_suffixes(tmp_path: Path) -> None:
    (tmp_path / "a_rgb.png").write_bytes(b"x")
    (tmp_path / "a_depth.npy").write_bytes(b"x")
    (tmp_path / "b_rgb.jpg").write_bytes(b"x")
    (tmp_path / "c.png").write_bytes(b"x")
    assert find_depth(tmp_path / "a_rgb.png") == tmp_path / "a_depth.npy"
    assert find_depth(tmp_path / "b_rgb.jpg") is None
    assert find_depth(tmp_path / "c.png") is None


def _run(args: list[str], backbone_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "INTELLIOPTICS_BACKBONE_DIR": str(backbone_path), "INTELLIOPTICS_THREADS": "2"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


@pytest.mark.slow
def test_cli_trains_evaluates_and_predicts_with_depth(tmp_path: Path, backbone_path: Path) -> None:
    train, test, models = tmp_path / "train", tmp_path / "test", tmp_path / "models"
    write_pairs(train, 30, seed=31, surface="metal")
    write_pairs(test, 16, seed=32, surface="metal")
    first = sorted((train / "NO").glob("*_rgb.png"))[0]
    (train / "YES" / "lonely_rgb.png").write_bytes(first.read_bytes())  # an image without its depth map

    result = _run(["train", str(train), "--mode", "binary", "--depth", "--out", str(models), "--json"], backbone_path)
    assert result.returncode == 0, result.stderr
    assert "skipped 1 image(s) without a depth map" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["class_counts"] == {"NO": 30, "YES": 30}
    # The two-input graph passes the checks every part runs before it trusts a model file.
    model_files = sorted(Path(summary["primary"]).rglob("model.buf"))
    assert model_files and all("Shape" in check_model_bytes(f.read_bytes()).ops for f in model_files)

    result = _run(["evaluate", str(models), str(test), "--depth", "--json"], backbone_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == 32
    # The dent shows only in depth: a model that reads it must find most dents.
    assert report["balanced_accuracy"] >= 0.8, report
    if report["confident_accuracy"] is not None:
        assert report["confident_accuracy"] >= 0.85, report

    image = sorted((test / "YES").glob("*_rgb.png"))[0]
    result = _run(["predict", str(models), str(image), "--depth", "--json"], backbone_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[0])["label"] in ("YES", "NO")

    # A depth model asked without depth says what to pass, with no traceback.
    result = _run(["evaluate", str(models), str(test), "--json"], backbone_path)
    assert result.returncode == 2 and "pass --depth" in result.stderr and "Traceback" not in result.stderr
    lonely = tmp_path / "lonely_rgb.png"
    lonely.write_bytes(image.read_bytes())
    result = _run(["predict", str(models), str(lonely), "--depth", "--json"], backbone_path)
    assert "no depth map beside" in result.stderr and "Traceback" not in result.stderr
