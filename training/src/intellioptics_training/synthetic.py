"""A hard, deterministic development set: subtle defects on textured surfaces.

Nothing is committed as images; tests and the bench generate what they need by seed.
Surfaces are procedural (brushed metal, wood grain, woven fabric, concrete, leather)
or crops of the real texture photos scikit-image ships (brick, grass, gravel), with
random scale, orientation, tint and lighting. Defects (thin cracks, scratches, small
stains, pits) are low-contrast, small and anywhere in the frame, so a classifier on a
globally pooled embedding sees little difference: that is the point.

Binary: ``YES`` = the surface has a defect, ``NO`` = clean. Multiclass: the defect type
or ``clean``. OOD: unrelated photos (scikit-image's bundled photos plus generated
scenes) that a detector of surfaces has never seen.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

SIZE = 320
SURFACES = ("metal", "wood", "fabric", "concrete", "leather", "brick", "grass", "gravel")
DEFECTS = ("crack", "scratch", "stain", "pits")
MULTICLASS_NAMES = ("clean", *DEFECTS)
OOD_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "camera",
    "rocket",
    "horse",
    "hubble_deep_field",
    "coins",
    "moon",
    "page",
)

Rng = np.random.Generator


@dataclass(frozen=True)
class GeneratedImage:
    rgb: np.ndarray  # SIZE x SIZE x 3 uint8
    label: str
    surface: str


# ---------------------------------------------------------------- surfaces
def _smooth_noise(rng: Rng, sigma: float, size: int = SIZE) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-8)


def _metal(rng: Rng) -> np.ndarray:
    streaks = ndimage.gaussian_filter1d(rng.normal(size=(SIZE, SIZE)), rng.uniform(15, 50), axis=1, mode="wrap")
    streaks = streaks / (streaks.std() + 1e-8)
    grey = 0.55 + 0.05 * streaks + 0.03 * _smooth_noise(rng, 40) + 0.015 * rng.normal(size=(SIZE, SIZE))
    tint = np.array([1.0, 1.0, 1.0]) + rng.uniform(-0.04, 0.04, 3)
    return grey[..., None] * tint


def _wood(rng: Rng) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    warp = rng.uniform(0.02, 0.06) * _smooth_noise(rng, 30)
    rings = np.sin(2 * np.pi * (rng.uniform(8, 20) * (y + warp) + 0.3 * x * rng.uniform(-1, 1)))
    grain = 0.5 + 0.5 * rings + 0.15 * _smooth_noise(rng, 2)
    light, dark = np.array([0.72, 0.52, 0.32]), np.array([0.48, 0.30, 0.16])
    shade = rng.uniform(0.8, 1.15)
    return shade * (dark + (light - dark) * np.clip(grain, 0, 1)[..., None])


def _fabric(rng: Rng) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    period = rng.uniform(5, 10)
    warp = np.sin(2 * np.pi * x / period)
    weft = np.sin(2 * np.pi * y / period)
    over = np.sign(np.sin(np.pi * x / period) * np.sin(np.pi * y / period))
    weave = 0.5 + 0.25 * np.where(over > 0, warp, weft) + 0.08 * rng.normal(size=(SIZE, SIZE))
    color = np.array([0.35, 0.45, 0.6])[rng.permutation(3)] * rng.uniform(0.8, 1.3)
    return weave[..., None] * color * 1.3


def _concrete(rng: Rng) -> np.ndarray:
    base = 0.55 + 0.06 * _smooth_noise(rng, 25) + 0.05 * _smooth_noise(rng, 4) + 0.04 * rng.normal(size=(SIZE, SIZE))
    specks = ndimage.gaussian_filter((rng.random((SIZE, SIZE)) < 0.004).astype(float), 1.2) * rng.uniform(2, 5)
    grey = base - specks * rng.choice([-1, 1])
    return grey[..., None] * (1 + rng.uniform(-0.05, 0.05, 3))


def _leather(rng: Rng) -> np.ndarray:
    seeds = rng.random((SIZE, SIZE)) < rng.uniform(0.004, 0.01)
    distance = ndimage.distance_transform_edt(~seeds)
    cells = np.sqrt(distance / (distance.max() + 1e-8))
    surface = 0.5 + 0.2 * cells + 0.05 * _smooth_noise(rng, 1.5)
    color = np.array([0.45, 0.28, 0.18]) * rng.uniform(0.5, 1.6)
    return surface[..., None] * color * 1.4


def _photo_texture(name: str) -> Callable[[Rng], np.ndarray]:
    def make(rng: Rng) -> np.ndarray:
        import skimage.data

        photo = getattr(skimage.data, name)().astype(np.float64) / 255.0
        crop = int(rng.integers(220, 512))
        top, left = (int(v) for v in rng.integers(0, 512 - crop + 1, 2))
        patch = Image.fromarray((photo[top : top + crop, left : left + crop] * 255).astype(np.uint8))
        patch_arr = np.asarray(patch.resize((SIZE, SIZE), Image.Resampling.BILINEAR), dtype=np.float64) / 255.0
        tint = 1 + rng.uniform(-0.1, 0.1, 3)
        return patch_arr[..., None] * tint

    return make


_SURFACE_MAKERS: dict[str, Callable[[Rng], np.ndarray]] = {
    "metal": _metal,
    "wood": _wood,
    "fabric": _fabric,
    "concrete": _concrete,
    "leather": _leather,
    "brick": _photo_texture("brick"),
    "grass": _photo_texture("grass"),
    "gravel": _photo_texture("gravel"),
}


def make_surface(rng: Rng, surface: str) -> np.ndarray:
    """A clean surface with random orientation and uneven lighting, float HxWx3 in ~[0, 1]."""
    img = _SURFACE_MAKERS[surface](rng)
    img = np.rot90(img, int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        img = img[:, ::-1]
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    angle = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0.0, 0.25) * ((x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle))
    return np.ascontiguousarray(img * light[..., None])


# ---------------------------------------------------------------- defects
def _line_mask(points: list[tuple[float, float]], width: float) -> np.ndarray:
    """Anti-aliased polyline mask (drawn at 4x, then averaged down)."""
    scale = 4
    canvas = Image.new("L", (SIZE * scale, SIZE * scale), 0)
    draw = ImageDraw.Draw(canvas)
    draw.line([(x * scale, y * scale) for x, y in points], fill=255, width=max(1, round(width * scale)), joint="curve")
    mask = np.asarray(canvas, dtype=np.float64).reshape(SIZE, scale, SIZE, scale).mean(axis=(1, 3)) / 255.0
    return mask


def _crack(rng: Rng) -> np.ndarray:
    x, y = rng.uniform(30, SIZE - 30, 2)
    heading = rng.uniform(0, 2 * np.pi)
    points = [(x, y)]
    for _ in range(int(rng.integers(8, 20))):
        heading += rng.normal(0, 0.5)
        step = rng.uniform(4, 9)
        x, y = x + step * np.cos(heading), y + step * np.sin(heading)
        points.append((float(x), float(y)))
    return _line_mask(points, rng.uniform(1.0, 2.0))


def _scratch(rng: Rng) -> np.ndarray:
    x, y = rng.uniform(20, SIZE - 20, 2)
    heading = rng.uniform(0, np.pi)
    length = rng.uniform(50, 130)
    bend = rng.normal(0, 0.15)
    points = []
    for t in np.linspace(0, 1, 12):
        h = heading + bend * t
        points.append((float(x + t * length * np.cos(h)), float(y + t * length * np.sin(h))))
    return _line_mask(points, rng.uniform(0.8, 1.5))


def _stain(rng: Rng) -> np.ndarray:
    cy, cx = rng.uniform(25, SIZE - 25, 2)
    ry, rx = rng.uniform(6, 15, 2)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    blob = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 + 0.3 * _smooth_noise(rng, 4)
    return np.clip(1.2 - blob, 0, 1) ** 0.7


def _pits(rng: Rng) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE))
    cy, cx = rng.uniform(30, SIZE - 30, 2)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    for _ in range(int(rng.integers(2, 6))):
        py, px = cy + rng.normal(0, 12), cx + rng.normal(0, 12)
        radius = rng.uniform(1.2, 2.8)
        mask = np.maximum(mask, np.clip(radius + 0.5 - np.hypot(y - py, x - px), 0, 1))
    return mask


_DEFECT_MAKERS: dict[str, Callable[[Rng], np.ndarray]] = {
    "crack": _crack,
    "scratch": _scratch,
    "stain": _stain,
    "pits": _pits,
}


def apply_defect(rng: Rng, img: np.ndarray, defect: str, strength: float = 1.0) -> np.ndarray:
    """Darken (cracks, pits, stains) or lighten (scratches, some stains) a small area, at
    a contrast tied to the local texture so the defect stays subtle on every surface."""
    return apply_defect_masked(rng, img, defect, strength)[0]


def apply_defect_masked(rng: Rng, img: np.ndarray, defect: str, strength: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`apply_defect` that also returns the defect's soft mask (HxW in [0, 1])."""
    mask = _DEFECT_MAKERS[defect](rng)
    local = float(np.std(img))
    contrast = strength * rng.uniform(1.2, 2.2) * max(local, 0.06)
    if defect == "scratch":
        sign = 1.0 if rng.random() < 0.7 else -1.0
    elif defect == "stain":
        sign = -1.0 if rng.random() < 0.7 else 1.0
        tint = 1 + rng.uniform(-0.3, 0.3, 3)
        return img + sign * contrast * 0.7 * mask[..., None] * tint, mask
    else:
        sign = -1.0
    return img + sign * contrast * mask[..., None], mask


