"""Cheap checks of an uploaded image before it costs anything (header only, no decode).

The inference service decodes the pixels once; the edge only needs to refuse what is
plainly wrong (empty, not an image, too many bytes or declared pixels) before it is
stored, queued or sent on.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

from intellioptics_common.errors import ImageDecodeError, ImageTooLargeError, UnsupportedMediaTypeError
from intellioptics_common.imaging import ImageLimits, sniff_format


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int


def check_content_type(content_type: str | None) -> str:
    value = (content_type or "").split(";")[0].strip().lower()
    if not value.startswith("image/"):
        raise UnsupportedMediaTypeError(
            f"Content-Type must be an image type such as image/jpeg (got {content_type or 'none'}); "
            "send the raw image bytes as the request body (or multipart/form-data with parts image and depth)."
        )
    return value


def probe_image(data: bytes, limits: ImageLimits) -> ImageHeader:
    if not data:
        raise ImageDecodeError("The request body is empty; send the image bytes (JPEG, PNG, WebP or BMP).")
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(f"The image is {len(data)} bytes; the limit is {limits.max_bytes} bytes.")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageDecodeError("The body is not a supported image; send JPEG, PNG, WebP or BMP bytes.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt]) as image:
                width, height = image.size
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"The image declares too many pixels; the limit is {limits.max_pixels}.") from exc
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, KeyError) as exc:
        raise ImageDecodeError(
            f"The {fmt} image header could not be read (truncated or malformed); send a complete, valid image file.",
            log_message=repr(exc),
        ) from exc
    if width <= 0 or height <= 0:
        raise ImageDecodeError("The image has no pixels; send a valid image file.")
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"The image is {width}x{height} pixels; the limit is {limits.max_pixels} pixels and "
            f"{limits.max_side} per side. Downscale it before sending."
        )
    return ImageHeader(format=fmt, width=width, height=height)
