"""The anomaly model kind's post-processing, shared by the edge, the cloud and the CLI.

An anomaly model gives a normalised score in ``[0, 1]`` (0.5 is its threshold) and an
anomaly map of the same scale. From them this module derives, in one place:

- the label (``YES`` = anomalous) and its confidence, OODD-adjusted like a classifier's;
- the severity grade, by cut points stored in the model package (Normal below 0.3,
  Potential 0.3-0.5, Moderate 0.5-0.8, Critical from 0.8);
- boxes around the connected regions of the map above the threshold, in the
  Groundlight ROI shape;
- PNG overlays: heat map, mask, boxes.
"""

from __future__ import annotations

import io
from collections import deque
from dataclasses import dataclass
from enum import Enum

import numpy as np
from PIL import Image, ImageDraw

from intellioptics_common.confidence import adjust_confidence
from intellioptics_common.imaging import decode_image
from intellioptics_common.schemas import AnomalyOutput

ANOMALY_LABEL = "anomaly"
MAX_BOXES = 10
_GRID = 64  # connected regions are found on a map of at most this many cells a side


class Severity(str, Enum):
    NORMAL = "Normal"  # pass
    POTENTIAL = "Potential"  # monitor
    MODERATE = "Moderate"  # inspect
    CRITICAL = "Critical"  # stop


@dataclass(frozen=True)
class SeverityCuts:
    """Lower bounds of Potential, Moderate and Critical on the normalised score."""

    potential: float = 0.3
    moderate: float = 0.5
    critical: float = 0.8

    def __post_init__(self) -> None:
        if not 0.0 < self.potential <= self.moderate <= self.critical < 1.0:
            raise ValueError("severity cut points must satisfy 0 < potential <= moderate <= critical < 1")

    def grade(self, score: float) -> Severity:
        if score >= self.critical:
            return Severity.CRITICAL
        if score >= self.moderate:
            return Severity.MODERATE
        if score >= self.potential:
            return Severity.POTENTIAL
        return Severity.NORMAL


DEFAULT_SEVERITY_CUTS = SeverityCuts()


@dataclass(frozen=True)
class Box:
    """A box in image fractions (``0..1``) with its score (an anomaly box: the peak map
    value inside it; a detection: the model's box score) and its class name."""

    left: float
    top: float
    right: float
    bottom: float
    score: float
    label: str = ANOMALY_LABEL

    def to_wire(self) -> dict[str, object]:
        """The Groundlight ROI shape (centre included, as the SDK builds it)."""
        return {
            "label": self.label,
            "score": round(self.score, 4),
            "geometry": {
                "left": self.left,
                "top": self.top,
                "right": self.right,
                "bottom": self.bottom,
                "x": (self.left + self.right) / 2,
                "y": (self.top + self.bottom) / 2,
            },
        }


@dataclass(frozen=True)
class AnomalyResult:
    label: str  # "YES" anomalous, "NO" normal
    confidence: float  # OODD-adjusted
    raw_confidence: float
    anomaly_score: float
    severity: Severity
    boxes: tuple[Box, ...]
    anomaly_map: np.ndarray  # H x W float32 in [0, 1], at the model's input size


def interpret(
    score: float,
    anomaly_map: np.ndarray,
    *,
    threshold: float = 0.5,
    cuts: SeverityCuts = DEFAULT_SEVERITY_CUTS,
    in_domain: float | None = None,
) -> AnomalyResult:
    """Turn the model's two outputs into the typed result."""
    score = float(min(max(score, 0.0), 1.0))
    amap = np.clip(np.asarray(anomaly_map, dtype=np.float32).squeeze(), 0.0, 1.0)
    if amap.ndim != 2:
        raise ValueError(f"an anomaly map must be two-dimensional, got shape {amap.shape}")
    anomalous = score >= threshold
    raw = score if anomalous else 1.0 - score
    confidence = raw if in_domain is None else adjust_confidence(raw, 1.0 - in_domain, 2)
    return AnomalyResult(
        label="YES" if anomalous else "NO",
        confidence=float(confidence),
        raw_confidence=float(raw),
        anomaly_score=score,
        severity=cuts.grade(score),
        boxes=boxes_from_map(amap, threshold),
        anomaly_map=amap,
    )


