"""Library API the CLI and the retraining worker call: train, then export a package.

``train_detector`` works in memory and reports progress through a callback (stage,
step, total, metrics) and stops between steps when ``cancel_check()`` says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from intellioptics_common.depth import DepthSpec
from intellioptics_common.ids import new_id
from intellioptics_common.model_package import (
    BackboneRef,
    InputSpec,
    Kind,
    PipelineConfig,
    PredictorMetadata,
    write_version,
)
from intellioptics_training.backbone import DEFAULT_INPUT
from intellioptics_training.calibration import (
    FLAT_TEMPERATURE,
    Calibration,
    adjusted_confidence,
    calibrate,
    softmax,
)
from intellioptics_training.config import get_settings
from intellioptics_training.data import Dataset, Sample, prepare, stratified_folds
from intellioptics_training.errors import DatasetError, TrainingCancelled
from intellioptics_training.features import BackboneRunner
from intellioptics_training.heads import (
    IN_DOMAIN,
    OODD_INPUTS,
    OODD_PREFIX,
    PRIMARY_INPUTS,
    PRIMARY_PREFIX,
    PROBABILITIES,
    EnsembleHead,
    OoddHead,
    PrimaryHead,
    merge_with_backbone,
)

# Two views (the image and its half turn): more views helped less than they cost on 2
# cores, and cross-fitting multiplies every view's cost by the number of head fits.
TRAIN_VIEWS = ("identity", "rot180")
FAST_EPOCHS = 25
FINETUNE_EPOCHS = 8
CROSSFIT_FOLDS = 3
MODE_NAMES = {"binary": "BINARY", "multiclass": "MULTI_CLASS"}
_MAPS = ("feat_s8", "feat_s16")


@dataclass(frozen=True)
class Progress:
    stage: str  # "features" | "crossfit" | "primary" | "oodd" | "export"
    step: int
    total: int
    metrics: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class OutOfFold:
    """Every training image scored by a model that never saw it, through the served
    model's temperature: what the edge would have answered on images like these."""

    names: tuple[str, ...]
    labels: np.ndarray  # N, indices into class_names
    probabilities: np.ndarray  # N x K
    in_domain: np.ndarray  # N, the fold's OODD score
    folds: int


@dataclass(frozen=True)
class TrainedModels:
    """Both models as ONNX bytes (image tensor in), ready to be written as a package.
    The primary trained on every image; ``out_of_fold`` measured and calibrated it."""

    mode: str
    class_names: tuple[str, ...]
    input_spec: InputSpec
    primary_onnx: bytes
    oodd_onnx: bytes
    backbone_id: str
    backbone_sha256: str
    trainer: str
    class_counts: dict[str, int]
    training_set_size: int
    skipped: int
    validation: dict[str, float]
    train_seconds: float
    primary_shares_backbone: bool = True
    depth_input: DepthSpec | None = None  # the primary also takes a depth map (training/depth.py)
    calibration: Calibration | None = None
    out_of_fold: OutOfFold | None = None


