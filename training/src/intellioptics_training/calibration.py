"""Confidence that means what it says, from out-of-fold predictions.

Every image is scored by a model that never trained on it (cross-fitting), then the
temperature of the served model is chosen so that, at the detector's threshold T, the
answers it would have given on those images are right at least a share T of the time
with 95 % confidence: the one-sided Wilson lower bound of the confident set's accuracy
must reach T. That bound is a margin that shrinks as labels grow: 20 images cannot
prove 0.9 even if all are right (bound 0.85), so a model on 20 labels answers nothing
at T = 0.9; on 500 labels the bound sits close to the measured accuracy, and it answers
most.

The search starts at the temperature that fits the out-of-fold log-loss best and only
raises it: a higher temperature lowers every confidence, so the confident set shrinks
to the images with the widest margins (which, for a useful model, are the right ones).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from intellioptics_common.confidence import adjust_confidence
from intellioptics_common.intervals import Z_ONE_SIDED_95, wilson_lower

_NLL_GRID = np.exp(np.linspace(np.log(0.5), np.log(50.0), 80))
_MAX_TEMPERATURE = 1e3
# "Answer nothing": a logit margin of 200 becomes 0.02 (confidence 0.505), far below any
# threshold, while float32 still tells the classes apart, so the label and its ranking
# (ROC AUC) survive. A larger value would round every answer to a tie, read as class 0.
FLAT_TEMPERATURE = 1e4


@dataclass(frozen=True)
class Calibration:
    temperature: float
    nll_temperature: float
    threshold: float
    oof_n: int
    confident_n: int  # out-of-fold answers at or above T with the chosen temperature
    confident_correct: int
    confident_lower_bound: float | None  # one-sided 95 % Wilson bound; None when nothing is confident
    reason: str

    def to_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def adjusted_confidence(probabilities: np.ndarray, in_domain: np.ndarray | None) -> np.ndarray:
    """What the edge compares with T: the top probability pulled to chance by the OODD."""
    raw = probabilities.max(axis=1)
    if in_domain is None:
        return raw
    k = probabilities.shape[1]
    return np.array([adjust_confidence(float(c), 1.0 - float(d), k) for c, d in zip(raw, in_domain, strict=True)])


def nll_temperature(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(temperature, log-loss) that fit the out-of-fold predictions best."""
    best_t, best_loss = 1.0, float("inf")
    rows = np.arange(len(labels))
    for t in _NLL_GRID:
        loss = float(-np.log(np.clip(softmax(logits, float(t))[rows, labels], 1e-12, None)).mean())
        if loss < best_loss:
            best_t, best_loss = float(t), loss
    return best_t, best_loss


def calibrate(
    logits: np.ndarray, in_domain: np.ndarray | None, labels: np.ndarray, threshold: float, z: float = Z_ONE_SIDED_95
) -> Calibration:
    """Out-of-fold ``logits`` (N x K), OODD ``in_domain`` scores (N) and true ``labels``."""
    logits = np.asarray(logits, dtype=np.float64)
    start, _ = nll_temperature(logits, labels)
    correct = logits.argmax(axis=1) == labels
    for t in np.geomspace(start, _MAX_TEMPERATURE, 400):
        confident = adjusted_confidence(softmax(logits, float(t)), in_domain) >= threshold
        n, hits = int(confident.sum()), int(correct[confident].sum())
        bound = wilson_lower(hits, n, z) if n else None
        if bound is not None and bound >= threshold:
            reason = (
                f"{hits} of {n} confident out-of-fold answers right: at least {bound:.3f} "
                f"(95 % lower bound) >= threshold {threshold:g}"
            )
            return Calibration(float(t), start, threshold, len(labels), n, hits, bound, reason)
        if n == 0:
            break
    reason = (
        f"no out-of-fold answer can be shown right at least {threshold:g} of the time "
        f"on {len(labels)} labels: every answer escalates until more labels come"
    )
    # Flat, not just past the last out-of-fold answer: the served model is not the fold
    # models, and an answer it gives on a new image would be one nobody could vouch for.
    return Calibration(FLAT_TEMPERATURE, start, threshold, len(labels), 0, 0, None, reason)
