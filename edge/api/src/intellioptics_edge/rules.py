"""The rule stage: cheap checks that may answer, or refuse an image, before the model runs.

A detector's ``rules:`` in edge-config is an ordered list. The first check that is *sure*
answers; when none is, the model answers (the design documents' "hybrid" method). A check
answers in one of two ways:

- ``action: escalate``: the image is unusable (too dark, overexposed, blurred, depth
  missing a region); the edge answers ``UNCLEAR`` and sends the image for review, since a
  model's answer on such an image would be a guess;
- ``action: answer``: a label with the check's confidence (an empty fixture is ``NO``; a
  bead height out of tolerance is ``YES``).

Image checks run on one grey decode at a reduced size (at most ``ANALYSIS_SIDE`` pixels on
the longer side, JPEG decoded straight at that scale), so their cost stays well under
5 ms on a 640x480 frame and does not grow with the camera's resolution. Thresholds of the
image checks are measured at that size; docs/edge-config.md gives their scales.

Depth checks read a depth map in millimetres (distance from the camera: a raised bead is
nearer) and measure inside a region of interest against the plane fitted to the region's
border, so a tilted part does not read as a height error.
"""

from __future__ import annotations

import io
import math
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Self

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from intellioptics_common.errors import ImageDecodeError

ANALYSIS_SIDE = 320  # longer side of the grey image the image checks look at
_THUMB = (64, 48)  # size at which "unchanged" compares, so sensor noise averages out
_BRIGHT = 250  # a pixel at or above this (of 255) counts as saturated
UNUSABLE_LABEL = "UNCLEAR"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Answering(_Strict):
    """What a check says when it fires: an unusable image, or a label."""

    action: Literal["escalate", "answer"] = "escalate"
    label: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    confidence: Annotated[float, Field(ge=0, le=1)] = 0.99

    @model_validator(mode="after")
    def _answer_needs_label(self) -> Self:
        if self.action == "answer" and self.label is None:
            raise ValueError("action: answer needs a label (the answer this check gives when it fires)")
        if self.action == "escalate" and self.label is not None:
            raise ValueError("action: escalate answers UNCLEAR; remove label or use action: answer")
        return self

    def labels(self) -> set[str]:
        return {self.label} if self.label else set()


class TooDarkRule(_Answering):
    check: Literal["too_dark"]
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.08  # mean brightness in [0, 1] below this fires


class OverexposedRule(_Answering):
    check: Literal["overexposed"]
    threshold: Annotated[float, Field(gt=0, le=1)] = 0.25  # share of saturated pixels above this fires


class BlurredRule(_Answering):
    check: Literal["blurred"]
    threshold: Annotated[float, Field(gt=0)] = 30.0  # variance of the Laplacian (0-255 grey) below this fires


class UnchangedRule(_Answering):
    check: Literal["unchanged"]
    reference: Annotated[str, Field(min_length=1)]  # an image file of the empty fixture
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.03  # mean absolute difference in [0, 1] below this fires

    @model_validator(mode="after")
    def _reference_exists(self) -> Self:
        if not Path(self.reference).is_file():
            raise ValueError(f"reference {self.reference!r} is not a file on the edge; give an absolute path")
        return self


ROI = tuple[
    Annotated[float, Field(ge=0, le=1)],
    Annotated[float, Field(ge=0, le=1)],
    Annotated[float, Field(ge=0, le=1)],
    Annotated[float, Field(ge=0, le=1)],
]


class _DepthMeasure(_Strict):
    """A measurement in a region against ``target_mm`` ± ``tolerance_mm``.

    Inside the tolerance by at least ``margin_mm`` answers ``pass_label``; outside it by at
    least ``margin_mm`` answers ``fail_label``; in between the check is not sure and the
    next stage decides. Without a depth map the check is skipped.
    """

    roi: ROI = (0.0, 0.0, 1.0, 1.0)  # left, top, right, bottom in [0, 1]
    target_mm: float
    tolerance_mm: Annotated[float, Field(gt=0)]
    margin_mm: Annotated[float, Field(ge=0)] = 0.0
    raised_mm: Annotated[float, Field(gt=0)] = 0.2  # higher than the base plane by this counts as raised
    pass_label: Annotated[str, Field(min_length=1)] = "NO"
    fail_label: Annotated[str, Field(min_length=1)] = "YES"
    confidence: Annotated[float, Field(ge=0, le=1)] = 0.95

    @model_validator(mode="after")
    def _roi_has_area(self) -> Self:
        left, top, right, bottom = self.roi
        if right <= left or bottom <= top:
            raise ValueError("roi must be [left, top, right, bottom] with left < right and top < bottom")
        return self

    def labels(self) -> set[str]:
        return {self.pass_label, self.fail_label}


