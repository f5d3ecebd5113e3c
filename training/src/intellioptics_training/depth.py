"""RGB + depth detectors: a depth branch fused with the RGB head, one ONNX graph, two inputs.

Some defects (a dent, a missing bead, a height error) show in depth and not in colour.
The depth branch is fixed, not learned, so that tens of pairs are enough:

1. the plane fitted to the whole map (least squares, as a matrix product with the
   design matrix's pseudo-inverse) is subtracted, so distance and tilt do not matter;
2. band-pass responses at three scales (box mean minus the mean of a box three times as
   wide) keep dents and bumps of a few grid cells and drop slow warping of the part;
3. per scale: the deepest and highest response, their spread, and both extremes in units
   of that spread (a dent is an outlier of its own map, whatever the surface's roughness).

These 16 numbers, standardised on the training set, feed a linear layer whose logits are
added to those of the RGB head (:class:`PrimaryHead` on the shared backbone's maps). The
depth layer is fitted first, then the RGB head on top of its logits, and the sum is
calibrated by temperature on held-out pairs, as the RGB trainer calibrates on out-of-fold
answers, so that answers at the threshold are right at least that often. The
OODD model stays RGB-only: "is this the part we know" is a question about its looks.

Data layout: ``DATA/<label>/<id>_rgb.png|jpg`` beside ``<id>_depth.npy|png``.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import compose
from torch import nn
from torch.nn import functional

from intellioptics_common.depth import DepthSpec, depth_input
from intellioptics_common.errors import DepthMapError, ImageDecodeError, ImageTooLargeError
from intellioptics_common.imaging import decode_image
from intellioptics_common.preprocessing import draft_size, resize_rgb
from intellioptics_training.backbone import DEFAULT_INPUT
from intellioptics_training.calibration import calibrate
from intellioptics_training.data import IMAGE_SUFFIXES, normalize_label, stratified_split
from intellioptics_training.errors import DatasetError, TrainingCancelled
from intellioptics_training.features import BackboneRunner
from intellioptics_training.heads import (
    _CHANNELS,
    IN_DOMAIN,
    OODD_INPUTS,
    OODD_PREFIX,
    PRIMARY_INPUTS,
    PRIMARY_PREFIX,
    PROBABILITIES,
    PrimaryHead,
    merge_with_backbone,
)
from intellioptics_training.trainer import (
    FAST_EPOCHS,
    TRAIN_VIEWS,
    Progress,
    ProgressCallback,
    TrainedModels,
    _channel_stats,
    _fit_oodd,
    _in_domain,
    _tensors,
)

DEPTH_SPEC = DepthSpec()
SCALES = (3, 5, 9)
DEPTH_FEATURES = 1 + 5 * len(SCALES)
DEPTH_STEPS = 300
RGB_PART = "_rgb"
DEPTH_PARTS = ("_depth.npy", "_depth.png")


@dataclass(frozen=True)
class DepthSample:
    image: bytes
    depth: bytes
    label: str
    name: str = ""


@dataclass
class DepthDataset:
    rgb: list[np.ndarray]  # at model input size
    depth: np.ndarray  # N x 1 x H x W on the depth grid
    labels: np.ndarray
    class_names: tuple[str, ...]
    skipped: int = 0
    unpaired: int = 0

    def class_counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(self.class_names)}


def find_depth(image_path: Path) -> Path | None:
    """``<id>_rgb.png`` → ``<id>_depth.npy`` (or ``.png``), if it exists."""
    stem = image_path.stem
    if not stem.endswith(RGB_PART):
        return None
    base = stem[: -len(RGB_PART)]
    for suffix in DEPTH_PARTS:
        candidate = image_path.with_name(base + suffix)
        if candidate.is_file():
            return candidate
    return None


def read_depth_folder(root: Path) -> tuple[list[DepthSample], int]:
    """``root/<label>/<id>_rgb.*`` + ``<id>_depth.*`` → samples, and the count of images without depth."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory")
    samples, unpaired = [], 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if not (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and path.stem.endswith(RGB_PART)):
                continue
            depth = find_depth(path)
            if depth is None:
                unpaired += 1
                continue
            samples.append(DepthSample(path.read_bytes(), depth.read_bytes(), folder.name, str(path)))
    if not samples:
        raise DatasetError(
            f"{root} holds no RGB + depth pairs; expected {root}/<label>/<id>_rgb.png|jpg beside <id>_depth.npy|png"
            + (f" ({unpaired} images had no depth map)" if unpaired else "")
        )
    return samples, unpaired


