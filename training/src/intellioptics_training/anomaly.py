"""Anomaly detectors trained from good images only (PatchCore-style memory bank).

Features: the backbone's stride-8 (40 ch) and stride-16 (112 ch) maps, the stride-16 map
upsampled to stride 8, concatenated, optionally standardised by the good patches'
channel statistics and projected by PCA. Each stride-8 cell already sees about 100 px of
its surroundings; averaging it again over a 3x3 neighbourhood (PatchCore's local
aggregation) measured worse here, because it spread a small defect into the texture
around it (``feature_pool`` keeps the option).

Bank: a greedy k-centre coreset of all good patches, bounded in patch count (the
search cost at inference) and in bytes (64 MB per detector at most).

Score: every patch's distance to its nearest bank patch, computed as matrix products
(``||a||^2 - 2ab + ||b||^2``) so the whole scorer is one ONNX graph; the image score is
the map's maximum (``map_smooth`` can average the map first; it measured worse).

Threshold from good images alone, by cross-fitting: the good images are split into
``folds`` folds; each fold is scored against a coreset bank built (the same way) from
the other folds only, so every good image gets the score it would get as an unseen
image. The raw threshold is the higher of the empirical ``1 - target_false_alarm``
quantile of those scores and a Gaussian tail estimate (mean + z * std), since with 50
images an empirical 1 % quantile is little more than the maximum. A logistic maps raw
distances to ``[0, 1]``: the threshold to 0.5 and the median cross-fitted good score
to 0.10 (a NO at confidence 0.9), so twice the threshold's margin over a typical good
image reaches 0.9.

Out-of-domain: the classifier's OODD head (pooled stride-16 embedding, nearest good
image) is fitted on the same good images and shipped as the detector's ``oodd``
package, so an unrelated photo or a covered lens is pulled to chance confidence and
escalates instead of being called a defect.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from intellioptics_common.anomaly import DEFAULT_SEVERITY_CUTS, SeverityCuts
from intellioptics_common.model_package import (
    AnomalySpec,
    BackboneRef,
    InputSpec,
    PipelineConfig,
    PredictorMetadata,
)
from intellioptics_training.backbone import DEFAULT_INPUT
from intellioptics_training.data import Dataset
from intellioptics_training.errors import DatasetError, TrainingCancelled
from intellioptics_training.features import BackboneRunner
from intellioptics_training.heads import (
    IN_DOMAIN,
    OODD_INPUTS,
    OODD_PREFIX,
    merge_outputs_with_backbone,
    merge_with_backbone,
    write_primary_and_oodd,
)

ANOMALY_INPUTS = ("feat_s8", "feat_s16")
PROBABILITIES = "probabilities"
ANOMALY_SCORE = "anomaly_score"
ANOMALY_MAP = "anomaly_map"
ANOMALY_PREFIX = "anomaly/"
MAX_BANK_BYTES = 64 * 1024 * 1024
MIN_GOOD_IMAGES = 4
# Normalised score of the median cross-fitted good image: its NO answer has confidence
# 0.9, so at the common threshold T = 0.9 about half the good images are answered at the
# edge (0.15 answered 8-32 %; measured in docs/benchmarks.md).
_GOOD_AT = 0.10


@dataclass(frozen=True)
class AnomalyOptions:
    """Training knobs; the defaults are what the bench in docs/benchmarks.md measured."""

    target_false_alarm: float = 0.01
    folds: int = 5
    max_bank_patches: int = 1024
    max_bank_bytes: int = MAX_BANK_BYTES
    dims: int = 0  # PCA dimensions kept (0: no projection)
    # Neighbourhood (in stride-8 cells) each patch feature is averaged over, and the map
    # after the nearest-patch search; 1 is none. Measured in docs/benchmarks.md: on
    # small, subtle defects both 3x3 averages washed the defect into its surroundings.
    feature_pool: int = 1
    map_smooth: int = 1
    standardize: bool = False  # per-channel z-scores (measured: slightly worse)
    severity: SeverityCuts = DEFAULT_SEVERITY_CUTS
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.target_false_alarm < 0.5:
            raise DatasetError("the target false-alarm rate must be between 0 and 0.5 (for example 0.01)")
        if self.folds < 2:
            raise DatasetError("cross-fitting needs at least 2 folds")
        if self.feature_pool < 1 or self.feature_pool % 2 == 0 or self.map_smooth < 1 or self.map_smooth % 2 == 0:
            raise DatasetError("feature_pool and map_smooth are odd window sizes (1: none)")


class PatchFeatures(nn.Module):
    """feat_s8, feat_s16 → N x (H8 * W8) x dims locally aggregated patch features."""

    mean: torch.Tensor
    scale: torch.Tensor
    projection: torch.Tensor

    def __init__(self, mean: np.ndarray, std: np.ndarray, projection: np.ndarray, pool: int = 1) -> None:
        super().__init__()
        self.pool = int(pool)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("scale", 1.0 / torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-4).view(1, -1, 1, 1))
        self.register_buffer("projection", torch.as_tensor(projection, dtype=torch.float32))

    def raw(self, feat_s8: torch.Tensor, feat_s16: torch.Tensor) -> torch.Tensor:
        """Before standardisation and projection: N x C x H8 x W8."""
        a, b = feat_s8, feat_s16
        if self.pool > 1:
            a = F.avg_pool2d(a, self.pool, 1, self.pool // 2, count_include_pad=False)
            b = F.avg_pool2d(b, self.pool, 1, self.pool // 2, count_include_pad=False)
        b = F.interpolate(b, size=(a.shape[2], a.shape[3]), mode="bilinear", align_corners=False)
        return torch.cat([a, b], dim=1)

    def forward(self, feat_s8: torch.Tensor, feat_s16: torch.Tensor) -> torch.Tensor:
        x = (self.raw(feat_s8, feat_s16) - self.mean) * self.scale
        return x.flatten(2).transpose(1, 2) @ self.projection


class AnomalyHead(nn.Module):
    """feat_s8, feat_s16 → (probabilities [N, 2] as (NO, YES), anomaly_score [N, 1],
    anomaly_map [N, 1, 8 * H8, 8 * W8]), scores normalised so that 0.5 is the threshold."""

    def __init__(
        self, features: PatchFeatures, bank: np.ndarray, threshold: float, scale: float, smooth: int = 1
    ) -> None:
        super().__init__()
        self.features = features
        self.smooth = int(smooth)
        bank_t = torch.as_tensor(bank.T.copy(), dtype=torch.float32)
        # -2 b is stored pre-scaled, and ||a||^2 is added after the minimum (it does not
        # depend on the bank patch): one matrix product and one add over the N x P x M
        # distances instead of three passes.
        self.register_buffer("bank_t_neg2", -2.0 * bank_t)
        self.register_buffer("bank_sq", (bank_t * bank_t).sum(dim=0).view(1, 1, -1))
        self.threshold = float(threshold)
        self.scale = float(scale)

    def distance_map(self, feat_s8: torch.Tensor, feat_s16: torch.Tensor) -> torch.Tensor:
        """Raw nearest-bank-patch distance (averaged over ``smooth`` cells): N x 1 x H8 x W8."""
        q = self.features(feat_s8, feat_s16)
        nearest = (q @ self.bank_t_neg2 + self.bank_sq).amin(dim=2)
        dist = (nearest + (q * q).sum(dim=2)).clamp_min(0.0).sqrt()
        dmap = dist.reshape(feat_s8.shape[0], 1, feat_s8.shape[2], feat_s8.shape[3])
        if self.smooth <= 1:
            return dmap
        return F.avg_pool2d(dmap, self.smooth, 1, self.smooth // 2, count_include_pad=False)

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((raw - self.threshold) / self.scale)

    def forward(self, feat_s8: torch.Tensor, feat_s16: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        norm = self.normalise(self.distance_map(feat_s8, feat_s16))
        score = norm.amax(dim=(2, 3))
        amap = F.interpolate(norm, scale_factor=8.0, mode="bilinear", align_corners=False)
        return torch.cat([1.0 - score, score], dim=1), score, amap


@dataclass(frozen=True)
class TrainedAnomaly:
    """The anomaly scorer and its OODD model as ONNX bytes (image tensor in)."""

    input_spec: InputSpec
    primary_onnx: bytes
    oodd_onnx: bytes
    backbone_id: str
    backbone_sha256: str
    spec: AnomalySpec
    training_set_size: int
    skipped: int
    bank_patches: int
    bank_bytes: int
    crossfit_scores: tuple[float, ...]  # raw, one per good image
    validation: dict[str, float]
    train_seconds: float
    head: AnomalyHead = field(repr=False)


Report = Callable[[str, int, int], None]


def stage_reporter(progress: Report | None, cancel_check: Callable[[], bool] | None) -> Report:
    """A ``(stage, step, total)`` callback that stops training when ``cancel_check`` says so."""

    def report(stage: str, step: int, total: int) -> None:
        if cancel_check is not None and cancel_check():
            raise TrainingCancelled(f"cancelled during {stage}")
        if progress is not None:
            progress(stage, step, total)

    return report


def train_anomaly(
    data: Dataset,
    options: AnomalyOptions | None = None,
    *,
    runner: BackboneRunner | None = None,
    progress: Report | None = None,
    cancel_check: Callable[[], bool] | None = None,
) -> TrainedAnomaly:
    """Fit bank, threshold and OODD on ``data`` (good images; any label is taken as good)."""
    options = options or AnomalyOptions()
    started = time.perf_counter()
    n = len(data.rgb)
    if n < MIN_GOOD_IMAGES:
        raise DatasetError(
            f"an anomaly detector needs at least {MIN_GOOD_IMAGES} good images, found {n}"
            f" ({data.skipped} unreadable skipped)"
        )

    report = stage_reporter(progress, cancel_check)
    runner = runner or BackboneRunner()
    spec = DEFAULT_INPUT
    maps = runner.maps(data.rgb, spec, progress=lambda s, t: report("features", s, t))
    s8, s16 = torch.from_numpy(maps[0]), torch.from_numpy(maps[1])
    features = fit_features(s8, s16, options.dims, options.standardize, options.feature_pool)
    with torch.no_grad():
        patches = features(s8, s16)  # n x P x D
    per_image = patches.shape[1]
    budget = bank_budget(options, patches.shape[2])

    folds = min(options.folds, n)
    assignment = np.random.default_rng(options.seed).permutation(n) % folds
    crossfit = np.zeros(n)
    for fold in range(folds):
        held = np.flatnonzero(assignment == fold)
        kept = np.flatnonzero(assignment != fold)
        bank = greedy_coreset(
            patches[kept].reshape(-1, patches.shape[2]), _fold_budget(budget, len(kept), n), seed=fold
        )
        head = AnomalyHead(features, bank.numpy(), 0.0, 1.0, options.map_smooth)
        with torch.no_grad():
            raw = head.distance_map(s8[held], s16[held]).amax(dim=(1, 2, 3)).numpy()
        crossfit[held] = raw
        report("threshold", fold + 1, folds)
    threshold, scale = threshold_from_good(crossfit, options.target_false_alarm)

    bank = greedy_coreset(patches.reshape(-1, patches.shape[2]), budget, seed=options.seed)
    report("bank", 1, 1)
    head = AnomalyHead(features, bank.numpy(), threshold, scale, options.map_smooth).eval()
    primary_onnx = merge_outputs_with_backbone(
        runner.model_bytes, head, (PROBABILITIES, ANOMALY_SCORE, ANOMALY_MAP), ANOMALY_PREFIX, spatial=(ANOMALY_MAP,)
    )

    from intellioptics_training.trainer import _fit_oodd  # the classifier's OODD, fitted on good images

    oodd = _fit_oodd(maps[1])
    oodd_onnx = merge_with_backbone(runner.model_bytes, oodd, OODD_INPUTS, IN_DOMAIN, OODD_PREFIX)
    report("export", 1, 1)
    normalised = 1.0 / (1.0 + np.exp(-(crossfit - threshold) / scale))
    anomaly_spec = AnomalySpec(
        threshold=0.5,
        severity_cuts=options.severity,
        score_output=ANOMALY_SCORE,
        map_output=ANOMALY_MAP,
        target_false_alarm=options.target_false_alarm,
        raw_threshold=threshold,
        raw_scale=scale,
    )
    return TrainedAnomaly(
        input_spec=spec,
        primary_onnx=primary_onnx,
        oodd_onnx=oodd_onnx,
        backbone_id=runner.info.id,
        backbone_sha256=runner.info.sha256,
        spec=anomaly_spec,
        training_set_size=n,
        skipped=data.skipped,
        bank_patches=int(bank.shape[0]),
        bank_bytes=int(bank.numel() * 4),
        crossfit_scores=tuple(float(v) for v in crossfit),
        validation={
            "crossfit_false_alarm_rate": float((normalised >= 0.5).mean()),
            "crossfit_median_score": float(np.median(normalised)),
            "patches_per_image": float(per_image),
        },
        train_seconds=time.perf_counter() - started,
        head=head,
    )


def fit_features(
    s8: torch.Tensor, s16: torch.Tensor, dims: int, standardize: bool = True, pool: int = 1
) -> PatchFeatures:
    """Channel standardisation and a PCA projection, both from the good patches."""
    channels = s8.shape[1] + s16.shape[1]
    probe = PatchFeatures(np.zeros(channels), np.ones(channels), np.eye(1), pool)
    with torch.no_grad():
        raw = probe.raw(s8, s16).permute(0, 2, 3, 1).reshape(-1, s8.shape[1] + s16.shape[1]).double()
    mean = raw.mean(dim=0)
    std = raw.std(dim=0).clamp_min(1e-4) if standardize else torch.ones(raw.shape[1], dtype=raw.dtype)
    z = (raw - mean) / std
    if dims <= 0 or dims >= z.shape[1]:
        return PatchFeatures(mean.numpy(), std.numpy(), np.eye(z.shape[1]), pool).eval()
    cov = (z.T @ z) / max(1, z.shape[0] - 1)
    _, vectors = torch.linalg.eigh(cov)
    projection = vectors[:, -dims:].flip(1)  # largest variance first
    return PatchFeatures(mean.numpy(), std.numpy(), projection.numpy(), pool).eval()


def bank_budget(options: AnomalyOptions, dims: int) -> int:
    """Bank patch count: the search budget, capped by the byte budget."""
    by_bytes = options.max_bank_bytes // (4 * dims)
    return max(1, min(options.max_bank_patches, by_bytes))


def _fold_budget(budget: int, kept: int, total: int) -> int:
    """A fold's bank covers fewer images: keep the same patches-per-image density."""
    return max(1, round(budget * kept / total))


