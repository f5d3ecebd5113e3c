"""The inference use case, free of FastAPI: image bytes (and a depth map for depth models)
and a detector id in, a typed result out."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import time
from dataclasses import replace
from pathlib import Path

from intellioptics_common.anomaly import coarse_map
from intellioptics_common.errors import IntelliOpticsError
from intellioptics_common.imaging import ImageLimits
from intellioptics_common.model_package import list_detectors, list_versions
from intellioptics_common.runtime import Answer, DetectorModel, ManyAnswers, answer_many
from intellioptics_common.schemas import (
    ROI,
    AnomalyOutput,
    DetectionOutput,
    DetectorAnswer,
    DetectorMode,
    ErrorBody,
    InferenceResult,
    InferenceTimings,
    MultiInferenceResult,
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

    async def infer_many(self, detector_ids: list[str], image: bytes) -> MultiInferenceResult:
        """One image for several detectors: decoded once, each shared backbone run once,
        every detector's head on it. A detector that cannot answer (unknown, loading, a
        depth model) gets its own error in its place; a bad image fails the whole call."""
        start = time.perf_counter()
        loaded = await asyncio.gather(*(self._model_for(d) for d in detector_ids), return_exceptions=True)
        models = [m for m in loaded if isinstance(m, DetectorModel)]
        for outcome in loaded:
            if isinstance(outcome, BaseException) and not isinstance(outcome, IntelliOpticsError):
                raise outcome
        many = None
        if models:
            loop = asyncio.get_running_loop()
            try:
                many = await loop.run_in_executor(self._executor, self._predict_many, models, image)
            except IntelliOpticsError as exc:
                for model in models:
                    self.record_status(model.detector_id, exc.status_code)
                raise
        total_s = time.perf_counter() - start
        answers = iter(many.answers if many is not None else [])
        results: list[DetectorAnswer] = []
        for detector_id, outcome in zip(detector_ids, loaded, strict=True):
            if isinstance(outcome, DetectorModel):
                answer = next(answers)
                if isinstance(answer, Answer):
                    decode_s = many.decode_s if many is not None else 0.0
                    self.metrics.observe_latency(
                        detector_id, outcome.primary.version, decode_s, answer.preprocess_s, answer.model_s, total_s
                    )
                    self.record_status(detector_id, 200)
                    answered = replace(answer, decode_s=decode_s)
                    result = _result(outcome, answered, total_s)
                    results.append(DetectorAnswer(detector_id=detector_id, status_code=200, result=result))
                    continue
                outcome = answer
            assert isinstance(outcome, IntelliOpticsError)
            self.record_status(detector_id, outcome.status_code, known=not isinstance(outcome, _UNLABELLED))
            error = ErrorBody(detail=outcome.public_message, code=outcome.code)
            results.append(DetectorAnswer(detector_id=detector_id, status_code=outcome.status_code, error=error))
        self.metrics.multi_calls.inc()
        self.metrics.multi_backbone_runs.inc(0 if many is None else many.backbone_runs)
        self.metrics.multi_answers.inc(sum(1 for r in results if r.result is not None))
        return MultiInferenceResult(
            results=results,
            decode_ms=0.0 if many is None else many.decode_s * 1000.0,
            backbone_runs=0 if many is None else many.backbone_runs,
        )

    async def _model_for(self, detector_id: str) -> DetectorModel:
        return await self.cache.get(check_detector_id(detector_id))

    def _predict_many(self, models: list[DetectorModel], image: bytes) -> ManyAnswers:
        for model in models:
            self.cache.check_for_new_version(model)
        return answer_many(models, image, self.limits)

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