def train_detector(
    samples: list[Sample] | Dataset,
    mode: str,
    class_names: tuple[str, ...] | None = None,
    *,
    trainer: str = "fast",
    epochs: int | None = None,
    seed: int = 0,
    threshold: float = 0.9,
    folds: int = CROSSFIT_FOLDS,
    progress_callback: ProgressCallback | None = None,
    cancel_check: Callable[[], bool] | None = None,
    runner: BackboneRunner | None = None,
) -> TrainedModels:
    """Train on every image; cross-fit ``folds`` models for out-of-fold predictions, and
    set the served model's temperature from them so that its answers at ``threshold``
    are right at least that often (see :mod:`intellioptics_training.calibration`)."""
    if trainer not in ("fast", "auto", "finetune"):
        raise DatasetError(f"trainer must be fast, finetune or auto, not {trainer!r}")
    if epochs is None:
        epochs = FINETUNE_EPOCHS if trainer == "finetune" else FAST_EPOCHS
    started = time.perf_counter()
    spec = DEFAULT_INPUT
    data = samples if isinstance(samples, Dataset) else prepare(samples, mode, spec, class_names)
    torch.manual_seed(seed)
    threads = get_settings().threads
    if threads > 0:
        torch.set_num_threads(threads)

    def report(stage: str, step: int, total: int, **metrics: float) -> None:
        if cancel_check is not None and cancel_check():
            raise TrainingCancelled(f"cancelled during {stage}")
        if progress_callback is not None:
            progress_callback(Progress(stage, step, total, metrics, time.perf_counter() - started))

    runner = runner or BackboneRunner()
    n, k = len(data.labels), len(data.class_names)
    splits = stratified_folds(data.labels, folds, seed)
    views = TRAIN_VIEWS
    maps = dict(
        zip(
            _MAPS,
            runner.maps(data.rgb, spec, views, progress=lambda s, t: report("features", s, t), outputs=_MAPS),
            strict=True,
        )
    )
    identity = {name: m[:n] for name, m in maps.items()}
    oof_logits = np.zeros((n, k))
    oof_in_domain = np.ones(n)
    fold_epochs = len(splits) * epochs

    if trainer == "finetune":
        from intellioptics_training.finetune import export_finetuned, finetune_primary, logits_of

        for f, (fit, held) in enumerate(splits):
            head = PrimaryHead(k, _channel_stats(_views_of(identity, fit, 1)))
            fold_report = _offset_report(report, "crossfit", f * epochs, fold_epochs)
            model = finetune_primary(
                [data.rgb[i] for i in fit], data.labels[fit], head, spec, epochs, fold_report, seed
            )
            oof_logits[held] = logits_of(model, [data.rgb[i] for i in held], spec).double().numpy()
            oof_in_domain[held] = _in_domain(_fit_oodd(identity["feat_s16"][fit]), identity["feat_s16"][held])
        head = PrimaryHead(k, _channel_stats(identity))
        final = finetune_primary(data.rgb, data.labels, head, spec, epochs, report, seed)
        calibration = _calibration(oof_logits, oof_in_domain, data.labels, threshold, splits)
        final.head.temperature.fill_(calibration.temperature)
        primary_onnx = export_finetuned(final, spec)
    else:
        members = []
        for f, (fit, held) in enumerate(splits):
            fold_report = _offset_report(report, "crossfit", f * epochs, fold_epochs)
            head = _fit_primary(
                _views_of(maps, fit, len(views)), np.tile(data.labels[fit], len(views)), k, epochs, fold_report
            )
            with torch.no_grad():
                oof_logits[held] = head.logits(*_tensors(_views_of(identity, held, 1))).double().numpy()
            members.append(head)
            oof_in_domain[held] = _in_domain(_fit_oodd(identity["feat_s16"][fit]), identity["feat_s16"][held])
        served = EnsembleHead([*members, _fit_primary(maps, np.tile(data.labels, len(views)), k, epochs, report)])
        calibration = _calibration(oof_logits, oof_in_domain, data.labels, threshold, splits)
        served.temperature.fill_(calibration.temperature)
        primary_onnx = merge_with_backbone(runner.model_bytes, served, PRIMARY_INPUTS, PROBABILITIES, PRIMARY_PREFIX)

    out_of_fold = None
    validation: dict[str, float] = {"temperature": calibration.temperature}
    if splits:
        probabilities = softmax(oof_logits, calibration.temperature)
        out_of_fold = OutOfFold(tuple(data.names), data.labels, probabilities, oof_in_domain, len(splits))
        validation = {**validation, **_oof_summary(out_of_fold, threshold)}
    report("primary", epochs, epochs, **validation)

    # The OODD bank holds every training image (identity view).
    oodd = _fit_oodd(identity["feat_s16"])
    report("oodd", 1, 1)
    oodd_onnx = merge_with_backbone(runner.model_bytes, oodd, OODD_INPUTS, IN_DOMAIN, OODD_PREFIX)
    report("export", 1, 1)
    return TrainedModels(
        mode=mode,
        class_names=data.class_names,
        input_spec=spec,
        primary_onnx=primary_onnx,
        oodd_onnx=oodd_onnx,
        backbone_id=runner.info.id,
        backbone_sha256=runner.info.sha256,
        trainer="finetune-mil" if trainer == "finetune" else "fast-mil",
        primary_shares_backbone=trainer != "finetune",
        class_counts=data.class_counts(),
        training_set_size=len(data.labels),
        skipped=data.skipped,
        validation=validation,
        train_seconds=time.perf_counter() - started,
        calibration=calibration,
        out_of_fold=out_of_fold,
    )


def _calibration(
    logits: np.ndarray,
    in_domain: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    splits: list[tuple[np.ndarray, np.ndarray]],
) -> Calibration:
    if splits:
        return calibrate(logits, in_domain, labels, threshold)
    reason = "too few labels in some class to cross-fit (two per class at least): every answer escalates"
    return Calibration(FLAT_TEMPERATURE, 1.0, threshold, len(labels), 0, 0, None, reason)


def _oof_summary(oof: OutOfFold, threshold: float) -> dict[str, float]:
    predicted = oof.probabilities.argmax(axis=1)
    correct = predicted == oof.labels
    confident = adjusted_confidence(oof.probabilities, oof.in_domain) >= threshold
    recalls = [correct[oof.labels == c].mean() for c in np.unique(oof.labels)]
    summary = {
        "oof_accuracy": float(correct.mean()),
        "oof_balanced_accuracy": float(np.mean(recalls)),
        "oof_confident_coverage": float(confident.mean()),
    }
    if confident.any():
        summary["oof_confident_accuracy"] = float(correct[confident].mean())
    return summary


