"""Boxes and counts from a centre-heatmap detection model: the post-processor.

The model (``intellioptics train --mode bounding_box|count``) answers three maps on its
stride-8 grid: ``heatmap`` (N x C x H x W, the chance that an object of class c is
centred in the cell), ``box_size`` (N x 2 x H x W, log width and log height as image
fractions) and ``box_offset`` (N x 2 x H x W, where in the cell the centre lies, 0..1).
Decoding is here, in numpy, so every caller reads a package the same way:

- a candidate is a cell that is the maximum of its 3 x 3 neighbourhood and scores at
  least :data:`CANDIDATE_FLOOR`; candidates of one class that overlap by more than
  ``nms_iou`` keep only the higher;
- a box is a candidate at or above the detector's ``box_threshold``; the count is the
  number of boxes, capped at ``max_count``;
- the count's confidence is the chance that every candidate was decided right (each
  candidate's score mapped to the chance it is a real object by the package's
  ``candidate_a``/``candidate_b`` logistic, fitted out of fold), tempered by
  ``count_temperature`` so that, on out-of-fold images, answers at or above the
  detector's threshold were right at least that often (docs/training.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from intellioptics_common.anomaly import Box
from intellioptics_common.confidence import adjust_confidence
from intellioptics_common.errors import PackageError

CANDIDATE_FLOOR = 0.02
MAX_CANDIDATES = 100
HEATMAP = "heatmap"
BOX_SIZE = "box_size"
BOX_OFFSET = "box_offset"
OUTPUTS = (HEATMAP, BOX_SIZE, BOX_OFFSET)
_EPS = 1e-6


@dataclass(frozen=True)
class DetectionSpec:
    """How to read a detection primary: the thresholds and calibration baked in at training."""

    box_threshold: float = 0.3
    max_count: int = 10  # COUNT: the largest count answered; BOUNDING_BOX: max_num_bboxes
    nms_iou: float = 0.5
    candidate_a: float = 1.0  # P(real object) = sigmoid(a * logit(score) + b)
    candidate_b: float = 0.0
    count_temperature: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.box_threshold < 1.0:
            raise PackageError("pipeline_config detection.box_threshold must be between 0 and 1")
        if not 1 <= self.max_count <= MAX_CANDIDATES:
            raise PackageError(f"pipeline_config detection.max_count must be between 1 and {MAX_CANDIDATES}")
        if not 0.0 < self.nms_iou <= 1.0 or self.count_temperature <= 0:
            raise PackageError("pipeline_config detection.nms_iou must be in (0, 1] and count_temperature positive")

    @classmethod
    def from_dict(cls, data: Any) -> DetectionSpec:
        if not isinstance(data, dict):
            raise PackageError("pipeline_config detection must be a mapping")
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise PackageError(f"pipeline_config detection is invalid: {exc}") from exc


@dataclass(frozen=True)
class DetectionResult:
    """What a COUNT or BOUNDING_BOX detector answers for one image."""

    label: str  # COUNT: the count as text; BOUNDING_BOX: NO_OBJECTS / BOUNDING_BOX / GREATER_THAN_MAX
    count: int  # boxes at or above the threshold, capped at max_count
    greater_than_max: bool
    confidence: float  # OODD-adjusted, calibrated
    raw_confidence: float
    boxes: tuple[Box, ...]  # highest score first, at most max_count
    candidates: tuple[Box, ...]  # every decoded candidate (for mAP and for reviewers' pre-labels)

    def rois(self) -> list[dict[str, object]]:
        return [box.to_wire() for box in self.boxes]


def decode(
    heatmap: np.ndarray,
    box_size: np.ndarray,
    box_offset: np.ndarray,
    class_names: tuple[str, ...],
    nms_iou: float = 0.5,
    floor: float = CANDIDATE_FLOOR,
    limit: int = MAX_CANDIDATES,
) -> tuple[Box, ...]:
    """One image's maps (C x H x W, 2 x H x W, 2 x H x W) → candidates, highest score first."""
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 3 or heat.shape[0] != len(class_names):
        raise PackageError(f"a detection heatmap must be classes x H x W, got shape {heat.shape}")
    _, height, width = heat.shape
    padded = np.pad(heat, ((0, 0), (1, 1), (1, 1)), constant_values=-1.0)
    local_max = np.max(
        [padded[:, dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)],
        axis=0,
    )
    peaks = np.argwhere((heat >= local_max) & (heat >= floor))
    if not len(peaks):
        return ()
    scores = heat[peaks[:, 0], peaks[:, 1], peaks[:, 2]]
    order = np.argsort(-scores, kind="stable")[: limit * 2]
    size = np.exp(np.clip(np.asarray(box_size, dtype=np.float32), -8.0, 0.0))
    offset = np.clip(np.asarray(box_offset, dtype=np.float32), 0.0, 1.0)
    kept: list[Box] = []
    for index in order:
        c, y, x = (int(v) for v in peaks[index])
        cx = (x + float(offset[0, y, x])) / width
        cy = (y + float(offset[1, y, x])) / height
        w, h = float(size[0, y, x]), float(size[1, y, x])
        box = Box(
            max(0.0, cx - w / 2),
            max(0.0, cy - h / 2),
            min(1.0, cx + w / 2),
            min(1.0, cy + h / 2),
            float(scores[index]),
            class_names[c],
        )
        if all(other.label != box.label or iou(other, box) <= nms_iou for other in kept):
            kept.append(box)
            if len(kept) >= limit:
                break
    return tuple(kept)


