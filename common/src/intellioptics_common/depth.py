"""Depth maps: read, check and bring to a model's depth grid (implemented once).

A depth map is distance from the camera in millimetres, one value per pixel, sent as a
16-bit PNG (integer mm) or a ``.npy`` array (float32 mm). ``0`` means "no reading", as
depth cameras report it. The rules, enforced everywhere a depth map enters:

- the map is 2-D, finite (no NaN or infinity), and has readings (not all zero);
- an 8-bit PNG is refused: it cannot hold millimetres;
- its aspect ratio matches the image's within 2 % (a map of another frame is refused),
  and it is resized to the model's depth grid with bilinear interpolation, so depth
  and image may come at different resolutions;
- pixels with no reading are filled with the median of the readings, so long as at
  least half the pixels have one.

A model gets the map on its grid (:func:`depth_input`, what training, ``predict --depth``
and the edge's inference service all call); the edge's rule stage gets the checked map at
its own resolution (:func:`checked_depth`).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from intellioptics_common.errors import DepthMapError

MAX_DEPTH_BYTES = 64 * 1024 * 1024
MAX_DEPTH_SIDE = 8192
ASPECT_TOLERANCE = 0.02
MIN_VALID_SHARE = 0.5


@dataclass(frozen=True)
class DepthSpec:
    """The model's depth input: a ``height`` x ``width`` grid of millimetres."""

    height: int = 96
    width: int = 96
    tensor_name: str = "depth"
    unit: str = "mm"


def _is_npy(data: bytes) -> bool:
    return data[:6] == b"\x93NUMPY"


def read_depth(data: bytes) -> np.ndarray:
    """Decode a 16-bit PNG or ``.npy`` depth map into float32 millimetres (H x W)."""
    if not data:
        raise DepthMapError("The depth map is empty; send a 16-bit PNG (mm) or a float32 .npy array (mm).")
    if len(data) > MAX_DEPTH_BYTES:
        raise DepthMapError(f"The depth map is {len(data)} bytes; the limit is {MAX_DEPTH_BYTES} bytes.")
    if _is_npy(data):
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DepthMapError("The .npy depth map could not be read; send a float32 H x W array in mm.") from exc
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.ndim != 2 or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise DepthMapError(
                f"The .npy depth map has shape {array.shape} and dtype {array.dtype}; send a 2-D float32 array in mm."
            )
        depth = array.astype(np.float32)
    else:
        depth = _read_png(data)
    height, width = depth.shape
    if height < 2 or width < 2 or max(height, width) > MAX_DEPTH_SIDE:
        raise DepthMapError(f"The depth map is {width}x{height}; send one between 2 and {MAX_DEPTH_SIDE} per side.")
    if not np.isfinite(depth).all():
        raise DepthMapError("The depth map holds NaN or infinite values; send 0 for pixels without a reading.")
    if (depth < 0).any():
        raise DepthMapError("The depth map holds negative values; send distances in mm (0 = no reading).")
    if not depth.any():
        raise DepthMapError("The depth map is all zeros (no readings); check the depth camera.")
    return depth


def _read_png(data: bytes) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.format != "PNG":
                    raise DepthMapError(
                        f"The depth map is a {image.format} image; send a 16-bit PNG (mm) or a float32 .npy array."
                    )
                if image.mode in ("L", "P", "RGB", "RGBA", "LA", "1"):
                    raise DepthMapError(
                        f"The depth PNG is {image.mode} (8 bits per channel), which cannot hold millimetres; "
                        "send a single-channel 16-bit PNG in mm or a float32 .npy array."
                    )
                return np.asarray(image, dtype=np.float32)
    except DepthMapError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise DepthMapError("The depth map is neither a readable PNG nor a .npy array.") from exc


def check_aspect(depth: np.ndarray, image_size: tuple[int, int]) -> None:
    """Refuse a depth map whose aspect ratio differs from the image's (``image_size`` = W, H)."""
    width, height = image_size
    ratio_image = width / height
    ratio_depth = depth.shape[1] / depth.shape[0]
    if abs(ratio_depth / ratio_image - 1) > ASPECT_TOLERANCE:
        raise DepthMapError(
            f"The depth map is {depth.shape[1]}x{depth.shape[0]} but the image is {width}x{height}: their aspect "
            "ratios differ. Send the depth map of the same frame (it may be at another resolution)."
        )


