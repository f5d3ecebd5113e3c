"""Training data: an ImageFolder tree or an in-memory list of (image, label).

Binary labels are normalised by the common rule (YES/NO, PASS/FAIL; UNCLEAR is kept
but never trained on). Unreadable files are skipped and counted, never fatal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from intellioptics_common.confidence import BINARY_CLASS_NAMES, normalize_binary_label
from intellioptics_common.errors import ImageDecodeError, ImageTooLargeError
from intellioptics_common.imaging import decode_image
from intellioptics_common.model_package import InputSpec
from intellioptics_common.preprocessing import draft_size, resize_rgb
from intellioptics_training.errors import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
UNCLEAR = "UNCLEAR"


@dataclass(frozen=True)
class Sample:
    """One labelled image: ``image`` is encoded bytes or an HxWx3 uint8 array."""

    image: bytes | np.ndarray
    label: str
    name: str = ""


@dataclass
class Dataset:
    """Decoded images at model input size, with integer labels into ``class_names``."""

    rgb: list[np.ndarray]
    labels: np.ndarray
    class_names: tuple[str, ...]
    names: list[str] = field(default_factory=list)
    skipped: int = 0
    unclear: int = 0

    def class_counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(self.class_names)}


def read_image_folder(root: Path) -> list[Sample]:
    """``root/<label>/<file>`` → samples (bytes, label); unknown suffixes are ignored."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory")
    samples = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(Sample(path.read_bytes(), folder.name, str(path)))
    if not samples:
        raise DatasetError(f"{root} holds no images; expected {root}/<label>/*.jpg|png|webp|bmp")
    return samples


def normalize_label(label: str, mode: str) -> str:
    if mode == "binary":
        try:
            return normalize_binary_label(label).value
        except ValueError as exc:
            raise DatasetError(f"{label!r} is not a binary label; use folders YES and NO (or PASS/FAIL)") from exc
    return label


def prepare(
    samples: list[Sample],
    mode: str,
    spec: InputSpec,
    class_names: tuple[str, ...] | None = None,
    *,
    require_two_classes: bool = True,
) -> Dataset:
    """Decode and resize; drop UNCLEAR; refuse data a classifier cannot learn from."""
    if mode not in ("binary", "multiclass"):
        raise DatasetError(f"mode must be binary or multiclass, not {mode!r}")
    if mode == "binary":
        class_names = BINARY_CLASS_NAMES
    elif class_names is None:
        class_names = tuple(sorted({s.label for s in samples if s.label.upper() != UNCLEAR}))
    index = {name: i for i, name in enumerate(class_names)}
    rgb, labels, names = [], [], []
    skipped = unclear = 0
    for sample in samples:
        label = normalize_label(sample.label, mode)
        if label.upper() == UNCLEAR:
            unclear += 1
            continue
        if label not in index:
            raise DatasetError(f"label {label!r} is not one of the classes {list(class_names)}")
        try:
            if isinstance(sample.image, np.ndarray):
                pixels = np.asarray(sample.image, dtype=np.uint8)
                if pixels.ndim != 3 or pixels.shape[2] != 3:
                    raise ImageDecodeError("array images must be HxWx3 uint8")
            else:
                pixels = decode_image(sample.image, draft_size=draft_size(spec)).rgb
        except (ImageDecodeError, ImageTooLargeError):
            skipped += 1
            continue
        rgb.append(resize_rgb(pixels, spec))
        labels.append(index[label])
        names.append(sample.name)
    dataset = Dataset(rgb, np.asarray(labels, dtype=np.int64), tuple(class_names), names, skipped, unclear)
    if require_two_classes:
        present = [name for name, count in dataset.class_counts().items() if count > 0]
        if not rgb:
            raise DatasetError(f"no readable images ({skipped} unreadable skipped)")
        if len(present) < 2:
            raise DatasetError(
                f"training needs at least two classes with images; found only {present or 'none'} "
                f"({skipped} unreadable skipped)"
            )
    return dataset


def stratified_split(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held_out) with ``fraction`` of every class held out (at least one)."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    held: list[int] = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        k = max(1, round(len(members) * fraction)) if len(members) > 1 else 0
        held.extend(members[:k])
        train.extend(members[k:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(held, dtype=np.int64))


GOOD_FOLDERS = ("NO", "good", "GOOD", "PASS", "ok", "OK")


def read_good_images(root: Path) -> list[Sample]:
    """Good images for an anomaly detector: ``root/*.jpg|png``, or ``root/NO/``, or
    ``root/good/`` (other sub-folders, e.g. ``YES``, are not training data)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory")
    folders = [root, *(root / name for name in GOOD_FOLDERS if (root / name).is_dir())]
    samples = [
        Sample(path.read_bytes(), "NO", str(path))
        for folder in folders
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not samples:
        raise DatasetError(f"{root} holds no good images; put them in {root}/*.jpg|png, {root}/NO/ or {root}/good/")
    return samples


def prepare_good(samples: list[Sample], spec: InputSpec, *, allow_mixed_sizes: bool = False) -> Dataset:
    """Decode and resize good images; unreadable files are skipped and counted.

    Images of different sizes are refused unless allowed: stretched to one input size
    they show the texture at different scales, and the bank would learn that as normal.
    """
    rgb, names = [], []
    sizes: dict[tuple[int, int], int] = {}
    skipped = 0
    for sample in samples:
        try:
            if isinstance(sample.image, np.ndarray):
                pixels = np.asarray(sample.image, dtype=np.uint8)
                if pixels.ndim != 3 or pixels.shape[2] != 3:
                    raise ImageDecodeError("array images must be HxWx3 uint8")
            else:
                pixels = decode_image(sample.image).rgb
        except (ImageDecodeError, ImageTooLargeError):
            skipped += 1
            continue
        size = (int(pixels.shape[1]), int(pixels.shape[0]))
        sizes[size] = sizes.get(size, 0) + 1
        rgb.append(resize_rgb(pixels, spec))
        names.append(sample.name)
    if not rgb:
        raise DatasetError(f"no readable good images ({skipped} unreadable skipped)")
    if len(sizes) > 1 and not allow_mixed_sizes:
        listed = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sorted(sizes.items(), key=lambda kv: -kv[1]))
        raise DatasetError(
            f"the good images have {len(sizes)} different sizes: {listed}; use images from one camera "
            f"setup (or pass --allow-mixed-sizes to stretch them all to {spec.width}x{spec.height})"
        )
    return Dataset(rgb, np.zeros(len(rgb), dtype=np.int64), ("NO",), names, skipped)


def stratified_folds(labels: np.ndarray, folds: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train, evaluate)`` index pairs of a stratified k-fold split: every image is
    evaluated exactly once, every class is in every training part. ``k`` is capped by
    the smallest class; with fewer than two images in some class there is no split ([])."""
    counts = np.bincount(labels) if len(labels) else np.zeros(0, dtype=np.int64)
    present = counts[counts > 0]
    k = min(folds, int(present.min()) if len(present) else 0)
    if k < 2:
        return []
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for cls in np.flatnonzero(counts):
        members = rng.permutation(np.flatnonzero(labels == cls))
        # Continue the round-robin across classes so that small classes do not all land in fold 0.
        assignment[members] = (np.arange(len(members)) + offset) % k
        offset += len(members)
    everything = np.arange(len(labels))
    return [(everything[assignment != f], everything[assignment == f]) for f in range(k)]
