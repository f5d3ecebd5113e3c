"""Evaluate a model package the way the edge uses it: one ONNX run per model, the
common OODD adjustment, and the two figures that matter at a threshold T."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from intellioptics_common.confidence import adjust_confidence
from intellioptics_common.errors import PackageError
from intellioptics_common.model_package import ModelPackage, list_detectors, read_latest
from intellioptics_common.runtime import DetectorModel, build_model, default_fuser
from intellioptics_training.features import runtime_options


@dataclass(frozen=True)
class LoadedDetector:
    primary: ModelPackage
    oodd: ModelPackage | None

    def model(self, threads: int | None = None) -> DetectorModel:
        """The package run by the common runtime, fused as the edge fuses it."""
        oodd_bytes = self.oodd.model_bytes() if self.oodd is not None else None
        return build_model(
            self.primary,
            self.primary.model_bytes(),
            self.oodd,
            oodd_bytes,
            runtime_options(threads),
            fuser=default_fuser(),
        )


@dataclass(frozen=True)
class Scored:
    probabilities: np.ndarray  # N x K
    in_domain: np.ndarray | None  # N

    def adjusted(self) -> np.ndarray:
        raw = self.probabilities.max(axis=1)
        if self.in_domain is None:
            return raw
        k = self.probabilities.shape[1]
        return np.array(
            [adjust_confidence(float(c), 1.0 - float(d), k) for c, d in zip(raw, self.in_domain, strict=True)]
        )


@dataclass(frozen=True)
class EvaluationReport:
    n: int
    threshold: float
    accuracy: float
    balanced_accuracy: float
    confident_coverage: float
    confident_accuracy: float | None
    ece: float
    roc_auc: float | None
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]
    class_names: list[str]
    ood_escalation_rate: float | None = None
    ood_n: int | None = None
    skipped: int = 0

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k == "confident_accuracy"}


def load_detector(path: Path, detector_id: str | None = None) -> LoadedDetector:
    """Accept a models dir (single detector or ``detector_id``) or a detector dir."""
    path = Path(path)
    if (path / "primary").is_dir():
        models_dir, det = path.parent, path.name
    else:
        detectors = list_detectors(path)
        if detector_id:
            det = detector_id
        elif len(detectors) == 1:
            det = detectors[0]
        else:
            raise PackageError(f"{path} holds {len(detectors)} detectors ({', '.join(detectors)}); pass --detector-id")
        models_dir = path
    primary = read_latest(models_dir, det, "primary")
    if primary is None:
        raise PackageError(f"no primary model for {det} under {models_dir}")
    return LoadedDetector(primary, read_latest(models_dir, det, "oodd"))


def score_images(
    detector: LoadedDetector,
    images: list[np.ndarray],
    threads: int | None = None,
    depths: np.ndarray | None = None,
) -> Scored:
    """``depths`` (N x 1 x H x W on the model's depth grid) is required by depth models, refused by others."""
    depth_spec = detector.primary.pipeline.depth
    if (depth_spec is None) != (depths is None):
        raise PackageError(
            "this model takes RGB + depth pairs: pass --depth and <id>_rgb + <id>_depth files"
            if depth_spec is not None
            else "this model takes images only; leave out --depth"
        )
    model = detector.model(threads)
    probs, dom = [], []
    for index, rgb in enumerate(images):
        outputs = model.forward(model.prepare(rgb, None if depths is None else depths[index : index + 1]))
        probs.append(outputs.probabilities)
        if outputs.in_domain_score is not None:
            dom.append(outputs.in_domain_score)
    in_domain = np.asarray(dom) if detector.oodd is not None else None
    return Scored(np.asarray(probs, dtype=np.float64).reshape(len(images), -1), in_domain)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        member = (confidence > low) & (confidence <= high)
        if member.any():
            total += member.mean() * abs(correct[member].mean() - confidence[member].mean())
    return float(total)


def compute_report(
    scored: Scored, labels: np.ndarray, class_names: list[str], threshold: float, ood: Scored | None = None
) -> EvaluationReport:
    predicted = scored.probabilities.argmax(axis=1)
    confidence = scored.adjusted()
    correct = predicted == labels
    k = len(class_names)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=list(range(k)), zero_division=0
    )
    present = [i for i in range(k) if support[i] > 0]
    confident = confidence >= threshold
    auc = None
    if k == 2 and len(set(labels.tolist())) == 2:
        auc = float(roc_auc_score(labels, scored.probabilities[:, 1]))
    report = EvaluationReport(
        n=len(labels),
        threshold=threshold,
        accuracy=float(correct.mean()),
        balanced_accuracy=float(np.mean([recall[i] for i in present])),
        confident_coverage=float(confident.mean()),
        confident_accuracy=float(correct[confident].mean()) if confident.any() else None,
        ece=expected_calibration_error(confidence, correct),
        roc_auc=auc,
        per_class={
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        confusion_matrix=confusion_matrix(labels, predicted, labels=list(range(k))).tolist(),
        class_names=list(class_names),
    )
    if ood is not None:
        escalated = ood.adjusted() < threshold
        report = EvaluationReport(
            **{**asdict(report), "ood_escalation_rate": float(escalated.mean()), "ood_n": len(escalated)}
        )
    return report
