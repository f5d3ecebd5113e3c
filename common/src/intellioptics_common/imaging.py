"""The one place that turns untrusted bytes into pixels.

Every part (edge API, inference, cloud, training) decodes through :func:`decode_image`
so that limits, EXIF orientation and colour conversion are identical everywhere.

Memory follows the model, not the file (issue 11): a 38 KB PNG can declare 6300x6300
pixels, and the old path then held it in four full-size copies (mode L, RGB, the array,
the resize input: about 414 MiB). With ``draft_size`` a JPEG decodes at a reduced DCT
scale and any other format is box-reduced (``Image.reduce``) in its own mode right after
decoding, before colour conversion, so only the decoder's own buffer is full size.
Concurrent decodes share a pixel budget (``ImageLimits.max_pixels_in_flight``): a
decode that does not fit waits for others to finish, so eight such images at once cost
what one does. After a large decode the C heap is trimmed (``malloc_trim`` on glibc),
because freed 16 MB image blocks otherwise stay in the process's RSS.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import numpy as np
from PIL import Image, ImageFile, ImageOps

from intellioptics_common.errors import ImageDecodeError, ImageTooLargeError, ServiceUnavailableError

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
    # Pixels (as decoded, after the JPEG draft) all concurrent decodes of a process may
    # hold; one image larger than this still decodes, alone. 0 turns the budget off.
    max_pixels_in_flight: int = 48_000_000
    # How long a decode waits for room in the budget before a 503.
    budget_wait_s: float = 10.0


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
            image: Image.Image = Image.open(io.BytesIO(data), formats=[fmt])
            width, height = image.size
            _check_dimensions(width, height, limits)
            if draft_size is not None and fmt == "JPEG":
                image.draft("RGB", draft_size)
            with _BUDGET.hold(image.size[0] * image.size[1], limits):
                image.load()
                # Wide greyscale scales by the peak of the whole image, measured before any reduction.
                # (a one-band image: its extrema are two numbers)
                peak = int(cast(float, image.getextrema()[1])) if image.mode in _WIDE_GREY else None
                if draft_size is not None:
                    image = _reduce(image, draft_size)
                if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                    # Only rotated images pay for the transpose copy (most cameras write 1).
                    image = ImageOps.exif_transpose(image) or image
                rgb = _to_rgb(image, peak)
                del image
    except (ImageTooLargeError, ImageDecodeError, ServiceUnavailableError):
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


_REDUCIBLE = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "I", "F", "CMYK", "YCbCr"})


def _reduce(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Box-reduce to at least twice ``target`` in the image's own mode, before any colour
    conversion; palette, 1-bit and 16-bit images are widened first (averaging palette
    indices or bits would be wrong)."""
    # Half the factor that would just cover ``target``: the final bilinear resize then
    # still averages about 2x2 reduced pixels, which keeps the tensor within ~0.2 grey
    # levels (mean) of the full-size path (the JPEG draft's own difference is ~0.3).
    factor = min(image.size[0] // max(target[0], 1), image.size[1] // max(target[1], 1)) // 2
    if factor < 2:
        return image
    if image.mode not in _REDUCIBLE:
        if image.mode in ("P", "PA"):
            transparent = image.mode == "PA" or "transparency" in image.info
            image = image.convert("RGBA" if transparent else "RGB")
        elif image.mode == "1":
            image = image.convert("L")
        elif image.mode.startswith("I;16"):
            image = image.convert("I")
        else:
            return image
    reduced = image.reduce(factor)
    reduced.info = dict(image.info)  # keeps EXIF (orientation) for the transpose after
    return reduced


class _PixelBudget:
    """Pixels held by the decodes running in this process (one per process: the budget
    is about this process's memory)."""

    _TRIM_AFTER_PIXELS = 4_000_000

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._in_flight = 0
        self._large_done = False
        self._libc = _glibc()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextmanager
    def hold(self, pixels: int, limits: ImageLimits) -> Iterator[None]:
        cap = limits.max_pixels_in_flight
        if cap <= 0:
            yield
            return
        deadline = time.monotonic() + limits.budget_wait_s
        with self._condition:
            # Alone, any image within max_pixels decodes; with others it must fit.
            while self._in_flight and self._in_flight + pixels > cap:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServiceUnavailableError(
                        "The service is busy decoding other large images; retry shortly or send a smaller image."
                    )
                self._condition.wait(left)
            self._in_flight += pixels
        try:
            yield
        finally:
            with self._condition:
                self._in_flight -= pixels
                self._large_done = self._large_done or pixels >= self._TRIM_AFTER_PIXELS
                trim = self._large_done and self._in_flight == 0
                if trim:
                    self._large_done = False
                self._condition.notify_all()
            if trim:
                self.release_memory()

    def release_memory(self) -> None:
        """Give freed heap pages back to the OS (glibc keeps them otherwise)."""
        if self._libc is not None:
            self._libc.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_BUDGET = _PixelBudget()


def _check_dimensions(width: int, height: int, limits: ImageLimits) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError("The image has no pixels; send a valid image file.")
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"The image is {width}x{height} pixels; the limit is {limits.max_pixels} pixels "
            f"and {limits.max_side} per side. Downscale it before sending."
        )


_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I")


def _to_rgb(image: Image.Image, peak: int | None = None) -> np.ndarray:
    if image.mode in _WIDE_GREY:
        # 16-bit greyscale: scale to 8 bits instead of clipping to white.
        wide = np.asarray(image, dtype=np.uint32)
        peak = max(int(wide.max()) if peak is None else peak, 1)
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
