"""Hostile inputs shared by the edge and cloud cases: image bombs, malformed files,
traversal ids and SQL metacharacters. Each is built here, from bytes, at test time."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG signature and IHDR claiming 10 gigapixels, with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def png_decompression_bomb(side: int = 8_000) -> bytes:
    """A real, complete greyscale PNG of side² pixels (64 MP) that compresses to ~70 KB."""
    raw = b"".join(b"\x00" + bytes(side) for _ in range(1))  # one filtered row
    idat = zlib.compress(raw * side, 9)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def png_deep_chunks(chunks: int = 20_000) -> bytes:
    """A 16x16 PNG with tens of thousands of ancillary chunks before its image data."""
    base = encode(np.zeros((16, 16, 3), np.uint8), "PNG")
    head, rest = base[:33], base[33:]  # signature + IHDR, then IDAT/IEND
    filler = b"".join(_png_chunk(b"tEXt", b"k\x00" + str(i).encode()) for i in range(chunks))
    return head + filler + rest


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def jpeg_header_bomb() -> bytes:
    """A real JPEG whose SOF0 header is rewritten to claim 65500 x 65500 pixels."""
    data = bytearray(encode(np.full((16, 16, 3), 120, np.uint8), "JPEG"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 65500, 65500)
    return bytes(data)


def hostile_images() -> dict[str, bytes]:
    """name -> body; none of them is an image a model should ever see."""
    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    jpeg, png, webp = encode(rgb, "JPEG"), encode(rgb, "PNG"), encode(rgb, "WEBP")
    riff_lie = bytearray(webp)
    struct.pack_into("<I", riff_lie, 4, 0x7FFFFFF0)  # RIFF size far beyond the body
    return {
        "empty": b"",
        "one_byte": b"\xff",
        "random_bytes": bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)),
        "text_as_image": b"<html><script>alert(1)</script></html>",
        "jpeg_truncated": jpeg[: len(jpeg) // 2],
        "jpeg_soi_only": b"\xff\xd8\xff",
        "jpeg_garbage_after_soi": b"\xff\xd8" + b"\x00\xff" * 512,
        "jpeg_header_bomb": jpeg_header_bomb(),
        "png_truncated": png[: len(png) // 2],
        "png_signature_only": png[:8],
        "png_bad_crc": png[:29] + b"\x00\x00\x00\x00" + png[33:],
        "png_header_bomb": png_header_bomb(),
        "png_decompression_bomb": png_decompression_bomb(),
        "webp_truncated": webp[: len(webp) // 2],
        "webp_riff_size_lie": bytes(riff_lie),
        "webp_header_only": webp[:12],
        "gif_header_only": b"GIF89a\xff\xff\xff\xff",
    }


def nasty_valid_images() -> dict[str, bytes]:
    """Valid images built to be expensive to parse: answered (or refused) quickly, never a 5xx."""
    return {"png_20000_text_chunks": png_deep_chunks()}


TRAVERSAL_IDS = (
    "../../../../etc/passwd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "det_..%2f..%2fcloud.db",
    "det_/../../etc/passwd",
    "....//....//etc/passwd",
    "det_%00",
    "C:%5Cwindows%5Cwin.ini",
)

SQL_METACHARACTERS = (
    "x'; DROP TABLE detectors; --",
    "' OR '1'='1",
    '" OR ""="',
    "1; SELECT pg_sleep(5)--",
    "robert'); DELETE FROM api_tokens;--",
    "%' AND 1=0 UNION SELECT token_hash FROM api_tokens--",
    "\\'; --",
)