class DepthHeightRule(_DepthMeasure):
    check: Literal["depth_height"]  # mean height of the raised region, in mm


class DepthWidthRule(_DepthMeasure):
    check: Literal["depth_width"]  # width of the raised region across the bead, in mm
    mm_per_pixel: Annotated[float, Field(gt=0)]
    along: Literal["horizontal", "vertical"] = "horizontal"  # the direction the bead runs


Rule = Annotated[
    TooDarkRule | OverexposedRule | BlurredRule | UnchangedRule | DepthHeightRule | DepthWidthRule,
    Field(discriminator="check"),
]


@dataclass(frozen=True)
class RuleVerdict:
    """A sure check: its answer, and what it measured (for the stored answer and review)."""

    check: str
    index: int
    escalate: bool
    label: str
    confidence: float
    measured: float
    elapsed_ms: float


@dataclass(frozen=True)
class RuleOutcome:
    verdict: RuleVerdict | None  # None: no check was sure, the model answers
    elapsed_ms: float


def analysis_image(data: bytes) -> np.ndarray:
    """The image as grey float32 (0-255), at most ``ANALYSIS_SIDE`` on its longer side."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                scale = ANALYSIS_SIDE / max(image.size)
                if scale < 1:
                    # JPEG: libjpeg decodes straight at 1/2, 1/4 or 1/8 of the size, grey only.
                    image.draft("L", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
                grey = image.convert("L")
                if max(grey.size) > ANALYSIS_SIDE:
                    scale = ANALYSIS_SIDE / max(grey.size)
                    size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
                    grey = grey.resize(size, Image.Resampling.BILINEAR)
                return np.asarray(grey, dtype=np.float32)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageDecodeError("The image could not be decoded for the rule stage; send a valid image file.") from exc


def laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: low on a blurred or featureless image."""
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    centre = grey[1:-1, 1:-1]
    lap = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4.0 * centre
    return float(lap.var())


def _thumbnail(grey: np.ndarray) -> np.ndarray:
    image = Image.fromarray(grey.astype(np.uint8), mode="L").resize(_THUMB, Image.Resampling.BOX)
    return np.asarray(image, dtype=np.float32)


def _roi_slice(shape: tuple[int, ...], roi: ROI) -> tuple[slice, slice]:
    height, width = shape[:2]
    left, top, right, bottom = roi
    x0, x1 = int(left * width), max(int(left * width) + 1, math.ceil(right * width))
    y0, y1 = int(top * height), max(int(top * height) + 1, math.ceil(bottom * height))
    return slice(y0, min(y1, height)), slice(x0, min(x1, width))