def fill_missing(depth: np.ndarray) -> np.ndarray:
    """Pixels without a reading (0) take the median of the readings; refused when fewer
    than half the pixels have one."""
    valid = depth > 0
    share = float(valid.mean())
    if share < MIN_VALID_SHARE:
        raise DepthMapError(
            f"Only {share:.0%} of the depth map has readings (0 = none); at least {MIN_VALID_SHARE:.0%} are needed."
        )
    if share < 1:
        depth = np.where(valid, depth, np.median(depth[valid])).astype(np.float32)
    return depth


def to_grid(depth: np.ndarray, spec: DepthSpec) -> np.ndarray:
    """Fill missing readings, then resize bilinearly to the model's grid: float32 H x W."""
    return _resize(fill_missing(depth), spec)


def _resize(depth: np.ndarray, spec: DepthSpec) -> np.ndarray:
    resized = Image.fromarray(depth.astype(np.float32), mode="F").resize(
        (spec.width, spec.height), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)


def checked_depth(data: bytes | np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Bytes or an array → the depth map of this image (``image_size`` = W, H) with every
    check applied and missing readings filled, at its own resolution (for the rule stage)."""
    depth = read_depth(data) if isinstance(data, bytes) else _checked_array(data)
    check_aspect(depth, image_size)
    return fill_missing(depth)


def depth_input(data: bytes | np.ndarray, image_size: tuple[int, int], spec: DepthSpec) -> np.ndarray:
    """Bytes or an array → the model's ``1 x 1 x H x W`` depth tensor, with every check applied."""
    return _resize(checked_depth(data, image_size), spec)[None, None]


def _checked_array(array: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array))
    return read_depth(buffer.getvalue())


def encode_depth_png(depth_mm: np.ndarray) -> bytes:
    """A depth map (mm) as a 16-bit PNG: the format cameras and our tests send."""
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(depth_mm), 0, 65535).astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def depth_media_type(data: bytes) -> str:
    """The media type of depth bytes as sent: ``application/x-npy`` or ``image/png``."""
    return "application/x-npy" if _is_npy(data) else "image/png"


# Turbo (Google's rainbow map, perceptually ordered) at nine stops; blue is far, red is near.
_TURBO = np.array(
    [
        (48, 18, 59),
        (70, 107, 227),
        (40, 187, 236),
        (49, 242, 153),
        (162, 252, 60),
        (237, 208, 58),
        (251, 128, 34),
        (208, 47, 5),
        (122, 4, 3),
    ],
    dtype=np.float64,
)


def relief(depth_mm: np.ndarray) -> np.ndarray:
    """Height above the plane fitted to the readings, in mm (0 where there is no reading).

    A dent of a millimetre on a part tilted by a centimetre is invisible in raw distance;
    against the part's own plane it is the most visible thing in the frame."""
    valid = depth_mm > 0
    height, width = depth_mm.shape
    step = max(1, int(np.ceil(max(height, width) / 128)))  # the plane needs few points
    ys, xs = np.nonzero(valid[::step, ::step])
    values = depth_mm[::step, ::step][ys, xs].astype(np.float64)
    design = np.column_stack([xs * step, ys * step, np.ones_like(values)])
    coefficients, *_ = np.linalg.lstsq(design, values, rcond=None)
    grid_y, grid_x = np.mgrid[0:height, 0:width]
    plane = coefficients[0] * grid_x + coefficients[1] * grid_y + coefficients[2]
    return np.where(valid, plane - depth_mm, 0.0)  # positive: nearer the camera than the plane


# Relief within this many mm of the plane is not stretched further: sensor noise stays calm.
MIN_RELIEF_SPAN_MM = 0.5


def colour_png(depth_mm: np.ndarray) -> bytes:
    """A false-colour PNG of a depth map for people: :func:`relief` on the turbo map, green
    on the part's plane, towards blue where recessed (a dent) and red where raised, scaled
    to the 98th percentile of the relief (at least ±0.5 mm); black where the camera had no
    reading. Same size as the map."""
    valid = depth_mm > 0
    height = relief(depth_mm)
    readings = np.abs(height[valid])
    span = max(float(np.percentile(readings, 98)) if readings.size else 0.0, MIN_RELIEF_SPAN_MM)
    # 0.1-0.9 of the map: its two ends are near black, which reads as "no reading".
    position = (0.5 + 0.4 * np.clip(height / span, -1.0, 1.0)) * (len(_TURBO) - 1)
    rgb = np.stack([np.interp(position, np.arange(len(_TURBO)), _TURBO[:, channel]) for channel in range(3)], axis=-1)
    rgb[~valid] = 0
    buffer = io.BytesIO()
    Image.fromarray(np.rint(rgb).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
