"""The depth branch's fixed features: what they see, what they ignore, and their ONNX export."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from intellioptics_common.depth import DepthSpec, depth_input
from intellioptics_common.model_check import ALLOWED_OPS, check_model_bytes
from intellioptics_training.depth_features import FEATURE_NAMES, DepthFeatures
from intellioptics_training.synthetic_depth import generate_pairs


def _features(maps: list[np.ndarray], size: int = 48) -> np.ndarray:
    """The features back in mm (undoing the 0.1 power), so tests compare them as ratios."""
    module = DepthFeatures(DepthSpec(height=size, width=size))
    with torch.no_grad():
        return module(torch.as_tensor(np.stack(maps)[:, None], dtype=torch.float32)).numpy().astype(np.float64) ** 10


def _column(name: str) -> int:
    return FEATURE_NAMES.index(name)


GRID_Y, GRID_X = np.mgrid[0:48, 0:48]
TILTED = 450.0 + 0.2 * GRID_X - 0.1 * GRID_Y + np.random.default_rng(0).normal(0, 0.02, (48, 48))
DENT = 1.0 * np.exp(-((GRID_X - 20) ** 2 + (GRID_Y - 30) ** 2) / 8.0)  # 1 mm deep, σ = 2 cells


def test_depth_features_ignore_distance_and_tilt_and_see_a_dent_as_a_dent() -> None:
    flat, far, dent, bump = _features([TILTED, TILTED + 100.0, TILTED + DENT, TILTED - DENT])
    assert np.allclose(flat, far, rtol=0.05, atol=1e-4)  # 100 mm farther away: the same features
    peak = _column("dent_peak_s2")
    assert dent[peak] > 10 * flat[peak]
    assert bump[peak] < 2 * flat[peak]  # nearer the camera is a bump, not a dent
    assert bump[_column("bump_peak_s2")] > 10 * flat[_column("bump_peak_s2")]


def test_the_staircase_of_an_integer_mm_map_is_not_a_dent() -> None:
    """A 16-bit PNG holds whole millimetres: a tilted plate becomes 1 mm steps, as deep as
    the dent. Steps curve the surface one way only, so the dent maps score them low and the
    groove maps (one-way curvature) higher."""
    steps, dented = _features([np.round(TILTED), np.round(TILTED + DENT)])
    peak = _column("dent_peak_s2")
    assert dented[peak] > 4 * steps[peak]  # the dent stands four times above the steps
    assert steps[_column("groove_peak_s2")] > 2 * steps[peak]


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
    # Every part checks a model before it loads it: the depth branch must pass that check.
    assert check_model_bytes(path.read_bytes()).ops <= ALLOWED_OPS
