"""From the cloud's labeled examples to a training set, and how it is split for evaluation.

Only human labels that name one of the detector's classes train a model: UNCLEAR means
"a person could not tell", which is no evidence either way, so it is left out (counted).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from intellioptics_common.confidence import normalize_binary_label
from intellioptics_common.schemas import BinaryLabel
from intellioptics_worker.cloud import DatasetExample
from intellioptics_worker.errors import DatasetError


@dataclass(frozen=True)
class LabeledImage:
    image_query_id: str
    label: str
    image: bytes


@dataclass(frozen=True)
class DatasetSelection:
    """Which examples train, and why the others do not."""

    examples: tuple[DatasetExample, ...]
    skipped: dict[str, int]  # reason -> count


@dataclass(frozen=True)
class Fold:
    train: tuple[int, ...]
    evaluate: tuple[int, ...]


@dataclass(frozen=True)
class EvaluationPlan:
    """``holdout``: one stratified split, the registered model is the one trained on
    ``folds[0].train``. ``cv``: k folds give out-of-fold predictions for every image, and
    the registered model is trained on everything afterwards."""

    method: str  # "holdout" | "cv"
    folds: tuple[Fold, ...]

    @property
    def evaluation_indices(self) -> tuple[int, ...]:
        return tuple(sorted(i for fold in self.folds for i in fold.evaluate))


def select_examples(examples: Iterable[DatasetExample], mode: str, class_names: Sequence[str]) -> DatasetSelection:
    """Keep the latest label per image query, in the detector's own class names."""
    latest: dict[str, DatasetExample] = {}
    for example in examples:
        latest[example.image_query_id] = example  # the cloud lists oldest first: later wins
    kept: list[DatasetExample] = []
    skipped: Counter[str] = Counter()
    for example in latest.values():
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
        images.append(LabeledImage(example.image_query_id, example.label, fetch(example.image_url)))
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


def plan_evaluation(
    labels: Sequence[str],
    *,
    fresh: Sequence[bool],
    cv_min_per_class: int,
    cv_folds: int,
    holdout_fraction: float,
    seed: int,
) -> EvaluationPlan:
    """Stratified split. ``fresh[i]`` marks images the active model did not train on; the
    holdout takes those first, so the two models are compared on data neither has seen."""
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    for members in by_class.values():
        rng.shuffle(members)
    smallest = min(len(members) for members in by_class.values())
    if smallest >= cv_min_per_class:
        evaluate: list[int] = []
        for members in by_class.values():
            take = max(1, round(holdout_fraction * len(members)))
            ordered = sorted(members, key=lambda i: not fresh[i])  # stable: fresh first, shuffled within
            evaluate.extend(ordered[:take])
        held = set(evaluate)
        train = [i for i in range(len(labels)) if i not in held]
        return EvaluationPlan("holdout", (Fold(tuple(sorted(train)), tuple(sorted(evaluate))),))
    k = max(2, min(cv_folds, smallest))
    assignment = [0] * len(labels)
    offset = 0
    for members in by_class.values():
        # Continue the round-robin across classes so that small classes do not all land in fold 0.
        for position, index in enumerate(members):
            assignment[index] = (position + offset) % k
        offset += len(members)
    folds = []
    for fold in range(k):
        evaluate_fold = tuple(i for i in range(len(labels)) if assignment[i] == fold)
        train_fold = tuple(i for i in range(len(labels)) if assignment[i] != fold)
        folds.append(Fold(train_fold, evaluate_fold))
    return EvaluationPlan("cv", tuple(folds))