def prepare_depth(
    samples: list[DepthSample],
    mode: str,
    class_names: tuple[str, ...] | None = None,
    *,
    spec: DepthSpec = DEPTH_SPEC,
    require_two_classes: bool = True,
) -> DepthDataset:
    """Decode both halves of each pair with every check; unreadable pairs are skipped and counted."""
    labels_seen = [normalize_label(s.label, mode) for s in samples]
    if class_names is None:
        class_names = ("NO", "YES") if mode == "binary" else tuple(sorted(set(labels_seen) - {"UNCLEAR"}))
    index = {name: i for i, name in enumerate(class_names)}
    rgb, depth, labels = [], [], []
    skipped = 0
    for sample, label in zip(samples, labels_seen, strict=True):
        if label == "UNCLEAR":
            continue
        if label not in index:
            raise DatasetError(f"label {label!r} is not one of the classes {list(class_names)}")
        try:
            decoded = decode_image(sample.image, draft_size=draft_size(DEFAULT_INPUT))
            grid = depth_input(sample.depth, (decoded.width, decoded.height), spec)
        except (ImageDecodeError, ImageTooLargeError, DepthMapError):
            skipped += 1
            continue
        rgb.append(resize_rgb(decoded.rgb, DEFAULT_INPUT))
        depth.append(grid[0])
        labels.append(index[label])
    data = DepthDataset(
        rgb,
        np.asarray(depth, dtype=np.float32).reshape(-1, 1, spec.height, spec.width),
        np.asarray(labels, dtype=np.int64),
        tuple(class_names),
        skipped,
    )
    if require_two_classes:
        present = [name for name, count in data.class_counts().items() if count > 0]
        if len(present) < 2:
            raise DatasetError(
                f"training needs RGB + depth pairs of at least two classes; found {present or 'none'} "
                f"({skipped} unreadable pairs skipped)"
            )
    return data