def height_above_base(depth_mm: np.ndarray, raised_mm: float = 0.2) -> np.ndarray:
    """Height (mm) of each pixel above the part's base plane (depth is distance: height = plane − depth).

    The plane is fitted to the region's border ring first, then refitted twice to every
    pixel that is not raised, so a bead that crosses the ring does not tilt it.
    """
    height, width = depth_mm.shape
    grid_y, grid_x = np.mgrid[0:height, 0:width]
    ring = max(1, min(height, width) // 10)
    use = np.zeros((height, width), dtype=bool)
    use[:ring, :] = use[-ring:, :] = True
    use[:, :ring] = use[:, -ring:] = True
    raised = np.zeros((height, width), dtype=np.float32)
    for _ in range(3):
        ys, xs = np.nonzero(use)
        design = np.column_stack([xs, ys, np.ones_like(xs)]).astype(np.float64)
        coeffs, *_ = np.linalg.lstsq(design, depth_mm[ys, xs].astype(np.float64), rcond=None)
        plane = coeffs[0] * grid_x + coeffs[1] * grid_y + coeffs[2]
        raised = (plane - depth_mm).astype(np.float32)
        use = raised < raised_mm
        if use.sum() < 3:
            break
    return raised


def measure_depth(rule: DepthHeightRule | DepthWidthRule, depth_mm: np.ndarray) -> float:
    """The rule's measurement in mm: mean raised height, or the raised region's width."""
    rows, cols = _roi_slice(depth_mm.shape, rule.roi)
    region = depth_mm[rows, cols]
    if region.shape[0] < 3 or region.shape[1] < 3:
        return 0.0
    raised = height_above_base(region, rule.raised_mm)
    above = raised > rule.raised_mm
    if isinstance(rule, DepthHeightRule):
        return float(raised[above].mean()) if above.any() else 0.0
    # Width across the bead: raised pixels per line along it, the median over lines.
    per_line = above.sum(axis=0 if rule.along == "horizontal" else 1)
    return float(np.median(per_line)) * rule.mm_per_pixel


def _depth_verdict(rule: DepthHeightRule | DepthWidthRule, measured: float) -> tuple[str, bool] | None:
    off = abs(measured - rule.target_mm)
    if off <= rule.tolerance_mm - rule.margin_mm:
        return rule.pass_label, True
    if off >= rule.tolerance_mm + rule.margin_mm:
        return rule.fail_label, True
    return None


class RuleEngine:
    """Runs a detector's rules; keeps each reference image decoded once (by path and mtime)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._references: dict[str, tuple[float, np.ndarray]] = {}

    def _reference(self, path: str) -> np.ndarray:
        mtime = Path(path).stat().st_mtime
        with self._lock:
            cached = self._references.get(path)
            if cached is not None and cached[0] == mtime:
                return cached[1]
        thumb = _thumbnail(analysis_image(Path(path).read_bytes()))
        with self._lock:
            self._references[path] = (mtime, thumb)
        return thumb

    def evaluate(
        self, rules: tuple[Rule, ...] | list[Rule], image: bytes, depth_mm: np.ndarray | None = None
    ) -> RuleOutcome:
        started = time.perf_counter()
        grey: np.ndarray | None = None
        for index, rule in enumerate(rules):
            check_started = time.perf_counter()
            if isinstance(rule, DepthHeightRule | DepthWidthRule):
                if depth_mm is None:
                    continue
                measured = measure_depth(rule, depth_mm)
                decided = _depth_verdict(rule, measured)
                if decided is None:
                    continue
                label, _ = decided
                verdict = RuleVerdict(
                    rule.check, index, False, label, rule.confidence, round(measured, 4), _ms(check_started)
                )
                return RuleOutcome(verdict, _ms(started))
            if grey is None:
                grey = analysis_image(image)
            measured, fires = self._image_check(rule, grey)
            if fires:
                escalate = rule.action == "escalate"
                label = UNUSABLE_LABEL if escalate else str(rule.label)
                verdict = RuleVerdict(
                    rule.check, index, escalate, label, rule.confidence, round(measured, 4), _ms(check_started)
                )
                return RuleOutcome(verdict, _ms(started))
        return RuleOutcome(None, _ms(started))

    def _image_check(
        self, rule: TooDarkRule | OverexposedRule | BlurredRule | UnchangedRule, grey: np.ndarray
    ) -> tuple[float, bool]:
        if isinstance(rule, TooDarkRule):
            mean = float(grey.mean()) / 255.0
            return mean, mean < rule.threshold
        if isinstance(rule, OverexposedRule):
            share = float((grey >= _BRIGHT).mean())
            return share, share > rule.threshold
        if isinstance(rule, BlurredRule):
            variance = laplacian_variance(grey)
            return variance, variance < rule.threshold
        difference = float(np.abs(_thumbnail(grey) - self._reference(rule.reference)).mean()) / 255.0
        return difference, difference < rule.threshold


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
