"""Spend human labels well: hold back escalations a person would learn nothing new from.

Two checks run where the edge has decided to escalate an answer it is unsure of (answers
it is sure of, audits and queries that ask for a person themselves are untouched), each
an edge-config setting of the detector's ``edge_inference_config``:

- **near-duplicates**: a static camera sends the same scene again and again. An image
  within ``near_duplicate_distance`` bits (of 64) of one this detector escalated in the
  last ``near_duplicate_window_s`` seconds is answered by the edge model and not escalated
  again. Images are compared by a difference hash of a 9 x 8 grey thumbnail (robust to
  sensor noise and JPEG re-encoding, not to a part that moved); 0 s turns the check off;
- **a budget**: at most ``max_escalations_per_hour`` escalations per detector in any
  rolling hour; beyond it the edge model's answer stands.

A held-back answer is final (``done_processing: true``), is counted per detector and
reason (``/status``, ``intellioptics_edge_escalations_held_back_total``), and its
explanation says why it was not escalated.
"""

from __future__ import annotations

import io
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

NEAR_DUPLICATE = "near_duplicate"
ESCALATION_BUDGET = "escalation_budget"
_KEPT_PER_DETECTOR = 512  # escalated images remembered for the near-duplicate check
_HOUR_S = 3600.0


@dataclass(frozen=True)
class HeldBack:
    reason: str  # NEAR_DUPLICATE or ESCALATION_BUDGET
    detail: str  # for people: what it was like, or how much was spent


def difference_hash(image: bytes) -> int | None:
    """64 bits: is each pixel of a 9 x 8 grey thumbnail brighter than its right neighbour.
    None for bytes PIL cannot read (the model already read them: not expected)."""
    try:
        with Image.open(io.BytesIO(image)) as opened:
            opened.draft("L", (64, 64))  # JPEG: decode at 1/8 scale or less, not the full frame
            grey = opened.convert("L").resize((9, 8), Image.Resampling.BILINEAR)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError):
        return None
    pixels = grey.tobytes()
    bits = 0
    for row in range(8):
        for column in range(8):
            bits = (bits << 1) | (pixels[row * 9 + column] > pixels[row * 9 + column + 1])
    return bits


class EscalationGate:
    """Per detector: the escalated images of the window and the escalations of the hour."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._recent: dict[str, deque[tuple[float, int, str]]] = {}
        self._spent: dict[str, deque[float]] = {}

    def check(
        self,
        detector_id: str,
        image_query_id: str,
        image_hash: int | None,
        *,
        window_s: float,
        distance: int,
        per_hour: int | None,
    ) -> HeldBack | None:
        """None: escalate (and it is remembered); else why not."""
        now = self._clock()
        recent = self._recent.setdefault(detector_id, deque(maxlen=_KEPT_PER_DETECTOR))
        while recent and now - recent[0][0] > window_s:
            recent.popleft()
        if window_s > 0 and image_hash is not None:
            for at, other, earlier in reversed(recent):
                if (image_hash ^ other).bit_count() <= distance:
                    return HeldBack(NEAR_DUPLICATE, f"like {earlier}, escalated {now - at:.0f} s ago")
        spent = self._spent.setdefault(detector_id, deque())
        while spent and now - spent[0] > _HOUR_S:
            spent.popleft()
        if per_hour is not None and len(spent) >= per_hour:
            return HeldBack(ESCALATION_BUDGET, f"{len(spent)} escalations in the last hour, the budget is {per_hour}")
        if per_hour is not None:
            spent.append(now)
        if window_s > 0 and image_hash is not None:
            recent.append((now, image_hash, image_query_id))
        return None
