"""COUNT and BOUNDING_BOX detectors: which labels train, and how a version is measured.

A label trains a detection model only when it says where every object is:

- BOUNDING_BOX with its rois, and NO_OBJECTS (no object, so nothing to box);
- a COUNT of N with N rois, and a COUNT of 0;
- a COUNT of N > 0 without rois says how many but not where: it is skipped and counted
  (``count_without_boxes``) so the version's record says why; reviewers box it on the
  review page, or the SDK sends ``rois`` with the count;
- GREATER_THAN_MAX (more than the detector answers) and UNCLEAR are skipped too.

A version is measured by the training library's detection figures (mAP@0.5, recall and
precision at its box threshold, count exact-match and mean absolute error, and the share
of counts answered at the detector's threshold with their accuracy), computed from
answers read through the common post-processor, the edge's own arithmetic. Promotion
reads its headline: count exact-match for COUNT, F1 of the boxes at IoU 0.3 for
BOUNDING_BOX; a tie is one image's worth.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from intellioptics_common.anomaly import Box
from intellioptics_common.detection import DetectionResult, DetectionSpec
from intellioptics_common.results import BOUNDING_BOX, NO_OBJECTS, UNCLEAR, count_from_label
from intellioptics_worker.cloud import DatasetExample
from intellioptics_worker.dataset import DatasetSelection, LabeledImage, latest_labels
from intellioptics_worker.errors import DatasetError

MATCH_IOU = 0.3  # a box "finds" an object at this overlap (the targets)


def select_boxed(examples: Iterable[DatasetExample], mode: str) -> DatasetSelection:
    """The latest label per image query that says where every object is (module docstring)."""
    kept: list[DatasetExample] = []
    skipped: Counter[str] = Counter()
    for example in latest_labels(examples):
        label = example.label.strip().upper()
        rois = example.rois or ()
        if label == UNCLEAR:
            skipped["unclear"] += 1
        elif mode == "COUNT":
            count = count_from_label(label)
            if count is None:
                skipped["greater_than_max" if label == "GREATER_THAN_MAX" else "unknown_label"] += 1
            elif count == 0:
                kept.append(replace(example, label="0", rois=()))
            elif len(rois) == count:
                kept.append(replace(example, label=str(count)))
            else:
                skipped["count_without_boxes"] += 1
        elif label == BOUNDING_BOX and rois:
            kept.append(replace(example, label=BOUNDING_BOX))
        elif label == NO_OBJECTS:
            kept.append(replace(example, label=NO_OBJECTS, rois=()))
        else:
            skipped["greater_than_max" if label == "GREATER_THAN_MAX" else "unknown_label"] += 1
    return DatasetSelection(tuple(kept), dict(skipped))


def check_boxes_trainable(selection: DatasetSelection, mode: str, min_images: int, min_objects: int) -> None:
    """A :class:`DatasetError` saying what to label when there is too little to train."""
    images = len(selection.examples)
    objects = sum(len(example.rois or ()) for example in selection.examples)
    if images < min_images or objects < min_objects:
        unboxed = selection.skipped.get("count_without_boxes", 0)
        hint = (
            f"; {unboxed} count label(s) without boxes do not train: send one roi per object with the count,"
            " or box them on the review page"
            if unboxed
            else ""
        )
        raise DatasetError(
            f"Not enough labels to train a {mode} detector: it needs at least {min_images} labeled images "
            f"with {min_objects} boxed objects in all (have {images} images, {objects} objects{hint})."
        )


def truths(image: LabeledImage, class_name: str) -> list[Box]:
    return [Box(left, top, right, bottom, 1.0, class_name) for left, top, right, bottom in image.boxes]


def kind(image: LabeledImage) -> str:
    """What a comparison set must cover: images with objects and images without."""
    return "objects" if image.boxes else "empty"


@dataclass(frozen=True)
class BoxMetrics:
    """One version's detection figures on a set of images (the :class:`~promotion.Measured` shape)."""

    mode: str
    figures: dict[str, Any]  # the training library's summary, plus f1_iou30
    threshold: float

    @property
    def n(self) -> int:
        return int(self.figures["images"])

    @property
    def headline_name(self) -> str:
        return "count exact-match" if self.mode == "COUNT" else f"F1 at IoU {MATCH_IOU:g}"

    @property
    def headline(self) -> float:
        key = "count_exact_match" if self.mode == "COUNT" else "f1_iou30"
        return float(self.figures[key] or 0.0)

    @property
    def tolerance(self) -> float:
        return 1.0 / max(1, self.n if self.mode == "COUNT" else int(self.figures["objects"]) or self.n)

    @property
    def confident_coverage(self) -> float:
        return float(self.figures.get("confident_coverage") or 0.0)

    @property
    def confident_accuracy(self) -> float | None:
        value = self.figures.get("confident_count_accuracy")
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        # ``n`` and ``confident_accuracy`` under the names every version's record uses.
        return {
            **self.figures,
            "n": self.n,
            "confident_accuracy": self.confident_accuracy,
            "threshold": self.threshold,
            "headline": self.headline_name,
        }


def measure_boxes(
    images: Sequence[LabeledImage],
    results: Sequence[DetectionResult],
    *,
    mode: str,
    class_name: str,
    spec: DetectionSpec,
    threshold: float,
) -> BoxMetrics:
    """``results[i]`` answers ``images[i]``; ``spec`` is the answering version's own."""
    from intellioptics_training.detection import summarise

    if len(images) != len(results) or not images:
        raise ValueError("measure_boxes needs one result per image, and at least one")
    figures = summarise(
        [result.candidates for result in results],
        [truths(image, class_name) for image in images],
        spec,
        (class_name,),
        threshold,
        np.array([result.confidence for result in results]),
    )
    recall, precision = figures.get("recall_iou30"), figures.get("precision_iou30")
    figures["f1_iou30"] = round(2 * recall * precision / (recall + precision), 4) if recall and precision else 0.0
    return BoxMetrics(mode, figures, threshold)
