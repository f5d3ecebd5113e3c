"""Reads the wall-clock time that tests/support/rtsp_server.py's ``/clock`` mount writes
into every frame (40 black/white blocks across the top, milliseconds modulo 2**40)."""

from __future__ import annotations

import time

import numpy as np

CLOCK_BITS = 40
CLOCK_ROW = 8  # the middle of the 16-row band


def frame_time_ms(grey: np.ndarray) -> int:
    width = grey.shape[1] // CLOCK_BITS
    samples = grey[CLOCK_ROW, width // 2 : width * CLOCK_BITS : width][:CLOCK_BITS]
    value = 0
    for bit in samples > 128:
        value = value * 2 + int(bit)
    return value


def age_ms(grey: np.ndarray) -> float:
    """How long ago (ms) the camera made this frame."""
    return float((int(time.time() * 1000) - frame_time_ms(grey)) % (1 << CLOCK_BITS))