def _offset_report(report: Callable[..., None], stage: str, offset: int, total: int) -> Callable[..., None]:
    """The cross-fitting runs share one progress bar: fold f's epoch e is step f * E + e."""

    def shifted(_stage: str, step: int, _total: int, **metrics: float) -> None:
        report(stage, offset + step, total, **metrics)

    return shifted


def _views_of(maps: dict[str, np.ndarray], idx: np.ndarray, views: int) -> dict[str, np.ndarray]:
    """The rows of images ``idx`` in every one of ``views`` view-major blocks."""
    n = len(next(iter(maps.values()))) // views
    rows = np.concatenate([v * n + idx for v in range(views)])
    return {name: m[rows] for name, m in maps.items()}


def _tensors(maps: dict[str, np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(maps[name]) for name in PRIMARY_INPUTS]


def _channel_stats(maps: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {name: (maps[name].mean(axis=(0, 2, 3)), maps[name].std(axis=(0, 2, 3))) for name in PRIMARY_INPUTS}


def _fit_primary(
    maps: dict[str, np.ndarray], labels: np.ndarray, num_classes: int, epochs: int, report: Callable[..., None]
) -> PrimaryHead:
    head = PrimaryHead(num_classes, _channel_stats(maps))
    # The standardisation and self-contrast are fixed: compute them once, not per epoch.
    with torch.no_grad():
        inputs = head.prepare(*_tensors(maps))
    targets = torch.from_numpy(labels)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float32)
    weights = torch.from_numpy(counts.sum() / (num_classes * np.maximum(counts, 1)))
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=5e-2)
    batch = 32
    for epoch in range(epochs):
        head.train()
        order = torch.randperm(len(targets))
        total = 0.0
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            loss = loss_fn(head.logits_prepared(*(x[idx] for x in inputs)), targets[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        report("primary", epoch + 1, epochs, loss=total / len(order))
    return head.eval()


def _in_domain(oodd: OoddHead, s16: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return oodd(torch.from_numpy(s16)).numpy().reshape(-1).astype(np.float64)


def _fit_oodd(s16_maps: np.ndarray) -> OoddHead:
    pooled = s16_maps.mean(axis=(2, 3))
    probe = OoddHead((pooled.mean(axis=0), pooled.std(axis=0)), np.zeros((1, pooled.shape[1])), 0.0, 1.0)
    with torch.no_grad():
        embeddings = probe.embed(torch.from_numpy(s16_maps)).numpy()
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    loo = 1.0 - similarity.max(axis=1)
    reference = float(np.quantile(loo, 0.95)) + 1e-4
    # In-domain images sit at or below the reference distance (score ≥ 0.98); twice
    # that distance scores ≈ 0.07, which pulls any answer below a 0.9 threshold.
    stats = (pooled.mean(axis=0), pooled.std(axis=0))
    return OoddHead(stats, embeddings, center=1.6 * reference, scale=0.15 * reference).eval()


def export_package(
    models_dir: Path,
    detector_id: str,
    trained: TrainedModels,
    *,
    metrics: dict | None = None,
    model_ids: tuple[str, str] | None = None,
) -> dict[str, Path]:
    """Write primary and oodd versions; returns their directories."""
    paths: dict[str, Path] = {}
    mode = MODE_NAMES.get(trained.mode, trained.mode)
    outputs: tuple[tuple[Kind, bytes, str], ...] = (
        ("primary", trained.primary_onnx, PROBABILITIES),
        ("oodd", trained.oodd_onnx, IN_DOMAIN),
    )
    for kind, model, output in outputs:
        pipeline = PipelineConfig(
            kind=kind,
            mode=mode,
            class_names=trained.class_names,
            input=trained.input_spec,
            output=output,
            backbone=None
            if kind == "primary" and not trained.primary_shares_backbone
            else BackboneRef(id=trained.backbone_id, sha256=trained.backbone_sha256, output="feat_s8,feat_s16"),
            depth=trained.depth_input if kind == "primary" else None,
        )
        metadata = PredictorMetadata(
            detector_id=detector_id,
            kind=kind,
            trainer=trained.trainer,
            backbone_id=trained.backbone_id,
            training_set_size=trained.training_set_size,
            class_counts=trained.class_counts,
            metrics=dict(metrics or {}) if kind == "primary" else {},
            extra={
                "validation": trained.validation,
                "calibration": trained.calibration.to_dict() if trained.calibration else None,
                "train_seconds": round(trained.train_seconds, 2),
            },
        )
        model_id = (model_ids[0] if kind == "primary" else model_ids[1]) if model_ids else new_id("mdl")
        paths[kind] = write_version(
            Path(models_dir),
            detector_id,
            kind,
            model_bytes=model,
            pipeline=pipeline,
            metadata=metadata,
            model_id=model_id,
        )
    return paths