def iou(a: Box, b: Box) -> float:
    inter_w = min(a.right, b.right) - max(a.left, b.left)
    inter_h = min(a.bottom, b.bottom) - max(a.top, b.top)
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    inter = inter_w * inter_h
    union = (a.right - a.left) * (a.bottom - a.top) + (b.right - b.left) * (b.bottom - b.top) - inter
    return float(inter / max(union, _EPS))


def candidate_probability(scores: np.ndarray, spec: DetectionSpec) -> np.ndarray:
    """The chance that a candidate with this score is a real object (fitted out of fold)."""
    s = np.clip(np.asarray(scores, dtype=np.float64), _EPS, 1 - _EPS)
    return 1.0 / (1.0 + np.exp(-(spec.candidate_a * np.log(s / (1 - s)) + spec.candidate_b)))


def raw_count_confidence(candidates: tuple[Box, ...], spec: DetectionSpec) -> float:
    """The chance that every candidate was decided right (kept when real, dropped when not)."""
    if not candidates:
        return 1.0 - _EPS
    scores = np.array([box.score for box in candidates])
    p = candidate_probability(scores, spec)
    right = np.where(scores >= spec.box_threshold, p, 1.0 - p)
    return float(np.clip(np.prod(right), _EPS, 1 - _EPS))


def temper(raw: float, temperature: float) -> float:
    """Pull a confidence towards 0.5 (temperature > 1) on its log-odds."""
    raw = min(max(raw, _EPS), 1 - _EPS)
    return float(1.0 / (1.0 + np.exp(-np.log(raw / (1 - raw)) / temperature)))


def interpret(
    heatmap: np.ndarray,
    box_size: np.ndarray,
    box_offset: np.ndarray,
    *,
    class_names: tuple[str, ...],
    spec: DetectionSpec,
    mode: str,
    in_domain: float | None = None,
) -> DetectionResult:
    """One image's model outputs → the typed result (``mode``: COUNT or BOUNDING_BOX)."""
    candidates = decode(heatmap, box_size, box_offset, class_names, spec.nms_iou)
    return from_candidates(candidates, spec=spec, mode=mode, in_domain=in_domain)


def from_candidates(
    candidates: tuple[Box, ...], *, spec: DetectionSpec, mode: str, in_domain: float | None = None
) -> DetectionResult:
    """Decoded candidates → the typed result; training reads its out-of-fold candidates
    through this too, so what it measures is what the edge answers."""
    boxes = tuple(box for box in candidates if box.score >= spec.box_threshold)
    over = len(boxes) > spec.max_count
    count = min(len(boxes), spec.max_count)
    raw = temper(raw_count_confidence(candidates, spec), spec.count_temperature)
    # Out of domain: pulled towards a coin flip, so it escalates at any useful threshold.
    confidence = raw if in_domain is None else adjust_confidence(raw, 1.0 - in_domain, 2)
    if mode == "COUNT":
        label = str(count)
    elif over:
        label = "GREATER_THAN_MAX"
    else:
        label = "BOUNDING_BOX" if boxes else "NO_OBJECTS"
    return DetectionResult(
        label=label,
        count=count,
        greater_than_max=over,
        confidence=float(confidence),
        raw_confidence=raw,
        boxes=boxes[: spec.max_count],
        candidates=candidates,
    )
