"""Confidence intervals for proportions measured on few images, written once for the
training library (calibration) and the worker (the metrics each version reports).

Wilson's score interval: unlike the normal approximation it stays inside [0, 1] and is
honest at 0 or n successes, which is exactly where a model on 20 labels sits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z_TWO_SIDED_95 = 1.959963984540054  # the reported 95 % intervals
Z_ONE_SIDED_95 = 1.6448536269514722  # "at least T, 95 % sure": the calibration's lower bound


def wilson_interval(successes: int, n: int, z: float = Z_TWO_SIDED_95) -> tuple[float, float]:
    """(low, high) for ``successes`` out of ``n``; (0, 1) when there is nothing measured."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, {n}], not {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_lower(successes: int, n: int, z: float = Z_ONE_SIDED_95) -> float:
    return wilson_interval(successes, n, z)[0]


def balanced_interval(per_class: Sequence[tuple[int, int]], z: float = Z_TWO_SIDED_95) -> tuple[float, float]:
    """Interval for a balanced accuracy (mean of per-class recalls), from ``(hits, n)`` per
    class: the mean of the per-class Wilson bounds, which is conservative (wider than the
    exact interval) because the classes' errors are independent."""
    bounds = [wilson_interval(hits, n, z) for hits, n in per_class if n > 0]
    if not bounds:
        return 0.0, 1.0
    return sum(b[0] for b in bounds) / len(bounds), sum(b[1] for b in bounds) / len(bounds)
