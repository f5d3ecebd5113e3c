"""The hot path's normalisation (common ``normalize``, rewritten for speed for this
service) must give exactly the pixels of the plain formula that training assumed."""

from __future__ import annotations

import numpy as np

from intellioptics_common.model_package import InputSpec
from intellioptics_common.preprocessing import normalize


def test_normalize_is_bit_identical_to_the_broadcast_formula() -> None:
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    rgb[0, :3] = [[0, 0, 0], [255, 255, 255], [127, 128, 1]]
    for spec in (InputSpec(), InputSpec(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))):
        mean = np.asarray(spec.mean, dtype=np.float32)
        scale = 1.0 / np.asarray(spec.std, dtype=np.float32)
        expected = ((rgb.astype(np.float32) - mean) * scale).transpose(2, 0, 1)[None]
        tensor = normalize(rgb, spec)
        assert tensor.dtype == np.float32 and tensor.shape == (1, 3, 37, 53) and tensor.flags.c_contiguous
        assert np.array_equal(tensor, expected)
