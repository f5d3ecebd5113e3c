"""Run and evaluate an anomaly package the way the edge does: its ONNX graphs, then the
common post-processor (:mod:`intellioptics_common.anomaly`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

from intellioptics_common.anomaly import AnomalyResult, Severity, resize_map
from intellioptics_common.errors import PackageError
from intellioptics_common.model_package import AnomalySpec
from intellioptics_common.runtime import Answer
from intellioptics_training.evaluate import LoadedDetector, load_detector


class AnomalyScorer:
    """The package run by the common runtime (:func:`intellioptics_common.runtime.build_model`,
    fused as the edge fuses it), so the CLI answers what the edge answers."""

    def __init__(self, detector: LoadedDetector, threads: int | None = None) -> None:
        pipeline = detector.primary.pipeline
        if pipeline.model_kind != "anomaly" or pipeline.anomaly is None:
            raise PackageError(f"{detector.primary.path} is a {pipeline.model_kind} model, not an anomaly model")
        self.detector = detector
        self.spec: AnomalySpec = pipeline.anomaly
        self.input = pipeline.input
        self.model = detector.model(threads)
        self.last_in_domain: float | None = None  # of the last image scored (None: no OODD model)

    def score(self, rgb: np.ndarray) -> AnomalyResult:
        """The result for one decoded image; its map is at the model's input size."""
        prepared = self.model.prepare(rgb)
        return self._anomaly(self.model.post_process(prepared, self.model.forward(prepared)))

    def score_bytes(self, data: bytes) -> tuple[np.ndarray, AnomalyResult]:
        """An encoded image as the edge takes it (decoded at the model's draft size, as the
        edge decodes): the decoded image and its result."""
        from intellioptics_common.imaging import DEFAULT_LIMITS, decode_image

        rgb = decode_image(data, DEFAULT_LIMITS).rgb
        return rgb, self._anomaly(self.model.predict(data, DEFAULT_LIMITS))

    def _anomaly(self, answer: Answer) -> AnomalyResult:
        assert answer.anomaly is not None  # an anomaly primary always answers with its map
        self.last_in_domain = answer.in_domain_score
        return answer.anomaly


def load_scorer(pkg: Path, detector_id: str | None = None, threads: int | None = None) -> AnomalyScorer:
    return AnomalyScorer(load_detector(pkg, detector_id), threads)


def to_json(result: AnomalyResult, image: str, in_domain: float | None = None) -> dict[str, object]:
    """The CLI's one line per image (``intellioptics predict --json``). ``in_domain``: the
    OODD model's score; under 0.5 the image is unlike the good images (a foreign scene, a
    covered lens), which the edge escalates rather than calls a defect (``out_of_domain``)."""
    return {
        "image": image,
        "label": result.label,
        "confidence": round(result.confidence, 4),
        "anomaly_score": round(result.anomaly_score, 4),
        "severity": result.severity.value,
        "rois": [box.to_wire() for box in result.boxes],
        "in_domain": None if in_domain is None else round(in_domain, 4),
        "out_of_domain": in_domain is not None and in_domain < 0.5,
    }


@dataclass
class AnomalyReport:
    n_good: int
    n_defect: int
    threshold: float
    image_auroc: float | None
    pixel_auroc: float | None
    false_alarm_rate: float | None
    detection_rate: float | None
    box_hit_rate: float | None
    severity_counts: dict[str, dict[str, int]]
    mean_ms: float
    skipped: int = 0
    masks_missing: int = 0
    # What the edge answers without asking anyone, at confidence >= confident_threshold:
    # the share of all test images, of the good ones, and how often those answers are right.
    confident_threshold: float = 0.9
    confident_coverage: float | None = None
    good_answered: float | None = None
    confident_accuracy: float | None = None
    scores: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        data = dict(self.__dict__)
        data.pop("scores")
        return data


def evaluate_anomaly(
    scorer: AnomalyScorer,
    good: list[np.ndarray],
    defect: list[np.ndarray],
    masks: list[np.ndarray | None] | None = None,
    confident_threshold: float = 0.9,
) -> AnomalyReport:
    """Image AUROC, pixel AUROC (defect masks given), rates at the model's own threshold,
    severity counts, and how often a predicted box touches the true defect."""
    results: dict[str, list[AnomalyResult]] = {"NO": [], "YES": []}
    started = time.perf_counter()
    for label, images in (("NO", good), ("YES", defect)):
        for rgb in images:
            results[label].append(scorer.score(rgb))
    total = len(good) + len(defect)
    mean_ms = 1000.0 * (time.perf_counter() - started) / max(1, total)
    scores = {label: [r.anomaly_score for r in rs] for label, rs in results.items()}
    threshold = scorer.spec.threshold
    y = np.array([0] * len(good) + [1] * len(defect))
    s = np.array(scores["NO"] + scores["YES"])
    image_auroc = float(roc_auc_score(y, s)) if good and defect else None
    pixel_auroc = box_hit = None
    missing = 0
    if masks is not None and defect:
        truth, predicted, hits, counted = [], [], 0, 0
        for rgb, result in zip(good, results["NO"], strict=True):
            amap = resize_map(result.anomaly_map, *rgb.shape[:2])
            truth.append(np.zeros(amap.size, dtype=bool))
            predicted.append(amap.ravel())
        for rgb, result, mask in zip(defect, results["YES"], masks, strict=True):
            if mask is None:
                missing += 1
                continue
            mask = _mask_at(mask, rgb.shape[0], rgb.shape[1])
            amap = resize_map(result.anomaly_map, *rgb.shape[:2])
            truth.append(mask.ravel())
            predicted.append(amap.ravel())
            counted += 1
            hits += int(_box_touches(result, mask))
        flat_truth = np.concatenate(truth)
        if counted and flat_truth.any():
            pixel_auroc = float(roc_auc_score(flat_truth, np.concatenate(predicted)))
            box_hit = hits / counted
    severity_counts = {
        label: {grade.value: sum(r.severity == grade for r in rs) for grade in Severity}
        for label, rs in results.items()
    }
    answered = [(truth, r.label) for truth, rs in results.items() for r in rs if r.confidence >= confident_threshold]
    good_answered = sum(r.confidence >= confident_threshold for r in results["NO"])
    return AnomalyReport(
        n_good=len(good),
        n_defect=len(defect),
        threshold=threshold,
        image_auroc=image_auroc,
        pixel_auroc=pixel_auroc,
        false_alarm_rate=float(np.mean(np.array(scores["NO"]) >= threshold)) if good else None,
        detection_rate=float(np.mean(np.array(scores["YES"]) >= threshold)) if defect else None,
        box_hit_rate=box_hit,
        severity_counts=severity_counts,
        mean_ms=round(mean_ms, 2),
        masks_missing=missing,
        confident_threshold=confident_threshold,
        confident_coverage=len(answered) / total if total else None,
        good_answered=good_answered / len(good) if good else None,
        confident_accuracy=sum(truth == label for truth, label in answered) / len(answered) if answered else None,
        scores=scores,
    )


def _mask_at(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.shape != (height, width):
        resized = Image.fromarray((mask > 0).astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
        mask = np.asarray(resized)
    return mask > (127 if mask.dtype == np.uint8 else 0)


def _box_touches(result: AnomalyResult, mask: np.ndarray) -> bool:
    height, width = mask.shape
    for box in result.boxes:
        top, bottom = int(box.top * height), int(np.ceil(box.bottom * height))
        left, right = int(box.left * width), int(np.ceil(box.right * width))
        if mask[top:bottom, left:right].any():
            return True
    return False
