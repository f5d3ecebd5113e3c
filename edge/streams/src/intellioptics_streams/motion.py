"""Motion gating: the share of pixels of a small grey thumbnail that changed.

Compared with the last *submitted* frame, not the previous one: a slow drift (a door
closing over many frames) adds up and is submitted once it is large enough.
"""

from __future__ import annotations

import numpy as np

THUMBNAIL_SIZE = (64, 48)  # width, height: enough for motion, ~3 000 pixels to compare
# A pixel has changed when its grey level moved by more than this (0-255): above sensor
# noise and H.264 artefacts of a still scene.
PIXEL_DELTA = 25


def changed_share(reference: np.ndarray, current: np.ndarray) -> float:
    """Share (0-1) of pixels whose grey level differs by more than PIXEL_DELTA."""
    difference = np.abs(reference.astype(np.int16) - current.astype(np.int16))
    return float(np.count_nonzero(difference > PIXEL_DELTA)) / difference.size


class MotionGate:
    """Says whether a frame moved enough since the last submitted one."""

    def __init__(self, threshold: float | None) -> None:
        self.threshold = threshold
        self._reference: np.ndarray | None = None

    def should_submit(self, thumbnail: np.ndarray) -> bool:
        if self.threshold is None:
            return True
        if self._reference is not None and changed_share(self._reference, thumbnail) < self.threshold:
            return False
        self._reference = thumbnail
        return True
