"""RGB + depth detectors: a depth branch fused with the RGB head, one ONNX graph, two inputs.

Some defects (a dent, a missing bead, a height error) show in depth and not in colour.
The depth branch computes fixed features, not learned ones, so that tens of pairs are
enough (:mod:`intellioptics_training.depth_features`).

Its 49 numbers, standardised, feed an L1-penalised linear layer (the scales and maps that do
not separate the labels drop out). The RGB head (:class:`PrimaryHead` on the shared
backbone's maps) is trained apart, and the two logits are mixed with the weight whose
out-of-fold answers fit best: fitted jointly, the RGB head memorised tens of images before
the depth weights learned anything, and where colour carries nothing it only adds noise.
Both branches are cross-fitted as the RGB trainer does: every pair is answered by models
that never saw it, those answers choose the mix and set the temperature (calibration.py;
the mix is one number chosen on the same answers, a small optimism), and the served model
is the mean of the fold models and the model on every pair (the RGB head's only when the
mix gives colour some weight). The graph uses only
operators that ``model_check`` allows. The OODD model stays RGB-only: "is this the part
we know" is a question about its looks.

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

from intellioptics_common.depth import DepthSpec, depth_input
from intellioptics_common.errors import DepthMapError, ImageDecodeError, ImageTooLargeError
from intellioptics_common.imaging import decode_image
from intellioptics_common.preprocessing import draft_size, resize_rgb
from intellioptics_training.backbone import DEFAULT_INPUT
from intellioptics_training.calibration import nll_temperature, softmax
from intellioptics_training.data import IMAGE_SUFFIXES, normalize_label, stratified_folds
from intellioptics_training.depth_features import DepthFeatures
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
    EnsembleHead,
    PrimaryHead,
    merge_with_backbone,
)
from intellioptics_training.trainer import (
    CROSSFIT_FOLDS,
    FAST_EPOCHS,
    TRAIN_VIEWS,
    OutOfFold,
    Progress,
    ProgressCallback,
    TrainedModels,
    _calibration,
    _fit_oodd,
    _fit_primary,
    _in_domain,
    _offset_report,
    _oof_summary,
    _tensors,
    _views_of,
)

DEPTH_SPEC = DepthSpec()
DEPTH_STEPS = 500  # FISTA iterations
DEPTH_L1 = 0.02
RGB_WEIGHTS = tuple(i / 10 for i in range(11))  # the RGB share of the fused logits
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
    names: tuple[str, ...] = ()

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
    names: list[str] = []
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
        names.append(sample.name or f"pair_{len(names)}")
    data = DepthDataset(
        rgb,
        np.asarray(depth, dtype=np.float32).reshape(-1, 1, spec.height, spec.width),
        np.asarray(labels, dtype=np.int64),
        tuple(class_names),
        skipped,
        names=tuple(names),
    )
    if require_two_classes:
        present = [name for name, count in data.class_counts().items() if count > 0]
        if len(present) < 2:
            raise DatasetError(
                f"training needs RGB + depth pairs of at least two classes; found {present or 'none'} "
                f"({skipped} unreadable pairs skipped)"
            )
    return data


class DepthFusionHead(nn.Module):
    """feat_s8, feat_s16, depth → class probabilities: a mix of the depth and RGB logits."""

    depth_mean: torch.Tensor
    depth_scale: torch.Tensor
    temperature: torch.Tensor

    def __init__(
        self,
        rgb: EnsembleHead,
        depth_linear: nn.Linear,
        depth_stats: tuple[torch.Tensor, torch.Tensor],
        rgb_weight: float,
        spec: DepthSpec,
    ) -> None:
        super().__init__()
        self.rgb = rgb
        self.depth_features = DepthFeatures(spec)
        self.register_buffer("depth_mean", depth_stats[0].clone())
        self.register_buffer("depth_scale", 1.0 / depth_stats[1].clamp_min(1e-4))
        self.depth_linear = depth_linear
        self.rgb_weight = float(rgb_weight)
        self.register_buffer("temperature", torch.ones(1))

    def forward(self, feat_s8: torch.Tensor, feat_s16: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        depth_logits = self.depth_linear((self.depth_features(depth) - self.depth_mean) * self.depth_scale)
        logits = _mix(depth_logits, self.rgb.logits(feat_s8, feat_s16), self.rgb_weight)
        return torch.softmax(logits / self.temperature, dim=1)


def _mix(depth_logits: torch.Tensor, rgb_logits: torch.Tensor, rgb_weight: float) -> torch.Tensor:
    return (1.0 - rgb_weight) * depth_logits + rgb_weight * rgb_logits


def _fit_depth_linear(features: torch.Tensor, labels: np.ndarray, num_classes: int) -> nn.Linear:
    """Class-balanced multinomial logistic regression on standardised depth features,
    L1-penalised so that the scales and statistics that do not separate these labels drop
    out. Solved by FISTA (proximal gradient) in numpy: exact zeros, and milliseconds
    where an autograd optimiser took seconds on a busy machine."""
    x = np.hstack([features.numpy().astype(np.float64), np.ones((len(labels), 1))])
    onehot = np.eye(num_classes)[labels]
    counts = np.bincount(labels, minlength=num_classes)
    weights = (1.0 / np.maximum(counts, 1))[labels]
    weights /= weights.sum()
    step = 1.0 / (0.5 * np.linalg.eigvalsh((x * weights[:, None]).T @ x).max())  # 1 / Lipschitz bound
    theta = np.zeros((x.shape[1], num_classes))
    momentum, t = theta, 1.0
    for _step in range(DEPTH_STEPS):
        logits = x @ momentum
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        new = momentum - step * (x.T @ ((p - onehot) * weights[:, None]))
        new[:-1] = np.sign(new[:-1]) * np.maximum(np.abs(new[:-1]) - step * DEPTH_L1, 0.0)  # the bias is not penalised
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        momentum = new + (t - 1) / t_next * (new - theta)
        theta, t = new, t_next
    linear = nn.Linear(features.shape[1], num_classes).requires_grad_(False)
    linear.weight.copy_(torch.from_numpy(theta[:-1].T))
    linear.bias.copy_(torch.from_numpy(theta[-1]))
    return linear


def _mean_linear(members: list[nn.Linear]) -> nn.Linear:
    """The members' mean logits as one layer (they share the standardised input)."""
    mean = nn.Linear(members[0].in_features, members[0].out_features).requires_grad_(False)
    mean.weight.copy_(torch.stack([m.weight for m in members]).mean(dim=0))
    mean.bias.copy_(torch.stack([m.bias for m in members]).mean(dim=0))
    return mean


