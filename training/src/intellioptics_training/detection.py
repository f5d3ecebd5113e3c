"""Counting and bounding-box detectors: a centre-heatmap head on the frozen backbone.

Data: the Ultralytics/YOLO layout, ``DATA/images/**/<stem>.jpg|png`` with
``DATA/labels/**/<stem>.txt`` (or ``DATA/<split>/images`` beside ``DATA/<split>/labels``) (one ``class cx cy w h`` line per object, image fractions;
an empty or missing file means no object; a polygon line is boxed), class names from
``DATA/data.yaml`` (``names:``), ``classes.txt`` or ``--classes``.

Model (CenterNet-style): the backbone's stride-8 and stride-16 maps, standardised and
each given its difference from the image's own mean (a defect is what the rest of the
surface is not), the stride-16 map upsampled to stride 8, then a 1x1 and a 3x3
convolution and three 1x1 outputs: per-class centre heatmap, log box size, centre
offset in the cell. The backbone stays frozen and runs once per training view (flips
and a half turn, boxes moved with them), so the head trains on cached maps in seconds
to minutes on a CPU. Decoding (peaks, non-maximum suppression, threshold, count) is the
common post-processor's (:mod:`intellioptics_common.detection`), the same on every
caller.

Thresholds and confidence come from cross-fitting: each image is scored by a head that
never trained on it. The box threshold is the one with the best sum of out-of-fold F1 at
IoU >= 0.3 and count exact-match; a logistic fitted on those candidates says how likely
a candidate of a given score is real; a count's confidence is the chance that every
candidate was decided right, tempered until the out-of-fold answers at or above the
detector's threshold T are right at least T of the time with 95 % confidence (Wilson
lower bound; as :mod:`intellioptics_training.calibration` does for classes). The served
model is the mean of the fold heads, the very heads whose out-of-fold answers set the
threshold and the confidence (``refit=True`` serves one head trained on every image).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import yaml
from torch import nn
from torch.nn import functional as F

from intellioptics_common.detection import (
    CANDIDATE_FLOOR,
    OUTPUTS,
    DetectionResult,
    DetectionSpec,
    candidate_probability,
    decode,
    iou,
    raw_count_confidence,
    temper,
)
from intellioptics_common.errors import IntelliOpticsError, PackageError
from intellioptics_common.imaging import decode_image
from intellioptics_common.intervals import wilson_interval, wilson_lower
from intellioptics_common.model_package import BackboneRef, InputSpec, PipelineConfig, PredictorMetadata
from intellioptics_common.preprocessing import resize_rgb
from intellioptics_training.anomaly import stage_reporter
from intellioptics_training.backbone import DEFAULT_INPUT
from intellioptics_training.calibration import FLAT_TEMPERATURE
from intellioptics_training.data import IMAGE_SUFFIXES
from intellioptics_training.errors import DatasetError
from intellioptics_training.evaluate import LoadedDetector, load_detector
from intellioptics_training.features import BackboneRunner
from intellioptics_training.heads import (
    IN_DOMAIN,
    OODD_INPUTS,
    OODD_PREFIX,
    Standardize,
    merge_outputs_with_backbone,
    merge_with_backbone,
    write_primary_and_oodd,
)

DETECTION_PREFIX = "detection/"
MODES = {"bounding_box": "BOUNDING_BOX", "count": "COUNT"}
MATCH_IOU = 0.3  # a box "finds" an object at this overlap (issue targets); mAP uses 0.5
MIN_IMAGES = 6
_COORD_SLACK = 0.01  # exporters write 1.0000001 or -0.000002; beyond this a value is an error
_TEMPERATURES = np.exp(np.linspace(0.0, np.log(200.0), 60))


@dataclass(frozen=True)
class DetectionOptions:
    """Training knobs; the defaults are what docs/benchmarks.md "Boxes and counts" measured."""

    epochs: int = 30
    hidden: int = 48
    folds: int = 3
    max_count: int = 10
    threshold: float = 0.9  # the detector's confidence threshold the count confidence is calibrated for
    seed: int = 0
    # Serve one head refitted on every image, or (default) the mean of the fold heads whose
    # out-of-fold answers set the threshold and confidence (measured: docs/benchmarks.md).
    refit: bool = False
    views: tuple[str, ...] = ("identity", "hflip", "vflip", "rot180")

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise DatasetError("cross-fitting needs at least 2 folds")
        if not 1 <= self.max_count <= 100:
            raise DatasetError("max_count must be between 1 and 100")


# ----------------------------------------------------------------- data
@dataclass
class BoxSet:
    """Images at the model's input size and their boxes (k x 5: class, cx, cy, w, h)."""

    rgb: list[np.ndarray]
    boxes: list[np.ndarray]
    class_names: tuple[str, ...]
    names: list[str] = field(default_factory=list)
    skipped: int = 0
    missing_labels: int = 0

    @property
    def object_count(self) -> int:
        return int(sum(len(b) for b in self.boxes))


