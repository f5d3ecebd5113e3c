"""Confidence arithmetic shared by the edge and the cloud.

Groundlight's rule: with ``p_out`` the OODD out-of-domain probability,
``adjusted = p_out * (1 / num_classes) + (1 - p_out) * primary_confidence``.
An image the OODD model finds foreign is pulled towards chance, so it falls below
any sensible threshold and escalates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from intellioptics_common.schemas import BinaryLabel

BINARY_CLASS_NAMES = (BinaryLabel.NO.value, BinaryLabel.YES.value)
_BINARY_ALIASES = {
    "YES": BinaryLabel.YES,
    "PASS": BinaryLabel.YES,
    "NO": BinaryLabel.NO,
    "FAIL": BinaryLabel.NO,
    "UNCLEAR": BinaryLabel.UNCLEAR,
    "NEEDS_REVIEW": BinaryLabel.UNCLEAR,
    "__UNSURE": BinaryLabel.UNCLEAR,
}


@dataclass(frozen=True)
class Prediction:
    label: str
    label_index: int
    confidence: float  # adjusted
    raw_primary_confidence: float
    p_out: float | None


def adjust_confidence(primary_confidence: float, p_out: float, num_classes: int) -> float:
    """Blend the primary confidence towards chance by the out-of-domain probability."""
    if num_classes < 1:
        raise ValueError("num_classes must be at least 1")
    p_out = min(max(p_out, 0.0), 1.0)
    return p_out * (1.0 / num_classes) + (1.0 - p_out) * primary_confidence


def predict_from_probabilities(
    probabilities: Sequence[float], class_names: Sequence[str], in_domain_score: float | None
) -> Prediction:
    """Pick the label, its raw confidence, and the OODD-adjusted confidence."""
    if len(probabilities) != len(class_names) or not class_names:
        raise ValueError("probabilities and class_names must have the same, non-zero length")
    index = max(range(len(probabilities)), key=lambda i: probabilities[i])
    raw = float(probabilities[index])
    p_out = None if in_domain_score is None else 1.0 - float(in_domain_score)
    adjusted = raw if p_out is None else adjust_confidence(raw, p_out, len(class_names))
    return Prediction(
        label=class_names[index], label_index=index, confidence=adjusted, raw_primary_confidence=raw, p_out=p_out
    )


def is_confident(confidence: float | None, threshold: float) -> bool:
    """A missing confidence is never confident (the SDK treats it the same way)."""
    return confidence is not None and confidence >= threshold


def normalize_binary_label(label: str) -> BinaryLabel:
    """Map YES/NO/UNCLEAR and the SDK's deprecated PASS/FAIL/NEEDS_REVIEW to a binary label."""
    try:
        return _BINARY_ALIASES[label.strip().upper()]
    except KeyError:
        raise ValueError(f"{label!r} is not a binary label; use YES, NO or UNCLEAR") from None