def _choose_rgb_weight(depth_logits: np.ndarray, rgb_logits: np.ndarray, labels: np.ndarray) -> float:
    """The mix whose out-of-fold answers fit the labels best (log-loss at its best temperature)."""
    losses = [
        nll_temperature(_mix(torch.from_numpy(depth_logits), torch.from_numpy(rgb_logits), w).numpy(), labels)[1]
        for w in RGB_WEIGHTS
    ]
    return RGB_WEIGHTS[int(np.argmin(losses))]


def train_depth_detector(
    data: DepthDataset,
    mode: str,
    *,
    epochs: int = FAST_EPOCHS,
    seed: int = 0,
    threshold: float = 0.9,
    folds: int = CROSSFIT_FOLDS,
    progress_callback: ProgressCallback | None = None,
    cancel_check: Callable[[], bool] | None = None,
    runner: BackboneRunner | None = None,
    spec: DepthSpec = DEPTH_SPEC,
) -> TrainedModels:
    """Train the fused primary and the RGB OODD; ``primary_onnx`` takes ``image`` and ``depth``.

    As the RGB trainer does, ``folds`` cross-fitted models answer every pair out of fold;
    those answers choose the depth / RGB mix and set the temperature, and the served model
    is the mean of the fold models and one trained on every pair (for the RGB head only
    when the mix gives colour any weight)."""
    started = time.perf_counter()
    torch.manual_seed(seed)

    def report(stage: str, step: int, total: int, **metrics: float) -> None:
        if cancel_check is not None and cancel_check():
            raise TrainingCancelled(f"cancelled during {stage}")
        if progress_callback is not None:
            progress_callback(Progress(stage, step, total, metrics, time.perf_counter() - started))

    runner = runner or BackboneRunner()
    n, k = len(data.labels), len(data.class_names)
    views = len(TRAIN_VIEWS)
    maps = dict(
        zip(
            PRIMARY_INPUTS,
            runner.maps(
                data.rgb,
                DEFAULT_INPUT,
                TRAIN_VIEWS,
                progress=lambda s, t: report("features", s, t),
                outputs=PRIMARY_INPUTS,
            ),
            strict=True,
        )
    )
    identity = {name: m[:n] for name, m in maps.items()}
    with torch.no_grad():
        depth_raw = DepthFeatures(spec)(torch.from_numpy(data.depth))
    # Standardised once on every pair: the statistics use no labels.
    depth_stats = (depth_raw.mean(dim=0), depth_raw.std(dim=0).clamp_min(1e-4))
    depth_std = (depth_raw - depth_stats[0]) / depth_stats[1]

    splits = stratified_folds(data.labels, folds, seed)
    oof_depth, oof_rgb, oof_in_domain = np.zeros((n, k)), np.zeros((n, k)), np.ones(n)
    depth_members: list[nn.Linear] = []
    rgb_members: list[PrimaryHead] = []
    fold_epochs = (len(splits) + 1) * epochs
    for f, (fit, held) in enumerate(splits):
        depth_members.append(_fit_depth_linear(depth_std[fit], data.labels[fit], k))
        rgb_members.append(
            _fit_primary(
                _views_of(maps, fit, views),
                np.tile(data.labels[fit], views),
                k,
                epochs,
                _offset_report(report, "crossfit", f * epochs, fold_epochs),
            )
        )
        with torch.no_grad():
            oof_depth[held] = depth_members[-1](depth_std[held]).double().numpy()
            oof_rgb[held] = rgb_members[-1].logits(*_tensors(_views_of(identity, held, 1))).double().numpy()
        oof_in_domain[held] = _in_domain(_fit_oodd(identity["feat_s16"][fit]), identity["feat_s16"][held])
    depth_members.append(_fit_depth_linear(depth_std, data.labels, k))
    rgb_weight = _choose_rgb_weight(oof_depth, oof_rgb, data.labels) if splits else 0.5
    if rgb_weight > 0 or not splits:  # where colour carries nothing, the costliest fit is skipped
        rgb_members.append(
            _fit_primary(
                maps,
                np.tile(data.labels, views),
                k,
                epochs,
                _offset_report(report, "crossfit", len(splits) * epochs, fold_epochs),
            )
        )
    oof_logits = _mix(torch.from_numpy(oof_depth), torch.from_numpy(oof_rgb), rgb_weight).numpy()
    calibration = _calibration(oof_logits, oof_in_domain, data.labels, threshold, splits)
    head = DepthFusionHead(EnsembleHead(rgb_members), _mean_linear(depth_members), depth_stats, rgb_weight, spec)
    head.temperature.fill_(calibration.temperature)

    validation: dict[str, float] = {"temperature": calibration.temperature, "rgb_weight": rgb_weight}
    out_of_fold = None
    if splits:
        names = data.names or tuple(f"pair_{i}" for i in range(n))
        out_of_fold = OutOfFold(
            names, data.labels, softmax(oof_logits, calibration.temperature), oof_in_domain, len(splits)
        )
        depth_only = oof_depth.argmax(axis=1) == data.labels
        validation = {
            **validation,
            **_oof_summary(out_of_fold, threshold),
            "oof_depth_only_balanced_accuracy": float(
                np.mean([depth_only[data.labels == c].mean() for c in np.unique(data.labels)])
            ),
        }
    report("primary", epochs, epochs, **validation)
    primary_onnx = _merge_fused(runner.model_bytes, head.eval(), spec)
    oodd_onnx = merge_with_backbone(
        runner.model_bytes, _fit_oodd(identity["feat_s16"]), OODD_INPUTS, IN_DOMAIN, OODD_PREFIX
    )
    report("export", 1, 1)
    return TrainedModels(
        mode=mode,
        class_names=data.class_names,
        input_spec=DEFAULT_INPUT,
        primary_onnx=primary_onnx,
        oodd_onnx=oodd_onnx,
        backbone_id=runner.info.id,
        backbone_sha256=runner.info.sha256,
        trainer="fast-depth",
        class_counts=data.class_counts(),
        training_set_size=n,
        skipped=data.skipped,
        validation=validation,
        train_seconds=time.perf_counter() - started,
        # The fused graph has a second input: it cannot share a backbone run with others.
        primary_shares_backbone=False,
        depth_input=spec,
        calibration=calibration,
        out_of_fold=out_of_fold,
    )


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
            buffer,  # type: ignore[arg-type]  # export writes to a file object; the stub names paths only
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
