"""Score a model version on labeled images the way the edge will run it, and measure it.

The new version and the active one go through exactly this code (their ONNX files,
common preprocessing, common confidence arithmetic), so the comparison that decides
promotion is between like and like, and it measures what the edge will actually answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from intellioptics_common.confidence import predict_from_probabilities
from intellioptics_common.detection import OUTPUTS, DetectionResult, DetectionSpec, interpret
from intellioptics_common.intervals import balanced_interval, wilson_interval
from intellioptics_common.model_package import PipelineConfig
from intellioptics_common.preprocessing import load_input_tensor
from intellioptics_worker.errors import ModelError


@dataclass(frozen=True)
class ModelFiles:
    """One version as the registry stores it: primary and (optional) OODD binaries with
    their pipeline configs."""

    primary: bytes
    primary_config: PipelineConfig
    oodd: bytes | None = None
    oodd_config: PipelineConfig | None = None


@dataclass(frozen=True)
class Scored:
    """What the edge would answer for one image."""

    label: str
    confidence: float  # OODD-adjusted
    raw_confidence: float
    in_domain: float | None


@dataclass(frozen=True)
class Metrics:
    n: int
    accuracy: float
    balanced_accuracy: float
    confident_coverage: float
    confident_accuracy: float | None  # None when no answer was confident
    per_class_recall: dict[str, float]
    support: dict[str, int]  # evaluation images per class
    threshold: float

    headline_name = "balanced accuracy"

    @property
    def headline(self) -> float:
        return self.balanced_accuracy

    @property
    def tolerance(self) -> float:
        """One image of the smallest class, as a share of balanced accuracy."""
        return 1.0 / (max(1, len(self.support)) * max(1, min(self.support.values(), default=1)))

    def intervals(self) -> dict[str, list[float] | None]:
        """95 % Wilson intervals (see :mod:`intellioptics_common.intervals`)."""
        confident = round(self.confident_coverage * self.n)
        right = round((self.confident_accuracy or 0.0) * confident)
        per_class = [(round(self.per_class_recall[name] * n), n) for name, n in self.support.items()]
        return {
            "balanced_accuracy": _rounded(balanced_interval(per_class)),
            "confident_coverage": _rounded(wilson_interval(confident, self.n)),
            "confident_accuracy": _rounded(wilson_interval(right, confident)) if confident else None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": round(self.accuracy, 4),
            "balanced_accuracy": round(self.balanced_accuracy, 4),
            "confident_coverage": round(self.confident_coverage, 4),
            "confident_accuracy": None if self.confident_accuracy is None else round(self.confident_accuracy, 4),
            "per_class_recall": {k: round(v, 4) for k, v in self.per_class_recall.items()},
            "support": dict(self.support),
            "threshold": self.threshold,
            "intervals_95": self.intervals(),
        }


def _rounded(interval: tuple[float, float]) -> list[float]:
    return [round(interval[0], 4), round(interval[1], 4)]


class _Sessions:
    """onnxruntime sessions for one version's primary and OODD; ``threads`` bounds intra-op threads."""

    def __init__(self, files: ModelFiles, threads: int = 0) -> None:
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        self._config = files.primary_config
        self._primary = _session(files.primary, options, "primary")
        self._oodd = None
        self._oodd_config = files.oodd_config
        if files.oodd is not None and files.oodd_config is not None:
            self._oodd = _session(files.oodd, options, "oodd")

    def _in_domain(self, image: bytes, tensor: np.ndarray) -> float | None:
        if self._oodd is None or self._oodd_config is None:
            return None
        oodd_spec = self._oodd_config.input
        oodd_tensor = tensor if oodd_spec == self._config.input else load_input_tensor(image, oodd_spec)
        (score,) = self._oodd.run([self._oodd_config.output], {oodd_spec.tensor_name: oodd_tensor})
        return float(np.asarray(score).reshape(-1)[0])


class Scorer(_Sessions):
    """A BINARY / MULTI_CLASS version, answering as the edge does."""

    def score(self, image: bytes) -> Scored:
        spec = self._config.input
        tensor = load_input_tensor(image, spec)
        (probabilities,) = self._primary.run([self._config.output], {spec.tensor_name: tensor})
        in_domain = self._in_domain(image, tensor)
        prediction = predict_from_probabilities(
            [float(p) for p in np.asarray(probabilities).reshape(-1)], self._config.class_names, in_domain
        )
        return Scored(prediction.label, prediction.confidence, prediction.raw_primary_confidence, in_domain)


class BoxScorer(_Sessions):
    """A COUNT / BOUNDING_BOX version, decoded by the common post-processor as the edge does."""

    def __init__(self, files: ModelFiles, threads: int = 0) -> None:
        config = files.primary_config
        if config.model_kind != "detection" or config.detection is None:
            raise ModelError(f"the version is a {config.model_kind} model, not a detection model")
        super().__init__(files, threads)
        self.spec: DetectionSpec = config.detection

    def result(self, image: bytes) -> DetectionResult:
        spec = self._config.input
        tensor = load_input_tensor(image, spec)
        heat, size, offset = self._primary.run(list(OUTPUTS), {spec.tensor_name: tensor})
        return interpret(
            heat[0],
            size[0],
            offset[0],
            class_names=tuple(self._config.class_names),
            spec=self.spec,
            mode=self._config.mode,
            in_domain=self._in_domain(image, tensor),
        )


def _session(model: bytes, options: ort.SessionOptions, kind: str) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
        raise ModelError(f"the {kind} model could not be loaded: {exc}") from exc


def measure(
    labels: Sequence[str], predictions: Sequence[Scored], class_names: Sequence[str], threshold: float
) -> Metrics:
    """Accuracy, balanced accuracy (mean per-class recall over the classes present), and
    the edge's view at the detector threshold: how many answers are confident (coverage)
    and how many of those are right."""
    if len(labels) != len(predictions) or not labels:
        raise ValueError("measure needs one prediction per label, and at least one")
    correct = [p.label == y for y, p in zip(labels, predictions, strict=True)]
    recall = {}
    support = {}
    for name in class_names:
        hits = [c for y, c in zip(labels, correct, strict=True) if y == name]
        if hits:
            recall[name] = sum(hits) / len(hits)
            support[name] = len(hits)
    confident = [c for p, c in zip(predictions, correct, strict=True) if p.confidence >= threshold]
    return Metrics(
        n=len(labels),
        accuracy=sum(correct) / len(correct),
        balanced_accuracy=sum(recall.values()) / len(recall),
        confident_coverage=len(confident) / len(correct),
        confident_accuracy=(sum(confident) / len(confident)) if confident else None,
        per_class_recall=recall,
        support=support,
        threshold=threshold,
    )
