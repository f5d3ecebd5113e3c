import io
import struct
import time
import zlib
from pathlib import Path

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


# --- reduced-size decoding and the pixel budget (issue 11, finding 9) ----------------


def _texture(width: int, height: int, seed: int = 3) -> Image.Image:
    """A photo-like test image: smooth gradients plus fine noise and sharp edges."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 128 + 60 * np.sin(x / 37.0) * np.cos(y / 23.0)
    stripes = 40 * ((x // 50 + y // 70) % 2)
    rgb = np.stack([base + stripes, base[::-1] * 0.8, 255 - base], axis=2) + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


_BACKBONE = Path(__file__).resolve().parents[2] / "data" / "backbones" / "efficientnet_lite0" / "backbone.onnx"


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP"])
def test_reduced_decode_matches_the_full_size_path(fmt):
    """Within the JPEG draft's own tolerance: ~1 grey level on a noisy, striped texture,
    and the real backbone's pooled features agree (cosine > 0.998; JPEG draft: 0.9995)."""
    from intellioptics_common.model_package import InputSpec
    from intellioptics_common.preprocessing import load_input_tensor, to_input_tensor

    spec = InputSpec(height=200, width=200)
    data = _encode(_texture(1600, 1200), fmt)
    reference = to_input_tensor(decode_image(data).rgb, spec)  # full size, then resize
    reduced = decode_image(data, draft_size=(spec.width, spec.height))
    assert reduced.original_size == (1600, 1200) and reduced.width == 534  # reduced by 3: >= 2x 200
    tensor = load_input_tensor(data, spec)
    grey_levels = np.abs(tensor - reference) * 128
    assert grey_levels.mean() < 1.5 and grey_levels.max() < 20, (grey_levels.mean(), grey_levels.max())
    if _BACKBONE.is_file():
        import onnxruntime as ort

        session = ort.InferenceSession(str(_BACKBONE), providers=["CPUExecutionProvider"])
        a, b = (session.run(["feat_head"], {"image": t})[0].mean(axis=(2, 3)).ravel() for t in (reference, tensor))
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.998


@pytest.mark.parametrize("mode", ["P", "1", "I;16", "RGBA", "L"])
def test_reduced_decode_widens_modes_that_cannot_be_averaged(mode):
    image = _texture(1280, 960).convert("L" if mode in ("1", "I;16") else "RGB")
    wide = mode == "I;16"
    image = Image.fromarray(np.asarray(image, dtype=np.uint16) * 200) if wide else image.convert(mode)
    data = _encode(image, "PNG")
    full = decode_image(data).rgb.astype(np.float32).mean()
    reduced = decode_image(data, draft_size=(160, 160))
    assert reduced.rgb.shape == (320, 427, 3) and reduced.rgb.dtype == np.uint8  # reduced by 3
    assert abs(reduced.rgb.astype(np.float32).mean() - full) < 3.0


def test_exif_orientation_survives_the_reduction():
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(_texture(1600, 800), "WEBP", exif=exif.tobytes())
    assert decode_image(data, draft_size=(200, 200)).rgb.shape[:2] == (800, 400)  # reduced by 2, portrait


def test_concurrent_decodes_wait_for_the_pixel_budget_then_get_a_503():
    from intellioptics_common.errors import ServiceUnavailableError
    from intellioptics_common.imaging import _BUDGET

    limits = ImageLimits(max_pixels_in_flight=1_000_000, budget_wait_s=0.3)
    data = _encode(_gradient(1000, 800), "PNG")  # 0.8 megapixels
    with _BUDGET.hold(800_000, limits):  # another decode of the same size is running
        start = time.monotonic()
        with pytest.raises(ServiceUnavailableError) as refused:
            decode_image(data, limits)
        assert time.monotonic() - start >= 0.3
        assert "busy decoding" in refused.value.public_message
        # Small images still fit next to it.
        assert decode_image(_encode(_gradient(), "PNG"), limits).rgb.shape == (48, 64, 3)
    assert _BUDGET.in_flight == 0
    # Alone, an image larger than the whole budget decodes (the budget never deadlocks).
    assert decode_image(data, ImageLimits(max_pixels_in_flight=100_000)).rgb.shape == (800, 1000, 3)


def test_eight_threads_never_hold_more_than_the_budget():
    import threading

    from intellioptics_common.imaging import _BUDGET

    limits = ImageLimits(max_pixels_in_flight=2_500_000)
    data = _encode(_gradient(1200, 1000), "PNG")  # 1.2 megapixels: two fit at a time
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _BUDGET.in_flight)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=decode_image, args=(data, limits)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    watcher.join()
    assert 1_200_000 <= peak <= 2_400_000 and _BUDGET.in_flight == 0
