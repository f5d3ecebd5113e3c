"""RGB + depth: reading and checking depth maps, the fixed depth branch, and the CLI end to end."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from intellioptics_common.depth import DepthSpec, depth_input, encode_depth_png, read_depth
from intellioptics_common.errors import DepthMapError
from intellioptics_common.model_check import check_model_bytes
from intellioptics_training.depth import DepthFeatures, find_depth
from intellioptics_training.synthetic_depth import generate_pairs, write_pairs

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


def test_depth_features_ignore_distance_and_tilt_and_see_a_dent() -> None:
    features = DepthFeatures(DepthSpec(height=48, width=48))
    grid_y, grid_x = np.mgrid[0:48, 0:48]
    flat = 450.0 + 0.2 * grid_x - 0.1 * grid_y + np.random.default_rng(0).normal(0, 0.02, (48, 48))
    far = flat + 100.0
    dent = flat + 1.0 * np.exp(-((grid_x - 20) ** 2 + (grid_y - 30) ** 2) / 8.0)
    batch = torch.as_tensor(np.stack([flat, far, dent])[:, None], dtype=torch.float32)
    with torch.no_grad():
        out = features(batch).numpy()
    assert np.allclose(out[0], out[1], atol=1e-2)  # 100 mm farther away: the same features
    highest_in_spreads = out[:, 5]  # scale 3: the highest response over its spread
    assert highest_in_spreads[2] > 2 * highest_in_spreads[0]


def test_depth_features_run_the_same_in_onnx_runtime(tmp_path: Path) -> None:
    spec = DepthSpec(height=32, width=40)
    module = DepthFeatures(spec).eval()
    path = tmp_path / "depth.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, as training uses
        torch.onnx.export(
            module,
            (torch.zeros(1, 1, 32, 40),),
            str(path),
            input_names=["depth"],
            output_names=["features"],
            dynamic_axes={"depth": {0: "batch"}, "features": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    pairs = list(generate_pairs(2, seed=5))
    batch = np.concatenate([depth_input(p.depth_mm, (320, 320), spec) for p in pairs])
    with torch.no_grad():
        expected = module(torch.from_numpy(batch)).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"depth": batch})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


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