def read_yolo(root: Path, spec: InputSpec = DEFAULT_INPUT, class_names: tuple[str, ...] | None = None) -> BoxSet:
    """Read DATA in the YOLO layout (see the module docstring); bad label lines are errors
    that name the file and line, unreadable images are skipped and counted."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory")
    image_root = root / "images" if (root / "images").is_dir() else root
    paths = sorted(
        p
        for p in image_root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and "labels" not in p.relative_to(root).parts
    )
    if not paths:
        raise DatasetError(f"{root} holds no images; expected {root}/images/*.jpg|png and {root}/labels/<stem>.txt")
    names = class_names or _class_names_file(root)
    data = BoxSet([], [], names or ())
    highest = -1
    for path in paths:
        label_path = _label_path(root, path)
        try:
            rgb = decode_image(path.read_bytes()).rgb
        except (IntelliOpticsError, OSError):
            data.skipped += 1
            continue
        if label_path.is_file():
            boxes = parse_label_file(label_path, len(names) if names else None)
        else:
            boxes = np.zeros((0, 5))
            data.missing_labels += 1
        if len(boxes):
            highest = max(highest, int(boxes[:, 0].max()))
        data.rgb.append(resize_rgb(rgb, spec))
        data.boxes.append(boxes)
        data.names.append(str(path))
    if not data.rgb:
        raise DatasetError(f"no readable images in {image_root} ({data.skipped} unreadable skipped)")
    if data.missing_labels == len(data.rgb):
        raise DatasetError(
            f"none of the {len(data.rgb)} images has a label file; expected {root}/labels/<stem>.txt"
            " (an empty file means the image has no object)"
        )
    if not names:
        data.class_names = ("object",) if highest <= 0 else tuple(f"class_{i}" for i in range(highest + 1))
    return data


def _label_path(root: Path, image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``
    (``images/train/a.jpg``, ``train/images/a.jpg``); without one, the file beside the image."""
    parts = image.relative_to(root).with_suffix(".txt").parts
    for index in range(len(parts) - 2, -1, -1):
        if parts[index] == "images":
            return root.joinpath(*parts[:index], "labels", *parts[index + 1 :])
    return image.with_suffix(".txt")


def _class_names_file(root: Path) -> tuple[str, ...] | None:
    for name in ("data.yaml", "dataset.yaml", "data.yml"):
        path = root / name
        if path.is_file():
            try:
                names = (yaml.safe_load(path.read_text()) or {}).get("names")
            except (yaml.YAMLError, AttributeError) as exc:
                raise DatasetError(f"{path} is not a YAML mapping with `names:` ({exc})") from exc
            if isinstance(names, dict):
                return tuple(str(names[k]) for k in sorted(names, key=int))
            if isinstance(names, list) and names:
                return tuple(str(v) for v in names)
            raise DatasetError(f"{path} must name the classes: `names: [defect]` or `names: {{0: defect}}`")
    for name in ("classes.txt", "obj.names"):
        path = root / name
        if path.is_file():
            lines = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
            if lines:
                return lines
    return None


