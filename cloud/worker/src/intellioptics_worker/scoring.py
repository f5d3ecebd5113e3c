"""Score a model version on labeled images the way the edge will run it, and measure it.

The new version and the active one go through exactly this code (their ONNX files run
by the common model runtime, as the edge's inference service runs them), so the
comparison that decides promotion is between like and like, and it measures what the
edge will actually answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from intellioptics_common.detection import DetectionResult, DetectionSpec
from intellioptics_common.errors import DepthRequiredError, PackageError
from intellioptics_common.imaging import DEFAULT_LIMITS
from intellioptics_common.intervals import balanced_interval, wilson_interval
from intellioptics_common.model_package import PipelineConfig
from intellioptics_common.runtime import Answer, MemoryPart, RuntimeOptions, build_model, default_fuser
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
    """One version run by the common model runtime, exactly as the edge builds it (fused
    primary + OODD, the same OODD rule); ``threads`` bounds intra-op threads (0: all)."""

    def __init__(self, files: ModelFiles, threads: int = 0) -> None:
        self._config = files.primary_config
        oodd = None
        if files.oodd is not None and files.oodd_config is not None:
            oodd = MemoryPart("", "oodd", 0, "", files.oodd_config)
        try:
            self._model = build_model(
                MemoryPart("", "primary", 0, "", files.primary_config),
                files.primary,
                oodd,
                files.oodd if oodd is not None else None,
                RuntimeOptions(intra_op_threads=max(threads, 0)),
                fuser=default_fuser(),
            )
        except PackageError as exc:
            raise ModelError(f"the version could not be loaded: {exc}") from exc

    def answer(self, image: bytes, depth: bytes | None = None) -> Answer:
        return self._model.predict(image, DEFAULT_LIMITS, depth)


class Scorer(_Sessions):
    """A BINARY / MULTI_CLASS version, answering as the edge does (a depth version from
    the image and its depth map)."""

    def score(self, image: bytes, depth: bytes | None = None) -> Scored:
        if self._config.depth is not None and depth is None:
            raise DepthRequiredError("the version was trained with depth and this image has no depth map")
        answer = self.answer(image, depth)
        prediction = answer.prediction
        return Scored(
            prediction.label, prediction.confidence, prediction.raw_primary_confidence, answer.in_domain_score
        )


class BoxScorer(_Sessions):
    """A COUNT / BOUNDING_BOX version, decoded by the common post-processor as the edge does."""

    def __init__(self, files: ModelFiles, threads: int = 0) -> None:
        config = files.primary_config
        if config.model_kind != "detection" or config.detection is None:
            raise ModelError(f"the version is a {config.model_kind} model, not a detection model")
        super().__init__(files, threads)
        self.spec: DetectionSpec = config.detection

    def result(self, image: bytes) -> DetectionResult:
        found = self.answer(image).detection
        assert found is not None  # a detection version always answers with boxes
        return found


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
