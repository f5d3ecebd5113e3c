"""The one place that turns untrusted bytes into pixels.

Every part (edge API, inference, cloud, training) decodes through :func:`decode_image`
so that limits, EXIF orientation and colour conversion are identical everywhere.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps

from intellioptics_common.errors import ImageDecodeError, ImageTooLargeError

# Truncated files are errors, never silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
_EXIF_ORIENTATION = 0x0112
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
)


@dataclass(frozen=True)
class ImageLimits:
    """Refuse inputs before they cost memory: bytes first, then header-declared pixels."""

    max_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 16_384


DEFAULT_LIMITS = ImageLimits()


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray  # H x W x 3, uint8, EXIF orientation applied
    format: str
    original_size: tuple[int, int]  # (width, height) as stored, before any draft scaling

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def sniff_format(data: bytes) -> str | None:
    """Return the image format from magic bytes, or None when it is not one we accept."""
    for signature, fmt in _SIGNATURES:
        if data.startswith(signature):
            return fmt
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_image(
    data: bytes,
    limits: ImageLimits = DEFAULT_LIMITS,
    *,
    draft_size: tuple[int, int] | None = None,
) -> DecodedImage:
    """Decode JPEG/PNG/WebP/BMP bytes into an RGB array.

    ``draft_size`` (width, height) lets JPEG decode at a reduced scale that still covers
    that size; training and serving pass the same value so their pixels agree.
    """
    if not data:
        raise ImageDecodeError("The request body is empty; send the image bytes (JPEG, PNG, WebP or BMP).")
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(
            f"The image is {len(data)} bytes; the limit is {limits.max_bytes} bytes. Send a smaller or more compressed image."
        )
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageDecodeError("The body is not a supported image; send JPEG, PNG, WebP or BMP bytes.")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below is stricter than Pillow's bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[fmt])
            width, height = image.size
            _check_dimensions(width, height, limits)
            if draft_size is not None and fmt == "JPEG":
                image.draft("RGB", draft_size)
            image.load()
            if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                # Only rotated images pay for the transpose copy (most cameras write 1).
                image = ImageOps.exif_transpose(image) or image
            rgb = _to_rgb(image)
    except (ImageTooLargeError, ImageDecodeError):
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"The image declares too many pixels; the limit is {limits.max_pixels} pixels.", log_message=str(exc)
        ) from exc
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, IndexError, TypeError, KeyError) as exc:
        raise ImageDecodeError(
            f"The {fmt} image could not be decoded (truncated or malformed); send a complete, valid image file.",
            log_message=f"decode failed: {exc!r}",
        ) from exc
    return DecodedImage(rgb=rgb, format=fmt, original_size=(width, height))


def _check_dimensions(width: int, height: int, limits: ImageLimits) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError("The image has no pixels; send a valid image file.")
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"The image is {width}x{height} pixels; the limit is {limits.max_pixels} pixels "
            f"and {limits.max_side} per side. Downscale it before sending."
        )


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits instead of clipping to white.
        wide = np.asarray(image, dtype=np.uint32)
        peak = max(int(wide.max()), 1)
        grey = (wide * 255 // peak).astype(np.uint8) if peak > 255 else wide.astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency onto white, as a viewer would show it.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageDecodeError("The image has an unsupported pixel layout; send an RGB or greyscale image.")
    return rgb


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """Encode an RGB array as JPEG (used for stored copies and thumbnails)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
