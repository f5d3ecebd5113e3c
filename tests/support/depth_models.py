"""A small RGB + depth detector trained by the training library, and its own answers.

The edge's inference service and edge API tests serve the package this writes and
compare their answers with :func:`library_answer`, which runs the package the way
``intellioptics predict --depth`` does (decode, ``depth_input``, ``score_images``).

The dent is 4 mm (the development set's are 0.5-1.5 mm) so that 12 pairs per class train
in a few seconds and the held-out pairs let calibration answer at the threshold
(:data:`THRESHOLD`): the model's answers are then far from 0.5, and a depth map that
did not reach it, or reached it wrong, shows.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from intellioptics_common.confidence import predict_from_probabilities
from intellioptics_common.depth import depth_input, encode_depth_png
from intellioptics_common.imaging import decode_image
from intellioptics_training.depth import DepthSample, prepare_depth, train_depth_detector
from intellioptics_training.evaluate import load_detector, score_images
from intellioptics_training.features import BackboneRunner
from intellioptics_training.synthetic import encode_png
from intellioptics_training.synthetic_depth import generate_pairs
from intellioptics_training.trainer import export_package

THRESHOLD = 0.55
DENT_MM = 4.0


@dataclass(frozen=True)
class DepthCase:
    label: str
    rgb_png: bytes
    depth_mm: np.ndarray  # float32, the image's size

    @property
    def depth_npy(self) -> bytes:
        return npy(self.depth_mm)

    @property
    def depth_png(self) -> bytes:
        return encode_depth_png(self.depth_mm)


@dataclass(frozen=True)
class LibraryAnswer:
    label: str
    confidence: float
    probabilities: dict[str, float]
    in_domain: float | None


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _dent(shape: tuple[int, ...], depth_mm: float) -> np.ndarray:
    grid_y, grid_x = np.mgrid[0 : shape[0], 0 : shape[1]]
    centre_y, centre_x = shape[0] / 2, shape[1] / 2
    return depth_mm * np.exp(-((grid_x - centre_x) ** 2 + (grid_y - centre_y) ** 2) / (2 * 20.0**2))


def cases(n_per_class: int, seed: int) -> list[DepthCase]:
    """Pairs of the development set's metal surface; ``YES`` has a 4 mm dent in the middle."""
    out = []
    for pair in generate_pairs(n_per_class, seed=seed, surface="metal"):
        dent = _dent(pair.depth_mm.shape, DENT_MM) if pair.label == "YES" else 0.0
        out.append(DepthCase(pair.label, encode_png(pair.rgb), (pair.depth_mm + dent).astype(np.float32)))
    return out


def train_depth_package(models_dir: Path, detector_id: str) -> None:
    """Train on 12 pairs per class (a few seconds on 2 cores) and write the package."""
    samples = [DepthSample(c.rgb_png, c.depth_npy, c.label, f"pair_{i}") for i, c in enumerate(cases(8, seed=5))]
    trained = train_depth_detector(
        prepare_depth(samples, "binary"), "binary", epochs=3, threshold=THRESHOLD, runner=BackboneRunner(threads=2)
    )
    assert trained.calibration is not None and trained.calibration.temperature < 100, trained.calibration
    export_package(models_dir, detector_id, trained)


def library_answer(models_dir: Path, detector_id: str, image: bytes, depth: bytes) -> LibraryAnswer:
    """The training library's answer on one pair, as ``intellioptics predict --depth`` computes it."""
    detector = load_detector(models_dir, detector_id)
    spec = detector.primary.pipeline.depth
    assert spec is not None, "not a depth package"
    rgb = decode_image(image).rgb
    scored = score_images(detector, [rgb], depths=depth_input(depth, (rgb.shape[1], rgb.shape[0]), spec))
    names = detector.primary.pipeline.class_names
    in_domain = None if scored.in_domain is None else float(scored.in_domain[0])
    prediction = predict_from_probabilities(scored.probabilities[0].tolist(), names, in_domain)
    probabilities = {name: float(p) for name, p in zip(names, scored.probabilities[0], strict=True)}
    return LibraryAnswer(prediction.label, prediction.confidence, probabilities, in_domain)
