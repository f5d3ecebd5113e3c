"""From the cloud's labeled examples to a training set.

Only human labels that name one of the detector's classes train a model: UNCLEAR means
"a person could not tell", which is no evidence either way, so it is left out (counted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class DatasetSelection:
    """Which examples train, and why the others do not."""

    examples: tuple[DatasetExample, ...]
    skipped: dict[str, int]  # reason -> count


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
        kept.append(
            DatasetExample(example.image_query_id, label, example.source, example.image_url)
            if label != example.label
            else example
        )
    return DatasetSelection(tuple(kept), dict(skipped))


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
) -> list[LabeledImage]:
    images = []
    for index, example in enumerate(examples, start=1):
        image = fetch(example.image_url)
        images.append(LabeledImage(example.image_query_id, example.label, image, example.rois or ()))
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
