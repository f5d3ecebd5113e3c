"""Run the exported backbone with onnxruntime (no torch at inference) and build views.

The fast trainer runs the backbone once per training view and caches the maps; the
heads then train on those maps in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from intellioptics_common.model_package import InputSpec
from intellioptics_common.preprocessing import to_input_tensor
from intellioptics_common.runtime import RuntimeOptions
from intellioptics_training.backbone import FEATURE_OUTPUTS, export_backbone, read_backbone_info
from intellioptics_training.config import backbone_dir, get_settings

# Textures have no up or down: flips and a half turn are free extra examples.
VIEWS = ("identity", "hflip", "vflip", "rot180")


def runtime_options(threads: int | None = None) -> RuntimeOptions:
    """The common runtime's options for training-side runs: ``threads`` (default the
    ``INTELLIOPTICS_THREADS`` setting; 0 = all cores) and CUDA first when present."""
    threads = get_settings().threads if threads is None else threads
    return RuntimeOptions(intra_op_threads=max(threads, 0), inter_op_threads=1, allow_spinning=True, providers="auto")


def make_session(model: bytes | Path, threads: int | None = None) -> ort.InferenceSession:
    data = model.read_bytes() if isinstance(model, Path) else model
    return runtime_options(threads).session(data, "model")


def apply_view(rgb: np.ndarray, view: str) -> np.ndarray:
    if view == "identity":
        return rgb
    if view == "hflip":
        return rgb[:, ::-1]
    if view == "vflip":
        return rgb[::-1]
    if view == "rot180":
        return rgb[::-1, ::-1]
    if view == "transpose":  # the main diagonal swapped: rows become columns
        return rgb.transpose(1, 0, 2)
    if view == "antitranspose":  # the other diagonal
        return rgb[::-1, ::-1].transpose(1, 0, 2)
    raise ValueError(view)


class BackboneRunner:
    """The shared backbone (exported on first use when ``make install`` has not run)."""

    def __init__(self, directory: Path | None = None, threads: int | None = None) -> None:
        self.directory = Path(directory or backbone_dir())
        if not (self.directory / "backbone.onnx").is_file():
            export_backbone(self.directory)
        self.info = read_backbone_info(self.directory)
        self.model_bytes = (self.directory / "backbone.onnx").read_bytes()
        self.session = make_session(self.model_bytes, threads)

    def maps(
        self,
        images: list[np.ndarray],
        spec: InputSpec,
        views: tuple[str, ...] = ("identity",),
        batch_size: int = 8,
        progress: Callable[[int, int], None] | None = None,
        outputs: tuple[str, ...] = FEATURE_OUTPUTS,
    ) -> list[np.ndarray]:
        """Feature maps named by ``outputs`` for every (view, image), view-major: index =
        view * len(images) + i. Asking only for the early maps skips the backbone's last stages."""
        jobs = [(view, rgb) for view in views for rgb in images]
        stores: list[list[np.ndarray]] = [[] for _ in outputs]
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            batch = np.concatenate([to_input_tensor(np.ascontiguousarray(apply_view(r, v)), spec) for v, r in chunk])
            for store, value in zip(stores, self.session.run(list(outputs), {spec.tensor_name: batch}), strict=True):
                store.append(value)
            if progress is not None:
                progress(min(start + batch_size, len(jobs)), len(jobs))
        return [np.concatenate(store) for store in stores]