def greedy_coreset(patches: torch.Tensor, size: int, *, seed: int = 0, sketch_dims: int = 32) -> torch.Tensor:
    """Greedy k-centre selection (PatchCore): each step takes the patch farthest from
    everything chosen so far, so rare good patterns stay in the bank while repeated
    texture is thinned. Distances are computed on a random sketch of the features
    (Johnson-Lindenstrauss), which picks nearly the same centres at a fraction of the
    cost; the returned rows are the full features."""
    count = patches.shape[0]
    if size >= count:
        return patches.clone()
    generator = torch.Generator().manual_seed(seed)
    sketch_dims = min(sketch_dims, patches.shape[1])
    # Thousands of small sequential steps: one thread is several times faster than a
    # contended pool, so the pool is set aside for the loop and restored after.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        projection = torch.randn(patches.shape[1], sketch_dims, generator=generator) / np.sqrt(sketch_dims)
        sketch = patches @ projection
        squared = (sketch * sketch).sum(dim=1)
        chosen = torch.empty(size, dtype=torch.long)
        index = int(torch.randint(count, (1,), generator=generator))
        nearest = torch.full((count,), float("inf"))
        for step in range(size):
            chosen[step] = index
            nearest = torch.minimum(nearest, squared - 2.0 * (sketch @ sketch[index]) + squared[index])
            index = int(torch.argmax(nearest))
    finally:
        torch.set_num_threads(threads)
    return patches[chosen].clone()