class DepthFeatures(nn.Module):
    """Depth grid (mm) → the 16 fixed features of the module docstring."""

    def __init__(self, spec: DepthSpec = DEPTH_SPEC) -> None:
        super().__init__()
        ys, xs = np.mgrid[0 : spec.height, 0 : spec.width]
        design = np.column_stack([xs.ravel() / spec.width, ys.ravel() / spec.height, np.ones(xs.size)])
        self.register_buffer("design", torch.as_tensor(design, dtype=torch.float32))
        self.register_buffer("pinv", torch.as_tensor(np.linalg.pinv(design), dtype=torch.float32))
        self.height, self.width = spec.height, spec.width

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        flat = depth.reshape(depth.shape[0], self.height * self.width)
        residual = flat - (flat @ self.pinv.T) @ self.design.T
        features = [_spread(residual)]
        grid = residual.reshape(depth.shape[0], 1, self.height, self.width)
        for k in SCALES:
            fine = functional.avg_pool2d(grid, k, 1, k // 2, count_include_pad=False)
            coarse = functional.avg_pool2d(grid, 3 * k, 1, (3 * k) // 2, count_include_pad=False)
            band = (fine - coarse).reshape(depth.shape[0], -1)
            spread = _spread(band) + 1e-3
            low, high = band.amin(dim=1), band.amax(dim=1)
            features += [low, high, spread, low / spread, high / spread]
        return torch.stack(features, dim=1)


def _spread(x: torch.Tensor) -> torch.Tensor:
    centred = x - x.mean(dim=1, keepdim=True)
    return (centred * centred).mean(dim=1).sqrt()


class DepthFusionHead(nn.Module):
    """feat_s8, feat_s16, depth → class probabilities: RGB head logits + linear depth logits."""

    def __init__(self, rgb: PrimaryHead, depth_stats: tuple[np.ndarray, np.ndarray], spec: DepthSpec) -> None:
        super().__init__()
        self.rgb = rgb
        self.depth_features = DepthFeatures(spec)
        self.register_buffer("depth_mean", torch.as_tensor(depth_stats[0], dtype=torch.float32))
        self.register_buffer("depth_scale", 1.0 / torch.as_tensor(depth_stats[1], dtype=torch.float32).clamp_min(1e-4))
        self.depth_linear = nn.Linear(DEPTH_FEATURES, rgb.num_classes)
        self.register_buffer("temperature", torch.ones(1))

    def logits_prepared(self, s8: torch.Tensor, s16: torch.Tensor, depth_std: torch.Tensor) -> torch.Tensor:
        return self.rgb.logits_prepared(s8, s16) + self.depth_linear(depth_std)

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.depth_mean) * self.depth_scale

    def forward(self, feat_s8: torch.Tensor, feat_s16: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        s8, s16 = self.rgb.prepare(feat_s8, feat_s16)
        logits = self.logits_prepared(s8, s16, self.standardise(self.depth_features(depth)))
        return torch.softmax(logits / self.temperature, dim=1)


def train_depth_detector(
    data: DepthDataset,
    mode: str,
    *,
    epochs: int = FAST_EPOCHS,
    seed: int = 0,
    threshold: float = 0.9,
    progress_callback: ProgressCallback | None = None,
    cancel_check: Callable[[], bool] | None = None,
    runner: BackboneRunner | None = None,
    spec: DepthSpec = DEPTH_SPEC,
) -> TrainedModels:
    """Train the fused primary and the RGB OODD; ``primary_onnx`` takes ``image`` and ``depth``."""
    started = time.perf_counter()
    torch.manual_seed(seed)

    def report(stage: str, step: int, total: int, **metrics: float) -> None:
        if cancel_check is not None and cancel_check():
            raise TrainingCancelled(f"cancelled during {stage}")
        if progress_callback is not None:
            progress_callback(Progress(stage, step, total, metrics, time.perf_counter() - started))

    runner = runner or BackboneRunner()
    fit_idx, val_idx = stratified_split(data.labels, 0.25, seed)
    fit_maps = dict(
        zip(
            PRIMARY_INPUTS,
            runner.maps([data.rgb[i] for i in fit_idx], DEFAULT_INPUT, TRAIN_VIEWS, outputs=PRIMARY_INPUTS),
            strict=True,
        )
    )
    val_maps = dict(
        zip(
            PRIMARY_INPUTS,
            runner.maps([data.rgb[i] for i in val_idx], DEFAULT_INPUT, outputs=PRIMARY_INPUTS),
            strict=True,
        )
    )
    report("features", 1, 1)
    with torch.no_grad():
        depth_all = DepthFeatures(spec)(torch.from_numpy(data.depth))
    fit_depth = depth_all[fit_idx]
    head = DepthFusionHead(
        PrimaryHead(len(data.class_names), _channel_stats(fit_maps)),
        (fit_depth.mean(dim=0).numpy(), fit_depth.std(dim=0).numpy()),
        spec,
    )
    with torch.no_grad():
        s8, s16 = head.rgb.prepare(*_tensors(fit_maps))
        v8, v16 = head.rgb.prepare(*_tensors(val_maps))
        fit_d = head.standardise(fit_depth).repeat(len(TRAIN_VIEWS), 1)  # depth features do not change with the view
        val_d = head.standardise(depth_all[val_idx])
    targets = torch.from_numpy(np.tile(data.labels[fit_idx], len(TRAIN_VIEWS)))
    counts = np.bincount(targets.numpy(), minlength=len(data.class_names)).astype(np.float32)
    loss_fn = nn.CrossEntropyLoss(weight=torch.from_numpy(counts.sum() / (len(counts) * np.maximum(counts, 1))))
    # Stagewise: the depth logits first (a few numbers, little to overfit), then the RGB
    # head on top of them. Trained together, the RGB head memorises tens of images before
    # the depth weights have learned anything, and the fused model is no better than RGB.
    depth_optimizer = torch.optim.AdamW(head.depth_linear.parameters(), lr=5e-2, weight_decay=1e-2)
    for _step in range(DEPTH_STEPS):
        loss = loss_fn(head.depth_linear(fit_d), targets)
        depth_optimizer.zero_grad()
        loss.backward()
        depth_optimizer.step()
    report("depth", DEPTH_STEPS, DEPTH_STEPS, loss=float(loss.detach()))
    head.depth_linear.requires_grad_(False)
    with torch.no_grad():
        offset = head.depth_linear(fit_d)
    optimizer = torch.optim.AdamW(head.rgb.parameters(), lr=3e-3, weight_decay=5e-2)
    for epoch in range(epochs):
        head.train()
        order = torch.randperm(len(targets))
        for start in range(0, len(order), 32):
            idx = order[start : start + 32]
            loss = loss_fn(head.rgb.logits_prepared(s8[idx], s16[idx]) + offset[idx], targets[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        report("primary", epoch + 1, epochs, loss=float(loss.detach()))
    head.eval()
    with torch.no_grad():
        val_logits = head.logits_prepared(v8, v16, val_d)
    # The held-out pairs set the temperature as the RGB trainer's out-of-fold answers do:
    # answers at >= threshold must be right at least that often (calibration.py).
    val_labels = data.labels[val_idx]
    val_in_domain = _in_domain(_fit_oodd(fit_maps["feat_s16"][: len(fit_idx)]), val_maps["feat_s16"])
    calibration = calibrate(val_logits.double().numpy(), val_in_domain, val_labels, threshold)
    head.temperature.fill_(calibration.temperature)
    val_accuracy = float((val_logits.argmax(1).numpy() == val_labels).mean())
    validation = {"val_accuracy": val_accuracy, "temperature": calibration.temperature}
    report("primary", epochs, epochs, **validation)
    primary_onnx = _merge_fused(runner.model_bytes, head, spec)
    oodd = _fit_oodd(np.concatenate([fit_maps["feat_s16"][: len(fit_idx)], val_maps["feat_s16"]]))
    oodd_onnx = merge_with_backbone(runner.model_bytes, oodd, OODD_INPUTS, IN_DOMAIN, OODD_PREFIX)
    report("export", 1, 1)
    trained = TrainedModels(
        mode=mode,
        class_names=data.class_names,
        input_spec=DEFAULT_INPUT,
        primary_onnx=primary_onnx,
        oodd_onnx=oodd_onnx,
        backbone_id=runner.info.id,
        backbone_sha256=runner.info.sha256,
        trainer="fast-depth",
        class_counts=data.class_counts(),
        training_set_size=len(data.labels),
        skipped=data.skipped,
        validation=validation,
        train_seconds=time.perf_counter() - started,
        # The fused graph has a second input: it cannot share a backbone run with others.
        primary_shares_backbone=False,
        depth_input=spec,
        calibration=calibration,
    )
    return trained


def _merge_fused(backbone_bytes: bytes, head: DepthFusionHead, spec: DepthSpec) -> bytes:
    """backbone (image) + fused head (its maps, depth) → one graph with inputs ``image`` and ``depth``."""
    dummies = (
        torch.zeros(1, _CHANNELS["feat_s8"], 4, 4),
        torch.zeros(1, _CHANNELS["feat_s16"], 4, 4),
        torch.zeros(1, 1, spec.height, spec.width),
    )
    names = [*PRIMARY_INPUTS, spec.tensor_name]
    dynamic = {name: {0: "batch", 2: f"{name}_h", 3: f"{name}_w"} for name in PRIMARY_INPUTS}
    dynamic[spec.tensor_name] = {0: "batch"}
    dynamic[PROBABILITIES] = {0: "batch"}
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            head.eval(),
            dummies,
            buffer,
            input_names=names,
            output_names=[PROBABILITIES],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    head_model = onnx.load_from_string(buffer.getvalue())
    backbone = onnx.load_from_string(backbone_bytes)
    head_model.ir_version = backbone.ir_version
    merged = compose.merge_models(
        backbone,
        head_model,
        io_map=[(name, name) for name in PRIMARY_INPUTS],
        outputs=[PRIMARY_PREFIX + PROBABILITIES],
        prefix2=PRIMARY_PREFIX,
    )
    _rename(merged.graph, PRIMARY_PREFIX + spec.tensor_name, spec.tensor_name)
    _rename(merged.graph, PRIMARY_PREFIX + PROBABILITIES, PROBABILITIES)
    onnx.checker.check_model(merged)
    return merged.SerializeToString()


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in (*graph.input, *graph.output):
        if value.name == old:
            value.name = new
