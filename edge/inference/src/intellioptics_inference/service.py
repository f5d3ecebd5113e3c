"""The inference use case, free of FastAPI: image bytes (and a depth map for depth models)
and a detector id in, a typed result out."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import time
from pathlib import Path

from intellioptics_common.anomaly import coarse_map
from intellioptics_common.errors import IntelliOpticsError
from intellioptics_common.imaging import ImageLimits
from intellioptics_common.model_package import list_detectors, list_versions
from intellioptics_common.runtime import Answer, DetectorModel
from intellioptics_common.schemas import (
    ROI,
    AnomalyOutput,
    DetectionOutput,
    DetectorMode,
    InferenceResult,
    InferenceTimings,
)
from intellioptics_inference.cache import DetectorCache
from intellioptics_inference.errors import DetectorNotFoundError, InvalidDetectorIdError
from intellioptics_inference.metrics import InferenceMetrics

# The model package's own rule for detector directories: also keeps ``..`` and ``/`` out.
_DETECTOR_ID = re.compile(r"^[A-Za-z0-9_\-]{1,80}$")
_UNLABELLED = (DetectorNotFoundError, InvalidDetectorIdError)


def check_detector_id(detector_id: str) -> str:
    if not _DETECTOR_ID.match(detector_id):
        raise InvalidDetectorIdError("detector_id must be 1-80 letters, digits, '_' or '-' (for example det_2Hk...).")
    return detector_id


class InferenceService:
    def __init__(
        self,
        models_dir: Path,
        cache: DetectorCache,
        metrics: InferenceMetrics,
        limits: ImageLimits,
        workers: int,
    ) -> None:
        self.models_dir = Path(models_dir)
        self.cache = cache
        self.metrics = metrics
        self.limits = limits
        # Decode + model run happen here, never on the event loop.
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="infer")

    async def infer(self, detector_id: str, image: bytes, depth: bytes | None = None) -> InferenceResult:
        start = time.perf_counter()
        try:
            model = await self.cache.get(check_detector_id(detector_id))
            loop = asyncio.get_running_loop()
            answer = await loop.run_in_executor(self._executor, self._predict, model, image, depth)
        except IntelliOpticsError as exc:
            self.record_status(detector_id, exc.status_code, known=not isinstance(exc, _UNLABELLED))
            raise
        total_s = time.perf_counter() - start
        self.metrics.observe_latency(
            detector_id, model.primary.version, answer.decode_s, answer.preprocess_s, answer.model_s, total_s
        )
        self.record_status(detector_id, 200)
        return _result(model, answer, total_s)

    def _predict(self, model: DetectorModel, image: bytes, depth: bytes | None) -> Answer:
        self.cache.check_for_new_version(model)
        return model.predict(image, self.limits, depth)

    def record_status(self, detector_id: str, status: int, *, known: bool = True) -> None:
        # Ids that name nothing installed share one label: clients must not grow the series.
        label = detector_id if known and _DETECTOR_ID.match(detector_id) else "unknown"
        self.metrics.requests.labels(label, str(status)).inc()

    def installed(self) -> dict[str, tuple[list[int], list[int]]]:
        """Detector id -> (primary versions, oodd versions) on disk."""
        out: dict[str, tuple[list[int], list[int]]] = {}
        for detector_id in list_detectors(self.models_dir):
            primary = list_versions(self.models_dir, detector_id, "primary")
            if primary:
                out[detector_id] = (primary, list_versions(self.models_dir, detector_id, "oodd"))
        return out

    def models_dir_readable(self) -> bool:
        return self.models_dir.is_dir() and os.access(self.models_dir, os.R_OK | os.X_OK)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.cache.close()


def _result(model: DetectorModel, answer: Answer, total_s: float) -> InferenceResult:
    prediction = answer.prediction
    return InferenceResult(
        detector_id=model.detector_id,
        mode=DetectorMode(model.primary.pipeline.mode),
        label=prediction.label,
        confidence=prediction.confidence,
        raw_primary_confidence=prediction.raw_primary_confidence,
        oodd_in_domain_score=answer.in_domain_score,
        probabilities=answer.probabilities,
        primary_model_version=model.primary.version,
        primary_model_id=model.primary.model_id,
        oodd_model_version=None if model.oodd is None else model.oodd.version,
        oodd_model_id=None if model.oodd is None else model.oodd.model_id,
        timings=InferenceTimings(
            decode_ms=answer.decode_s * 1000.0,
            preprocess_ms=answer.preprocess_s * 1000.0,
            model_ms=answer.model_s * 1000.0,
            total_ms=total_s * 1000.0,
        ),
        anomaly=None if answer.anomaly is None else _anomaly_output(answer),
        detection=None if answer.detection is None else _detection_output(answer),
    )


def _detection_output(answer: Answer) -> DetectionOutput:
    result = answer.detection
    assert result is not None
    return DetectionOutput(
        count=result.count,
        greater_than_max=result.greater_than_max,
        rois=[ROI.model_validate(box.to_wire()) for box in result.boxes],
    )


def _anomaly_output(answer: Answer) -> AnomalyOutput:
    result = answer.anomaly
    assert result is not None
    return AnomalyOutput(
        anomaly_score=result.anomaly_score,
        severity=result.severity.value,
        rois=[ROI.model_validate(box.to_wire()) for box in result.boxes],
        map=coarse_map(result.anomaly_map),
    )