def boxes_from_map(anomaly_map: np.ndarray, threshold: float = 0.5, max_boxes: int = MAX_BOXES) -> tuple[Box, ...]:
    """Boxes around the 8-connected regions above ``threshold``, highest peak first.

    Regions are found on a block-max reduction of the map to at most 64 cells a side
    (a model's map is upsampled from stride 8, so no detail is lost at 320 px), which
    keeps this pure-numpy step well under a millisecond."""
    amap = np.asarray(anomaly_map, dtype=np.float32)
    height, width = amap.shape
    fy, fx = -(-height // _GRID), -(-width // _GRID)
    gh, gw = -(-height // fy), -(-width // fx)
    padded = np.zeros((gh * fy, gw * fx), dtype=np.float32)
    padded[:height, :width] = amap
    grid = padded.reshape(gh, fy, gw, fx).max(axis=(1, 3))
    above = grid >= threshold
    seen = np.zeros_like(above)
    boxes = []
    for start in zip(*np.nonzero(above), strict=True):
        if seen[start]:
            continue
        seen[start] = True
        queue = deque([start])
        rows, cols = [start[0]], [start[1]]
        while queue:
            r, c = queue.popleft()
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    nr, nc = r + dr, c + dc
                    if 0 <= nr < gh and 0 <= nc < gw and above[nr, nc] and not seen[nr, nc]:
                        seen[nr, nc] = True
                        queue.append((nr, nc))
                        rows.append(nr)
                        cols.append(nc)
        top, bottom = min(rows) * fy, min((max(rows) + 1) * fy, height)
        left, right = min(cols) * fx, min((max(cols) + 1) * fx, width)
        peak = float(amap[top:bottom, left:right].max())
        boxes.append(Box(left / width, top / height, right / width, bottom / height, peak))
    boxes.sort(key=lambda box: -box.score)
    return tuple(boxes[:max_boxes])


def resize_map(anomaly_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """The map at an image's own size (bilinear), float32."""
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if amap.shape == (height, width):
        return amap
    return np.asarray(Image.fromarray(amap, mode="F").resize((width, height), Image.Resampling.BILINEAR))


def coarse_map(anomaly_map: np.ndarray, cells: int = 40) -> list[list[float]]:
    """Block means of the map on at most ``cells`` x ``cells`` (what travels on the wire:
    the model's own resolution is stride 8, 40 x 40 at 320 px)."""
    amap = np.asarray(anomaly_map, dtype=np.float32)
    height, width = amap.shape
    rows = np.array_split(np.arange(height), min(cells, height))
    cols = np.array_split(np.arange(width), min(cells, width))
    return [[round(float(amap[np.ix_(r, c)].mean()), 3) for c in cols] for r in rows]


def map_from_grid(grid: list[list[float]]) -> np.ndarray:
    return np.clip(np.asarray(grid, dtype=np.float32), 0.0, 1.0)


OVERLAY_KINDS = ("heatmap", "mask", "boxes")


def render_overlay(
    rgb: np.ndarray, anomaly_map: np.ndarray, boxes: tuple[Box, ...], kind: str, threshold: float = 0.5
) -> bytes:
    """PNG of ``kind``: ``heatmap`` (map blended over the image), ``mask`` (regions above
    the threshold, white on black) or ``boxes`` (the image with its boxes drawn)."""
    if kind not in OVERLAY_KINDS:
        raise ValueError(f"overlay kind must be one of {', '.join(OVERLAY_KINDS)}, not {kind!r}")
    height, width = rgb.shape[:2]
    amap = resize_map(anomaly_map, height, width)
    if kind == "mask":
        image = Image.fromarray(((amap >= threshold) * 255).astype(np.uint8), mode="L")
    elif kind == "heatmap":
        heat = _heat_colours(amap)
        alpha = (0.25 + 0.5 * amap)[..., None]
        image = Image.fromarray((rgb * (1 - alpha) + heat * alpha).clip(0, 255).astype(np.uint8))
    else:
        image = Image.fromarray(np.ascontiguousarray(rgb[..., :3]).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        line = max(2, round(min(height, width) / 160))
        for box in boxes:
            draw.rectangle(
                [box.left * width, box.top * height, box.right * width - 1, box.bottom * height - 1],
                outline=(255, 40, 40),
                width=line,
            )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _heat_colours(amap: np.ndarray) -> np.ndarray:
    """A blue → green → yellow → red ramp, HxWx3 float in 0..255."""
    t = np.clip(amap, 0.0, 1.0)
    red = np.clip(2.0 * t - 0.5, 0, 1)
    green = np.clip(1.5 - np.abs(4.0 * t - 2.0), 0, 1)
    blue = np.clip(1.0 - 2.5 * t, 0, 1)
    return np.stack([red, green, blue], axis=-1) * 255.0


def overlay_png(image: bytes, anomaly: AnomalyOutput, kind: str, threshold: float = 0.5) -> bytes:
    """:func:`render_overlay` from a stored image and an answer's wire anomaly fields."""
    rgb = decode_image(image).rgb
    grid = map_from_grid(anomaly.map) if anomaly.map else np.zeros((1, 1), dtype=np.float32)
    boxes = tuple(
        Box(roi.geometry.left, roi.geometry.top, roi.geometry.right, roi.geometry.bottom, roi.score)
        for roi in anomaly.rois
    )
    return render_overlay(rgb, grid, boxes, kind, threshold)