def threshold_from_good(crossfit: np.ndarray, target_false_alarm: float) -> tuple[float, float]:
    """(raw threshold, logistic scale) from cross-fitted good-image scores; see the module docstring."""
    crossfit = np.asarray(crossfit, dtype=np.float64)
    quantile = float(np.quantile(crossfit, 1.0 - target_false_alarm))
    z = NormalDist().inv_cdf(1.0 - target_false_alarm)
    gaussian = float(crossfit.mean() + z * crossfit.std(ddof=1))
    threshold = max(quantile, gaussian)
    median = float(np.median(crossfit))
    margin = max(threshold - median, 1e-3 * max(threshold, 1e-6))
    scale = margin / float(np.log((1 - _GOOD_AT) / _GOOD_AT))
    return threshold, scale


def export_anomaly_package(
    models_dir: Path,
    detector_id: str,
    trained: TrainedAnomaly,
    *,
    model_ids: tuple[str, str] | None = None,
) -> dict[str, Path]:
    """Write the anomaly primary and its OODD as new package versions."""
    pipeline = PipelineConfig(
        kind="primary",
        mode="BINARY",
        class_names=("NO", "YES"),
        input=trained.input_spec,
        output=PROBABILITIES,
        backbone=BackboneRef(id=trained.backbone_id, sha256=trained.backbone_sha256, output="feat_s8,feat_s16"),
        model_kind="anomaly",
        anomaly=trained.spec,
    )
    metadata = PredictorMetadata(
        detector_id=detector_id,
        kind="primary",
        trainer="anomaly-patchcore",
        backbone_id=trained.backbone_id,
        training_set_size=trained.training_set_size,
        class_counts={"NO": trained.training_set_size},
        metrics=dict(trained.validation),
        extra={
            "model_kind": "anomaly",
            "bank_patches": trained.bank_patches,
            "bank_bytes": trained.bank_bytes,
            "raw_threshold": trained.spec.raw_threshold,
            "target_false_alarm": trained.spec.target_false_alarm,
            "train_seconds": round(trained.train_seconds, 2),
        },
    )
    return write_primary_and_oodd(models_dir, (trained.primary_onnx, pipeline, metadata), trained.oodd_onnx, model_ids)
