"""Image → model input tensor, driven by a package's :class:`InputSpec`.

Implemented once: training, the inference service and evaluation all call
:func:`to_input_tensor`, so a model sees the same pixels in every place.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from intellioptics_common.imaging import DEFAULT_LIMITS, ImageLimits, decode_image
from intellioptics_common.model_package import InputSpec


def draft_size(spec: InputSpec) -> tuple[int, int]:
    """JPEG draft target: decoding at reduced scale is safe down to the model input size."""
    return (spec.width, spec.height)


def resize_rgb(rgb: np.ndarray, spec: InputSpec) -> np.ndarray:
    if rgb.shape[0] == spec.height and rgb.shape[1] == spec.width:
        return rgb
    resized = Image.fromarray(rgb).resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def normalize(rgb: np.ndarray, spec: InputSpec) -> np.ndarray:
    """HxWx3 uint8 (already at input size) → 1x3xHxW float32."""
    mean = np.asarray(spec.mean, dtype=np.float32)
    scale = 1.0 / np.asarray(spec.std, dtype=np.float32)
    tensor = (rgb.astype(np.float32) - mean) * scale
    return np.ascontiguousarray(tensor.transpose(2, 0, 1)[None])


def to_input_tensor(rgb: np.ndarray, spec: InputSpec) -> np.ndarray:
    return normalize(resize_rgb(rgb, spec), spec)


def load_input_tensor(data: bytes, spec: InputSpec, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode untrusted bytes and prepare them for the model in one call."""
    return to_input_tensor(decode_image(data, limits, draft_size=draft_size(spec)).rgb, spec)
