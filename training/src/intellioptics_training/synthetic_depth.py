"""A fair RGB + depth development set: the defect is a small dent that shows only in depth.

Each pair is a textured surface (the generators of :mod:`intellioptics_training.synthetic`)
and its depth map in mm: a plate 400-600 mm away, tilted and slowly warped, with surface
roughness and sensor noise. ``YES`` pairs have a dent 0.5-1.5 mm deep somewhere in the
frame; the colour image is drawn the same way for both classes, so a model without depth
is at chance (the bench checks it) and one with depth must find the dent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from intellioptics_training.synthetic import SIZE, SURFACES, _finish, _smooth_noise, encode_png, make_surface


@dataclass(frozen=True)
class DepthPair:
    rgb: np.ndarray  # SIZE x SIZE x 3 uint8
    depth_mm: np.ndarray  # SIZE x SIZE float32, distance from the camera
    label: str
    surface: str
    dent_mm: float  # 0 for NO


def _plate(rng: np.random.Generator) -> np.ndarray:
    grid_y, grid_x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    distance = rng.uniform(400, 600)
    tilt_x, tilt_y = rng.uniform(-0.05, 0.05, 2)  # mm per pixel: up to 16 mm across the frame
    warp = 0.4 * _smooth_noise(rng, 60)  # slow bending of the part
    roughness = 0.08 * _smooth_noise(rng, 1.5)
    noise = rng.normal(0, 0.05, (SIZE, SIZE))
    return distance + tilt_x * grid_x + tilt_y * grid_y + warp + roughness + noise


def _dent(rng: np.random.Generator, depth_mm: float) -> np.ndarray:
    sigma = rng.uniform(6, 14)
    margin = int(3 * sigma)
    cy, cx = (int(v) for v in rng.integers(margin, SIZE - margin, 2))
    grid_y, grid_x = np.mgrid[0:SIZE, 0:SIZE]
    blob = np.exp(-((grid_x - cx) ** 2 + (grid_y - cy) ** 2) / (2 * sigma**2))
    return depth_mm * ndimage.gaussian_filter(blob, 0.5)


def generate_pairs(n_per_class: int, seed: int, surface: str | None = None) -> Iterator[DepthPair]:
    """Pairs in a fixed order; the same (n, seed, surface) always gives the same data."""
    if surface is not None and surface not in SURFACES:
        raise ValueError(f"surface must be one of {', '.join(SURFACES)}, not {surface!r}")
    for i in range(n_per_class):
        for class_index, label in enumerate(("NO", "YES")):
            rng = np.random.default_rng([seed, 7, class_index, i])
            drawn = surface or SURFACES[int(rng.integers(0, len(SURFACES)))]
            rgb = _finish(rng, make_surface(rng, drawn))
            depth = _plate(rng)
            dent = 0.0
            if label == "YES":
                dent = float(rng.uniform(0.5, 1.5))
                depth = depth + _dent(rng, dent)  # a dent is farther from the camera
            yield DepthPair(rgb, depth.astype(np.float32), label, drawn, dent)


def write_pairs(out_dir: Path, n_per_class: int, seed: int, surface: str | None = None) -> int:
    """``OUT/<label>/<id>_rgb.png`` + ``<id>_depth.npy``; returns the pair count."""
    out_dir = Path(out_dir)
    count = 0
    for index, pair in enumerate(generate_pairs(n_per_class, seed, surface)):
        folder = out_dir / pair.label
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{pair.surface}_{seed}_{index:04d}"
        (folder / f"{stem}_rgb.png").write_bytes(encode_png(pair.rgb))
        np.save(folder / f"{stem}_depth.npy", pair.depth_mm)
        count += 1
    return count