def _finish(rng: Rng, img: np.ndarray) -> np.ndarray:
    """Sensor noise and a slight blur, the same for clean and defective images."""
    img = img + rng.normal(0, rng.uniform(0.005, 0.02), img.shape)
    if rng.random() < 0.5:
        img = ndimage.gaussian_filter(img, (0.6, 0.6, 0))
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------- OOD scenes
def _ood_photo(rng: Rng, index: int) -> np.ndarray:
    import skimage.data

    name = OOD_PHOTOS[index % len(OOD_PHOTOS)]
    photo = np.asarray(getattr(skimage.data, name)())
    if photo.dtype == bool:
        photo = photo.astype(np.uint8) * 255
    if photo.ndim == 2:
        photo = np.repeat(photo[..., None], 3, axis=2)
    photo = photo[..., :3].astype(np.uint8)
    h, w = photo.shape[:2]
    frac = rng.uniform(0.6, 1.0)
    ch, cw = int(h * frac), int(w * frac)
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = Image.fromarray(photo[top : top + ch, left : left + cw]).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    out = np.asarray(crop)
    return out[:, ::-1].copy() if rng.random() < 0.5 else out


def _ood_scene(rng: Rng) -> np.ndarray:
    """A made-up scene: sky gradient, ground, and a few solid objects."""
    canvas = Image.new("RGB", (SIZE, SIZE))
    draw = ImageDraw.Draw(canvas)
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    horizon = int(rng.integers(SIZE // 3, 2 * SIZE // 3))
    for row in range(SIZE):
        t = row / SIZE
        color = tuple(int(v) for v in (1 - t) * top + t * bottom)
        draw.line([(0, row), (SIZE, row)], fill=color if row < horizon else tuple(c // 2 for c in color))
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = (int(v) for v in rng.integers(0, SIZE - 40, 2))
        x1, y1 = x0 + int(rng.integers(20, 160)), y0 + int(rng.integers(20, 160))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=fill)
    return np.asarray(canvas)


# ---------------------------------------------------------------- public API
def generate(
    kind: str, n_per_class: int, seed: int, strength: float = 1.0, surface: str | None = None
) -> Iterator[GeneratedImage]:
    """Yield images in a fixed order; the same (kind, n, seed) always gives the same pixels.

    ``surface`` fixes one surface for every image (a line inspects one kind of part);
    by default each image draws its own."""
    if surface is not None and surface not in SURFACES:
        raise ValueError(f"surface must be one of {', '.join(SURFACES)}, not {surface!r}")
    if kind == "ood":
        for i in range(n_per_class):
            rng = np.random.default_rng([seed, 99, i])
            if i % 3 == 2:
                yield GeneratedImage(_ood_scene(rng), "OOD", "scene")
            else:
                yield GeneratedImage(_ood_photo(rng, i), "OOD", "photo")
        return
    labels: tuple[str, ...]
    if kind == "binary":
        labels = ("NO", "YES")
    elif kind == "multiclass":
        labels = MULTICLASS_NAMES
    else:
        raise ValueError(f"kind must be binary, multiclass or ood, not {kind!r}")
    for i in range(n_per_class):
        for class_index, label in enumerate(labels):
            rng = np.random.default_rng([seed, class_index, i])
            drawn = SURFACES[int(rng.integers(0, len(SURFACES)))]
            img = make_surface(rng, surface or drawn)
            if label in ("YES", *DEFECTS):
                defect = label if label in DEFECTS else DEFECTS[int(rng.integers(0, len(DEFECTS)))]
                img = apply_defect(rng, img, defect, strength)
            yield GeneratedImage(_finish(rng, img), label, surface or drawn)


@dataclass(frozen=True)
class MaskedImage:
    """An image of one surface with the ground truth of where its defect is."""

    rgb: np.ndarray  # SIZE x SIZE x 3 uint8
    label: str  # "NO" (good) or "YES" (defect)
    surface: str
    defect: str | None
    mask: np.ndarray  # SIZE x SIZE bool, all False for good images


def generate_anomaly(
    surface: str, n_good: int, n_defect: int, seed: int, strength: float = 1.0
) -> Iterator[MaskedImage]:
    """Good images, then defect images with pixel masks, all of one surface (an anomaly
    detector learns one line's part). A mask pixel is defective where the defect changes
    the surface by at least a quarter of its full contrast."""
    if surface not in SURFACES:
        raise ValueError(f"surface must be one of {', '.join(SURFACES)}, not {surface!r}")
    for i in range(n_good + n_defect):
        rng = np.random.default_rng([seed, 7, i])
        img = make_surface(rng, surface)
        if i < n_good:
            yield MaskedImage(_finish(rng, img), "NO", surface, None, np.zeros((SIZE, SIZE), dtype=bool))
            continue
        defect = DEFECTS[i % len(DEFECTS)]
        img, mask = apply_defect_masked(rng, img, defect, strength)
        yield MaskedImage(_finish(rng, img), "YES", surface, defect, mask >= 0.25)


def write_anomaly_dataset(
    out_dir: Path, surface: str, n_good: int, n_defect: int, seed: int, strength: float = 1.0
) -> int:
    """Write ``OUT/{NO,YES}/<surface>_<i>.png`` and ``OUT/masks/<same stem>.png`` (white =
    defect) for the defect images; returns the image count."""
    out_dir = Path(out_dir)
    count = 0
    for index, image in enumerate(generate_anomaly(surface, n_good, n_defect, seed, strength)):
        folder = out_dir / image.label
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{surface}_{seed}_{index:04d}"
        (folder / f"{stem}.png").write_bytes(encode_png(image.rgb))
        if image.label == "YES":
            (out_dir / "masks").mkdir(exist_ok=True)
            (out_dir / "masks" / f"{stem}.png").write_bytes(encode_png(image.mask.astype(np.uint8) * 255))
        count += 1
    return count


def write_dataset(
    out_dir: Path, kind: str, n_per_class: int, seed: int, strength: float = 1.0, surface: str | None = None
) -> int:
    """Write an ImageFolder tree (``OUT/<label>/<kind>_<i>.png``); returns the image count.
    ``surface``: one surface for every image (default: each draws its own)."""
    out_dir = Path(out_dir)
    counts: dict[str, int] = {}
    for image in generate(kind, n_per_class, seed, strength, surface):
        folder = out_dir / image.label
        folder.mkdir(parents=True, exist_ok=True)
        index = counts.get(image.label, 0)
        counts[image.label] = index + 1
        (folder / f"{image.surface}_{seed}_{index:04d}.png").write_bytes(encode_png(image.rgb))
    return sum(counts.values())


def encode_png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@dataclass(frozen=True)
class BoxedImage:
    """An image with its objects' true boxes in the YOLO convention."""

    rgb: np.ndarray  # SIZE x SIZE x 3 uint8
    surface: str
    boxes: tuple[tuple[int, float, float, float, float], ...]  # (class, cx, cy, w, h) as image fractions


def generate_detection(
    n: int, seed: int, strength: float = 1.0, surface: str | None = None, max_defects: int = 3
) -> Iterator[BoxedImage]:
    """Surfaces with 0..``max_defects`` defects each (class 0, "defect"), boxed where the
    defect changes the surface by at least a quarter of its contrast; defects do not
    overlap (a drawn one that would is drawn again elsewhere)."""
    if surface is not None and surface not in SURFACES:
        raise ValueError(f"surface must be one of {', '.join(SURFACES)}, not {surface!r}")
    for i in range(n):
        rng = np.random.default_rng([seed, 11, i])
        drawn = surface or SURFACES[int(rng.integers(0, len(SURFACES)))]
        img = make_surface(rng, drawn)
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(0, max_defects + 1))):
            for _attempt in range(6):
                defect = DEFECTS[int(rng.integers(0, len(DEFECTS)))]
                changed, mask = apply_defect_masked(rng, img, defect, strength)
                ys, xs = np.nonzero(mask >= 0.25)
                if not len(ys):
                    continue
                box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
                if any(_boxes_touch(box, other) for other in placed):
                    continue
                img = changed
                placed.append(box)
                break
        boxes = tuple(
            (0, (x0 + x1) / 2 / SIZE, (y0 + y1) / 2 / SIZE, (x1 - x0) / SIZE, (y1 - y0) / SIZE)
            for x0, y0, x1, y1 in placed
        )
        yield BoxedImage(_finish(rng, img), drawn, boxes)


def _boxes_touch(a: tuple[int, int, int, int], b: tuple[int, int, int, int], margin: int = 4) -> bool:
    return not (a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1])


def write_detection_dataset(out_dir: Path, n: int, seed: int, strength: float = 1.0, surface: str | None = None) -> int:
    """Write the Ultralytics/YOLO layout: ``OUT/images/<stem>.png``, ``OUT/labels/<stem>.txt``
    (``class cx cy w h`` per line, empty for no defect) and ``OUT/data.yaml`` naming the class."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    count = 0
    for index, image in enumerate(generate_detection(n, seed, strength, surface)):
        stem = f"{image.surface}_{seed}_{index:04d}"
        (out_dir / "images" / f"{stem}.png").write_bytes(encode_png(image.rgb))
        lines = "".join(f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for c, cx, cy, w, h in image.boxes)
        (out_dir / "labels" / f"{stem}.txt").write_text(lines)
        count += 1
    (out_dir / "data.yaml").write_text("names:\n  0: defect\n")
    return count
