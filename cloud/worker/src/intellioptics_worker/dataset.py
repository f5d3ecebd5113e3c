"""From the cloud's labeled examples to a training set.

Only human labels that name one of the detector's classes train a model: UNCLEAR means
"a person could not tell", which is no evidence either way, so it is left out (counted).

A BINARY / MULTI_CLASS detector whose usable labels are at least half RGB + depth pairs
(the camera sends depth) trains a depth model (:func:`select_depth`); its images without
a depth map are left out and counted as ``no_depth``, like the other skipped labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from intellioptics_common.confidence import normalize_binary_label
from intellioptics_common.schemas import BinaryLabel
from intellioptics_worker.cloud import Corners, DatasetExample
from intellioptics_worker.errors import DatasetError


@dataclass(frozen=True)
class LabeledImage:
    image_query_id: str
    label: str
    image: bytes
    boxes: tuple[Corners, ...] = ()  # COUNT / BOUNDING_BOX: every object's box (none: no object)
    depth: bytes | None = None  # the depth map as sent (16-bit PNG or float32 .npy, mm)


@dataclass(frozen=True)
class DatasetSelection:
    """Which examples train, and why the others do not."""

    examples: tuple[DatasetExample, ...]
    skipped: dict[str, int]  # reason -> count
    depth: bool = False  # the examples are RGB + depth pairs: a depth model trains on them


def latest_labels(examples: Iterable[DatasetExample]) -> list[DatasetExample]:
    """The latest label of each image query (the cloud lists oldest first: later wins)."""
    return list({example.image_query_id: example for example in examples}.values())


def select_examples(examples: Iterable[DatasetExample], mode: str, class_names: Sequence[str]) -> DatasetSelection:
    """Keep the latest label per image query, in the detector's own class names."""
    kept: list[DatasetExample] = []
    skipped: Counter[str] = Counter()
    for example in latest_labels(examples):
        label = _canonical_label(example.label, mode, class_names)
        if label is None:
            skipped["unclear" if _is_unclear(example.label) else "unknown_class"] += 1
            continue
        kept.append(replace(example, label=label) if label != example.label else example)
    return DatasetSelection(tuple(kept), dict(skipped))


def select_depth(selection: DatasetSelection) -> DatasetSelection:
    """RGB + depth pairs when at least half the examples are pairs (the others are
    skipped as ``no_depth``); else the examples as they are, trained as RGB images."""
    paired = [example for example in selection.examples if example.depth_url is not None]
    if not paired or 2 * len(paired) < len(selection.examples):
        return selection
    skipped = dict(selection.skipped)
    if len(paired) < len(selection.examples):
        skipped["no_depth"] = skipped.get("no_depth", 0) + len(selection.examples) - len(paired)
    return DatasetSelection(tuple(paired), skipped, depth=True)


def _is_unclear(label: str) -> bool:
    return label.strip().upper() in {"UNCLEAR", "NEEDS_REVIEW", "__UNSURE"}


def _canonical_label(label: str, mode: str, class_names: Sequence[str]) -> str | None:
    if mode == "BINARY":
        try:
            value = normalize_binary_label(label)
        except ValueError:
            return None
        return None if value is BinaryLabel.UNCLEAR else value.value
    if _is_unclear(label):
        return None
    by_folded = {name.casefold(): name for name in class_names}
    return by_folded.get(label.strip().casefold())


def download_images(
    examples: Sequence[DatasetExample],
    fetch: Callable[[str], bytes],
    on_each: Callable[[int, int], None] | None = None,
    *,
    depth: bool = False,
) -> list[LabeledImage]:
    """The images (and with ``depth`` their depth maps) of the examples, in order."""
    images = []
    for index, example in enumerate(examples, start=1):
        image = fetch(example.image_url)
        depth_map = fetch(example.depth_url) if depth and example.depth_url is not None else None
        images.append(LabeledImage(example.image_query_id, example.label, image, example.rois or (), depth_map))
        if on_each is not None:
            on_each(index, len(examples))
    return images


def check_trainable(labels: Sequence[str], class_names: Sequence[str], min_per_class: int) -> dict[str, int]:
    """Class counts, or a :class:`DatasetError` that says what labels are missing."""
    counts = Counter(labels)
    short = {name: counts.get(name, 0) for name in class_names if counts.get(name, 0) < min_per_class}
    if short:
        wanted = ", ".join(f"{name}: {count}" for name, count in short.items())
        raise DatasetError(
            f"Not enough labels to train: every class needs at least {min_per_class} human labels "
            f"(have {wanted}; UNCLEAR labels do not count)."
        )
    return {name: counts[name] for name in class_names}
