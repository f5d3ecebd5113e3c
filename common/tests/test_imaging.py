import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from intellioptics_common.errors import ImageDecodeError, ImageTooLargeError
from intellioptics_common.imaging import ImageLimits, decode_image, encode_jpeg, sniff_format


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _gradient(width: int = 64, height: int = 48) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    rgb = np.stack(
        [np.tile(x, (height, 1)), np.full((height, width), 80, np.uint8), np.zeros((height, width), np.uint8)], axis=2
    )
    return Image.fromarray(rgb)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_decodes_every_supported_format_to_rgb(fmt):
    decoded = decode_image(_encode(_gradient(), fmt))
    assert decoded.format == fmt
    assert decoded.rgb.shape == (48, 64, 3)
    assert decoded.rgb.dtype == np.uint8
    # left is dark, right is bright in the red channel, whatever the codec
    assert decoded.rgb[:, -4:, 0].mean() > decoded.rgb[:, :4, 0].mean() + 150


def test_greyscale_palette_and_alpha_become_rgb():
    grey = decode_image(_encode(_gradient().convert("L"), "PNG"))
    assert grey.rgb.shape == (48, 64, 3)
    palette = decode_image(_encode(_gradient().convert("P"), "PNG"))
    assert palette.rgb.shape == (48, 64, 3)
    transparent = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert decode_image(_encode(transparent, "PNG")).rgb.min() == 255  # composited on white


def test_sixteen_bit_png_is_scaled_not_clipped():
    wide = Image.fromarray(np.full((10, 10), 30000, dtype=np.uint16))
    rgb = decode_image(_encode(wide, "PNG")).rgb
    assert 200 < rgb.mean() <= 255


def test_exif_orientation_is_applied():
    image = _gradient(64, 32)  # landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    data = _encode(image, "JPEG", exif=exif.tobytes())
    decoded = decode_image(data)
    assert decoded.rgb.shape[:2] == (64, 32)  # now portrait
    assert decoded.original_size == (64, 32)


@pytest.mark.parametrize(
    "payload",
    [b"", b"hello world, not an image", b"GIF89a" + b"\x00" * 40, b"\x00" * 100, b"<?xml version='1.0'?><svg/>"],
)
def test_non_images_are_refused_with_a_clear_message(payload):
    with pytest.raises(ImageDecodeError) as info:
        decode_image(payload)
    assert "JPEG" in info.value.public_message
    assert info.value.status_code == 400


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_images_are_refused(fmt):
    data = _encode(_gradient(256, 256), fmt)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data[: len(data) // 2])
    assert "truncated or malformed" in info.value.public_message


def test_corrupted_jpeg_body_is_refused():
    data = bytearray(_encode(_gradient(128, 128), "JPEG"))
    data[200:260] = b"\xff" * 60
    data = bytes(data[:-2])  # no end marker either
    with pytest.raises(ImageDecodeError):
        decode_image(data)


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares huge dimensions: the classic decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_before_decoding():
    bomb = _png_header_only(10_000, 10_000)  # 100 megapixels in ~1 KB
    assert len(bomb) < 2000
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(bomb)
    assert info.value.status_code == 413
    assert "10000x10000" in info.value.public_message


def test_extreme_side_refused():
    with pytest.raises(ImageTooLargeError):
        decode_image(_png_header_only(100_000, 2))


def test_byte_limit():
    data = _encode(_gradient(), "PNG")
    with pytest.raises(ImageTooLargeError):
        decode_image(data, ImageLimits(max_bytes=len(data) - 1))


def test_many_png_text_chunks_do_not_crash():
    image = _gradient(16, 16)
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for i in range(2000):
        info.add_text(f"k{i}", "v" * 50)
    decoded = decode_image(_encode(image, "PNG", pnginfo=info))
    assert decoded.rgb.shape == (16, 16, 3)


def test_draft_decodes_large_jpeg_at_reduced_scale():
    data = _encode(_gradient(1280, 960), "JPEG")
    full = decode_image(data)
    draft = decode_image(data, draft_size=(320, 320))
    assert full.rgb.shape == (960, 1280, 3)
    assert draft.rgb.shape[0] >= 320 and draft.rgb.shape[1] >= 320
    assert draft.rgb.shape[0] < 960


def test_sniff_and_encode_roundtrip():
    rgb = np.asarray(_gradient())
    data = encode_jpeg(rgb)
    assert sniff_format(data) == "JPEG"
    assert np.abs(decode_image(data).rgb.astype(int) - rgb.astype(int)).mean() < 4