def parse_label_file(path: Path, num_classes: int | None) -> np.ndarray:
    """One YOLO label file → k x 5 (class, cx, cy, w, h), clipped to the image."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path} line {number}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise DatasetError(f"{where}: expected numbers `class cx cy w h`, got {line.strip()!r}") from None
        cls = values[0]
        if not cls.is_integer() or cls < 0:
            raise DatasetError(f"{where}: the class must be a whole number >= 0, got {fields[0]!r}")
        if num_classes is not None and cls >= num_classes:
            raise DatasetError(f"{where}: class {int(cls)} but only {num_classes} class name(s) are given")
        coords = values[1:]
        if len(coords) == 4:
            cx, cy, w, h = coords
            x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        elif len(coords) >= 6 and len(coords) % 2 == 0:  # a segmentation polygon: its bounding box
            xs, ys = coords[0::2], coords[1::2]
            x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        else:
            raise DatasetError(f"{where}: expected `class cx cy w h` (5 values), got {len(fields)}")
        if min(x0, y0) < -_COORD_SLACK or max(x1, y1) > 1 + _COORD_SLACK or not all(map(math.isfinite, coords)):
            raise DatasetError(f"{where}: the box lies outside the image; YOLO coordinates are fractions in 0..1")
        x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in (x0, y0, x1, y1))
        if x1 - x0 <= 0 or y1 - y0 <= 0:
            raise DatasetError(f"{where}: the box has zero width or height")
        rows.append((cls, (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0))
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def view_boxes(boxes: np.ndarray, view: str) -> np.ndarray:
    """Boxes moved as :func:`intellioptics_training.features.apply_view` moves the image."""
    out = boxes.copy()
    if view in ("transpose", "antitranspose"):
        out[:, [1, 2, 3, 4]] = boxes[:, [2, 1, 4, 3]]
        if view == "antitranspose":
            out[:, 1:3] = 1.0 - out[:, 1:3]
        return out
    if view in ("hflip", "rot180"):
        out[:, 1] = 1.0 - out[:, 1]
    if view in ("vflip", "rot180"):
        out[:, 2] = 1.0 - out[:, 2]
    return out


# ----------------------------------------------------------------- model
class DetectionHead(nn.Module):
    """feat_s8, feat_s16 → (heatmap N x C x H8 x W8, box_size N x 2 x .., box_offset N x 2 x ..)."""

    def __init__(self, num_classes: int, stats: dict[str, tuple[np.ndarray, np.ndarray]], hidden: int = 48) -> None:
        super().__init__()
        self.norm_s8 = Standardize(*stats["feat_s8"])
        self.norm_s16 = Standardize(*stats["feat_s16"])
        channels = 2 * (len(stats["feat_s8"][0]) + len(stats["feat_s16"][0]))
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU()
        )
        self.heat = nn.Conv2d(hidden, num_classes, 1)
        self.size = nn.Conv2d(hidden, 2, 1)
        self.offset = nn.Conv2d(hidden, 2, 1)
        # A rare positive: start every cell near "no object".
        nn.init.constant_(cast(torch.Tensor, self.heat.bias), -4.0)
        nn.init.constant_(cast(torch.Tensor, self.size.bias), -2.5)

    def prepare(self, feat_s8: torch.Tensor, feat_s16: torch.Tensor) -> torch.Tensor:
        a = self.norm_s8(feat_s8)
        b = self.norm_s16(feat_s16)
        a = torch.cat([a, a - a.mean(dim=(2, 3), keepdim=True)], dim=1)
        b = torch.cat([b, b - b.mean(dim=(2, 3), keepdim=True)], dim=1)
        b = F.interpolate(b, scale_factor=2.0, mode="bilinear", align_corners=False)
        return torch.cat([a, b], dim=1)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.heat(h), self.size(h), torch.sigmoid(self.offset(h))

    def forward(self, feat_s8: torch.Tensor, feat_s16: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        heat_logits, size, offset = self.heads(self.prepare(feat_s8, feat_s16))
        return torch.sigmoid(heat_logits), size, offset


class HeadEnsemble(nn.Module):
    """The mean of several heads' outputs (the fold heads): the backbone still runs once."""

    def __init__(self, heads: list[DetectionHead]) -> None:
        super().__init__()
        self.members = nn.ModuleList(heads)

    def forward(self, feat_s8: torch.Tensor, feat_s16: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = [member(feat_s8, feat_s16) for member in self.members]
        return tuple(torch.stack(parts).mean(dim=0) for parts in zip(*outputs, strict=True))  # type: ignore[return-value]


def make_targets(boxes: list[np.ndarray], height: int, width: int, num_classes: int) -> dict[str, torch.Tensor]:
    """Gaussian centre heatmaps (1 at each centre cell, spread like the box), the size each
    cell near a centre must predict (with its weight) and the offset of each centre cell."""
    n = len(boxes)
    heat = np.zeros((n, num_classes, height, width), dtype=np.float32)
    size = np.zeros((n, 2, height, width), dtype=np.float32)
    offset = np.zeros((n, 2, height, width), dtype=np.float32)
    centre = np.zeros((n, 1, height, width), dtype=np.float32)
    size_weight = np.zeros((n, 1, height, width), dtype=np.float32)
    ys, xs = np.mgrid[0:height, 0:width]
    for i, image_boxes in enumerate(boxes):
        for cls, cx, cy, w, h in image_boxes:
            gx, gy = cx * width, cy * height
            ix, iy = min(int(gx), width - 1), min(int(gy), height - 1)
            sx, sy = max(0.6, w * width / 6), max(0.6, h * height / 6)
            blob = np.exp(-(((xs - ix) / sx) ** 2 + ((ys - iy) / sy) ** 2) / 2)
            heat[i, int(cls)] = np.maximum(heat[i, int(cls)], blob)
            heat[i, int(cls), iy, ix] = 1.0
            # Size is learned around the centre too (weighted by the blob, as TTFNet does):
            # many more examples of each box's size than its one centre cell.
            near = (blob > 0.3) & (blob >= size_weight[i, 0])
            size[i, 0][near], size[i, 1][near] = np.log(max(w, 1e-3)), np.log(max(h, 1e-3))
            size_weight[i, 0][near] = blob[near]
            offset[i, :, iy, ix] = (gx - ix, gy - iy)
            centre[i, 0, iy, ix] = 1.0
    return {
        "heat": torch.from_numpy(heat),
        "size": torch.from_numpy(size),
        "offset": torch.from_numpy(offset),
        "centre": torch.from_numpy(centre),
        "size_weight": torch.from_numpy(size_weight),
    }


def detection_loss(
    heat_logits: torch.Tensor, size: torch.Tensor, offset: torch.Tensor, target: dict[str, torch.Tensor]
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on the heatmap, L1 on size and offset at centres."""
    gt = target["heat"]
    positive = gt.eq(1.0).float()
    log_p = F.logsigmoid(heat_logits)
    log_not_p = F.logsigmoid(-heat_logits)
    p = torch.sigmoid(heat_logits)
    pos = (log_p * (1 - p) ** 2 * positive).sum()
    neg = (log_not_p * p**2 * (1 - gt) ** 4 * (1 - positive)).sum()
    centres = target["centre"]
    count = centres.sum().clamp_min(1.0)
    weight = target["size_weight"]
    box = ((size - target["size"]).abs() * weight).sum() / weight.sum().clamp_min(1.0)
    shift = ((offset - target["offset"]).abs() * centres).sum() / count
    return -(pos + neg) / count + box + shift


def channel_stats(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return maps.mean(axis=(0, 2, 3)), maps.std(axis=(0, 2, 3)) + 1e-4


def _epochs_of(report: Callable[[str, int, int], None], stage: str) -> Callable[[int, int], None]:
    """An ``(epoch, total)`` callback that reports under ``stage``."""
    return lambda epoch, total: report(stage, epoch, total)


def fit_head(
    s8: np.ndarray,
    s16: np.ndarray,
    boxes: list[np.ndarray],
    num_classes: int,
    options: DetectionOptions,
    seed: int,
    check: Callable[[int, int], None] | None = None,
) -> DetectionHead:
    """Train a head on cached maps (one row per training view) and their boxes."""
    torch.manual_seed(seed)
    stats = {"feat_s8": channel_stats(s8), "feat_s16": channel_stats(s16)}
    head = DetectionHead(num_classes, stats, options.hidden)
    target = make_targets(boxes, s8.shape[2], s8.shape[3], num_classes)
    x8, x16 = torch.from_numpy(s8), torch.from_numpy(s16)
    optimiser = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=1e-3)
    n = len(boxes)
    batch = 16
    steps = options.epochs * max(1, math.ceil(n / batch))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    generator = torch.Generator().manual_seed(seed)
    head.train()
    for epoch in range(options.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            with torch.no_grad():
                prepared = head.prepare(x8[idx], x16[idx])
            heat_logits, size, offset = head.heads(prepared)
            loss = detection_loss(heat_logits, size, offset, {k: v[idx] for k, v in target.items()})
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        if check is not None:
            check(epoch + 1, options.epochs)
    return head.eval()


def head_candidates(
    head: DetectionHead, s8: np.ndarray, s16: np.ndarray, class_names: tuple[str, ...], nms_iou: float = 0.5
) -> list[tuple]:
    with torch.no_grad():
        heat, size, offset = head(torch.from_numpy(s8), torch.from_numpy(s16))
    return [decode(heat[i].numpy(), size[i].numpy(), offset[i].numpy(), class_names, nms_iou) for i in range(len(s8))]


# ----------------------------------------------------------------- matching and metrics
def truth_boxes(boxes: np.ndarray, class_names: tuple[str, ...]) -> list[Any]:
    from intellioptics_common.anomaly import Box

    return [Box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, 1.0, class_names[int(c)]) for c, cx, cy, w, h in boxes]


def match(predicted: tuple, truth: list, min_iou: float) -> list[bool]:
    """Greedy by score: each prediction is a hit when it overlaps a still unmatched true box
    of its class by at least ``min_iou``."""
    used = [False] * len(truth)
    hits = []
    for box in sorted(predicted, key=lambda b: -b.score):
        best, best_iou = -1, min_iou
        for j, other in enumerate(truth):
            if used[j] or other.label != box.label:
                continue
            overlap = iou(box, other)
            if overlap >= best_iou:
                best, best_iou = j, overlap
        if best >= 0:
            used[best] = True
        hits.append(best >= 0)
    return hits


def average_precision(
    candidates: list[tuple], truths: list[list], class_names: tuple[str, ...], min_iou: float
) -> dict[str, float]:
    """Per-class AP (all-point interpolated precision-recall area) over a set of images."""
    result = {}
    for name in class_names:
        scored: list[tuple[float, bool]] = []
        total = 0
        for predicted, truth in zip(candidates, truths, strict=True):
            mine = tuple(b for b in predicted if b.label == name)
            theirs = [b for b in truth if b.label == name]
            total += len(theirs)
            ranked = sorted(mine, key=lambda b: -b.score)
            scored.extend(zip((b.score for b in ranked), match(tuple(ranked), theirs, min_iou), strict=True))
        if total == 0:
            continue
        scored.sort(key=lambda item: -item[0])
        hits = np.cumsum([h for _, h in scored]) if scored else np.zeros(0)
        ranks = np.arange(1, len(scored) + 1)
        recall = np.concatenate([[0.0], hits / total, [hits[-1] / total if len(hits) else 0.0]])
        precision = np.concatenate([[1.0], hits / ranks if len(hits) else np.zeros(0), [0.0]])
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        result[name] = float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))
    return result


def at_threshold(candidates: list[tuple], truths: list[list], threshold: float, min_iou: float) -> tuple[int, int, int]:
    """(hits, predicted boxes, true boxes) for boxes at or above ``threshold``."""
    hits = predicted = total = 0
    for found, truth in zip(candidates, truths, strict=True):
        kept = tuple(b for b in found if b.score >= threshold)
        hits += sum(match(kept, truth, min_iou))
        predicted += len(kept)
        total += len(truth)
    return hits, predicted, total


def best_box_threshold(candidates: list[tuple], truths: list[list]) -> float:
    """The threshold with the best sum of F1 at IoU >= 0.3 and count exact-match (a box
    detector is judged on both: where the boxes are and how many)."""
    scores = sorted({round(b.score, 3) for found in candidates for b in found if 0.05 <= b.score <= 0.95})
    grid = scores or [0.5]
    best, best_key = 0.5, (-1.0, -1.0)
    for threshold in grid:
        hits, predicted, total = at_threshold(candidates, truths, threshold, MATCH_IOU)
        f1 = 2 * hits / max(1, predicted + total)
        exact = np.mean(
            [
                sum(b.score >= threshold for b in found) == len(truth)
                for found, truth in zip(candidates, truths, strict=True)
            ]
        )
        key = (round(f1 + float(exact), 4), float(exact))
        if key > best_key:
            best, best_key = threshold, key
    return float(min(max(best, 0.05), 0.95))


def fit_candidate_logistic(candidates: list[tuple], truths: list[list]) -> tuple[float, float]:
    """P(real) = sigmoid(a * logit(score) + b), fitted on out-of-fold candidates."""
    from sklearn.linear_model import LogisticRegression

    xs: list[float] = []
    ys: list[bool] = []
    for found, truth in zip(candidates, truths, strict=True):
        ordered = sorted(found, key=lambda b: -b.score)
        xs.extend(b.score for b in ordered)
        ys.extend(match(tuple(ordered), truth, MATCH_IOU))
    if len(set(ys)) < 2:
        return 1.0, 0.0
    s = np.clip(np.array(xs), 1e-6, 1 - 1e-6)
    model = LogisticRegression(C=100.0).fit(np.log(s / (1 - s)).reshape(-1, 1), np.array(ys, dtype=int))
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def count_temperature(confidences: np.ndarray, correct: np.ndarray, threshold: float) -> float:
    """The lowest temperature at which the confident out-of-fold counts are right at
    least ``threshold`` of the time with 95 % confidence; flat when none is."""
    for temperature in _TEMPERATURES:
        tempered = np.array([temper(c, temperature) for c in confidences])
        confident = tempered >= threshold
        if not confident.any():
            return float(temperature)
        if wilson_lower(int(correct[confident].sum()), int(confident.sum())) >= threshold:
            return float(temperature)
    return FLAT_TEMPERATURE


def summarise(
    candidates: list[tuple],
    truths: list[list],
    spec: DetectionSpec,
    class_names: tuple[str, ...],
    threshold: float,
    confidences: np.ndarray | None = None,
) -> dict[str, Any]:
    """The figures `evaluate` prints and training reports out of fold."""
    ap = average_precision(candidates, truths, class_names, 0.5)
    out: dict[str, Any] = {"images": len(truths), "objects": int(sum(len(t) for t in truths))}
    out["map50"] = round(float(np.mean(list(ap.values()))), 4) if ap else None
    out["ap50"] = {k: round(v, 4) for k, v in ap.items()}
    for min_iou, tag in ((MATCH_IOU, "iou30"), (0.5, "iou50")):
        hits, predicted, total = at_threshold(candidates, truths, spec.box_threshold, min_iou)
        out[f"recall_{tag}"] = round(hits / total, 4) if total else None
        out[f"precision_{tag}"] = round(hits / predicted, 4) if predicted else None
    counts = np.array([min(sum(b.score >= spec.box_threshold for b in found), spec.max_count) for found in candidates])
    true_counts = np.array([min(len(t), spec.max_count) for t in truths])
    right = counts == true_counts
    out["count_exact_match"] = round(float(right.mean()), 4)
    out["count_mae"] = round(float(np.abs(counts - true_counts).mean()), 4)
    if confidences is not None:
        confident = confidences >= threshold
        out["confident_coverage"] = round(float(confident.mean()), 4)
        if confident.any():
            k, n = int(right[confident].sum()), int(confident.sum())
            low, high = wilson_interval(k, n)
            out["confident_count_accuracy"] = round(k / n, 4)
            out["confident_count_accuracy_95ci"] = [round(low, 4), round(high, 4)]
        else:
            out["confident_count_accuracy"] = None
    return out


# ----------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainedDetection:
    input_spec: InputSpec
    mode: str  # COUNT or BOUNDING_BOX
    class_names: tuple[str, ...]
    primary_onnx: bytes
    oodd_onnx: bytes
    backbone_id: str
    backbone_sha256: str
    spec: DetectionSpec
    training_images: int
    training_objects: int
    skipped: int
    out_of_fold: dict[str, Any]
    train_seconds: float
    head: nn.Module = field(repr=False)  # DetectionHead, or HeadEnsemble of the fold heads
    # Per image of the training set (in its order), the candidates of the fold head that
    # never trained on it: read with ``spec`` through the common post-processor, they are
    # the out-of-fold answers the figures above summarise.
    oof_candidates: tuple[tuple[Any, ...], ...] = field(default=(), repr=False)


def train_detection(
    data: BoxSet,
    mode: str,
    options: DetectionOptions | None = None,
    *,
    runner: BackboneRunner | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    cancel_check: Callable[[], bool] | None = None,
) -> TrainedDetection:
    """Fit a detection head (``mode``: bounding_box or count) on ``data``; see the module docstring."""
    options = options or DetectionOptions()
    if mode not in MODES:
        raise DatasetError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    started = time.perf_counter()
    n = len(data.rgb)
    if n < MIN_IMAGES:
        raise DatasetError(f"a detector needs at least {MIN_IMAGES} labeled images, found {n}")
    if data.object_count == 0:
        raise DatasetError("no image has an object box: label at least a few objects to train a detector")

    report = stage_reporter(progress, cancel_check)
    runner = runner or BackboneRunner()
    spec = DEFAULT_INPUT
    s8, s16 = runner.maps(
        data.rgb,
        spec,
        views=options.views,
        outputs=("feat_s8", "feat_s16"),
        progress=lambda s, t: report("features", s, t),
    )
    view_rows = {view: np.arange(v * n, (v + 1) * n) for v, view in enumerate(options.views)}
    all_boxes = [view_boxes(data.boxes[i], view) for view in options.views for i in range(n)]
    names = data.class_names
    truths = [truth_boxes(b, names) for b in data.boxes]

    folds = min(options.folds, n)
    assignment = np.random.default_rng(options.seed).permutation(n) % folds
    oof: list[tuple] = [()] * n
    fold_heads: list[DetectionHead] = []
    for fold in range(folds):
        held = np.flatnonzero(assignment == fold)
        kept = np.flatnonzero(assignment != fold)
        rows = np.concatenate([view_rows[view][kept] for view in options.views])
        fold_head = fit_head(
            s8[rows],
            s16[rows],
            [all_boxes[r] for r in rows],
            len(names),
            options,
            options.seed + fold,
            _epochs_of(report, f"fold {fold + 1}/{folds}"),
        )
        fold_heads.append(fold_head)
        for i, found in zip(held, head_candidates(fold_head, s8[held], s16[held], names), strict=True):
            oof[i] = found

    box_threshold = best_box_threshold(oof, truths)
    a, b = fit_candidate_logistic(oof, truths)
    provisional = DetectionSpec(box_threshold=box_threshold, max_count=options.max_count, candidate_a=a, candidate_b=b)
    raw = np.array([raw_count_confidence(found, provisional) for found in oof])
    true_counts = np.array([min(len(t), options.max_count) for t in truths])
    counts = np.array([min(sum(b.score >= box_threshold for b in found), options.max_count) for found in oof])
    temperature = count_temperature(raw, counts == true_counts, options.threshold)
    final_spec = DetectionSpec(
        box_threshold=box_threshold,
        max_count=options.max_count,
        candidate_a=a,
        candidate_b=b,
        count_temperature=temperature,
    )
    tempered = np.array([temper(c, temperature) for c in raw])
    out_of_fold = summarise(oof, truths, final_spec, names, options.threshold, tempered)
    out_of_fold["folds"] = folds

    if options.refit:
        head: nn.Module = fit_head(s8, s16, all_boxes, len(names), options, options.seed, _epochs_of(report, "final"))
    else:
        head = HeadEnsemble(fold_heads).eval()
    primary_onnx = merge_outputs_with_backbone(runner.model_bytes, head, OUTPUTS, DETECTION_PREFIX, spatial=OUTPUTS)

    from intellioptics_training.trainer import _fit_oodd

    oodd = _fit_oodd(s16[view_rows["identity"]])
    oodd_onnx = merge_with_backbone(runner.model_bytes, oodd, OODD_INPUTS, IN_DOMAIN, OODD_PREFIX)
    report("export", 1, 1)
    return TrainedDetection(
        input_spec=spec,
        mode=MODES[mode],
        class_names=names,
        primary_onnx=primary_onnx,
        oodd_onnx=oodd_onnx,
        backbone_id=runner.info.id,
        backbone_sha256=runner.info.sha256,
        spec=final_spec,
        training_images=n,
        training_objects=data.object_count,
        skipped=data.skipped,
        out_of_fold=out_of_fold,
        train_seconds=time.perf_counter() - started,
        head=head,
        oof_candidates=tuple(oof),
    )


def export_detection_package(models_dir: Path, detector_id: str, trained: TrainedDetection) -> dict[str, Path]:
    """Write the detection primary and its OODD as new package versions."""
    pipeline = PipelineConfig(
        kind="primary",
        mode=trained.mode,
        class_names=trained.class_names,
        input=trained.input_spec,
        output=OUTPUTS[0],
        backbone=BackboneRef(id=trained.backbone_id, sha256=trained.backbone_sha256, output="feat_s8,feat_s16"),
        model_kind="detection",
        detection=trained.spec,
    )
    metadata = PredictorMetadata(
        detector_id=detector_id,
        kind="primary",
        trainer="detection-centre-heatmap",
        backbone_id=trained.backbone_id,
        training_set_size=trained.training_images,
        class_counts={"objects": trained.training_objects, "images": trained.training_images},
        metrics=_numeric(trained.out_of_fold),
        extra={"model_kind": "detection", "train_seconds": round(trained.train_seconds, 2)},
    )
    return write_primary_and_oodd(models_dir, (trained.primary_onnx, pipeline, metadata), trained.oodd_onnx)


def _numeric(figures: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in figures.items() if isinstance(v, int | float) and not isinstance(v, bool)}


# ----------------------------------------------------------------- running a package
class DetectionScorer:
    """A detection package's primary and OODD sessions, read as the edge reads them."""

    def __init__(self, detector: LoadedDetector, threads: int | None = None) -> None:
        pipeline = detector.primary.pipeline
        if pipeline.model_kind != "detection" or pipeline.detection is None:
            raise PackageError(f"{detector.primary.path} is a {pipeline.model_kind} model, not a detection model")
        self.detector = detector
        self.pipeline = pipeline
        self.spec: DetectionSpec = pipeline.detection
        self._model = detector.model(threads)

    def result(self, rgb: np.ndarray) -> DetectionResult:
        prepared = self._model.prepare(rgb)
        detection = self._model.post_process(prepared, self._model.forward(prepared)).detection
        assert detection is not None  # a detection model always answers boxes
        return detection


def load_detection_scorer(pkg: Path, detector_id: str | None = None, threads: int | None = None) -> DetectionScorer:
    return DetectionScorer(load_detector(pkg, detector_id), threads)


def evaluate_detection(scorer: DetectionScorer, data: BoxSet, threshold: float) -> dict[str, Any]:
    """mAP@0.5, recall and precision at the model's box threshold (IoU 0.3 and 0.5), count
    exact-match and mean absolute error, and the share answered at ``threshold``."""
    results, seconds = [], []
    for rgb in data.rgb:
        started = time.perf_counter()
        results.append(scorer.result(rgb))
        seconds.append(time.perf_counter() - started)
    truths = [truth_boxes(b, scorer.pipeline.class_names) for b in data.boxes]
    confidences = np.array([r.confidence for r in results])
    out = summarise(
        [r.candidates for r in results], truths, scorer.spec, scorer.pipeline.class_names, threshold, confidences
    )
    out["box_threshold"] = round(scorer.spec.box_threshold, 4)
    out["mean_ms_per_image"] = round(1000 * float(np.mean(seconds)), 2)
    out["skipped"] = data.skipped
    return out


def to_json(result: DetectionResult, image: str) -> dict[str, object]:
    """The CLI's one line per image (``intellioptics predict --json``)."""
    return {
        "image": image,
        "label": result.label,
        "count": result.count,
        "greater_than_max": result.greater_than_max,
        "confidence": round(result.confidence, 4),
        "rois": result.rois(),
    }


__all__ = [
    "CANDIDATE_FLOOR",
    "BoxSet",
    "DetectionOptions",
    "DetectionScorer",
    "TrainedDetection",
    "candidate_probability",
    "evaluate_detection",
    "export_detection_package",
    "load_detection_scorer",
    "read_yolo",
    "train_detection",
]
