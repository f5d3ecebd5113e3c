"""Cloud-side answers from a detector's active model (primary + optional OODD, ONNX).

Sessions are cached in-process by the sha256 of the model bytes: versions are immutable,
so a hash names a session for ever and activating a new version needs no invalidation.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from intellioptics_cloud.blobs import BlobStore
from intellioptics_common.anomaly import AnomalyResult, interpret
from intellioptics_common.confidence import Prediction, predict_from_probabilities
from intellioptics_common.detection import OUTPUTS as DETECTION_OUTPUTS
from intellioptics_common.detection import DetectionResult
from intellioptics_common.detection import interpret as interpret_detection
from intellioptics_common.errors import PackageError
from intellioptics_common.imaging import ImageLimits
from intellioptics_common.model_package import InputSpec, PipelineConfig
from intellioptics_common.preprocessing import load_input_tensor


@dataclass(frozen=True)
class ModelRef:
    """One binary of a model version: where it is and how to feed it."""

    blob_key: str
    sha256: str
    pipeline: PipelineConfig


class ModelRunner:
    def __init__(self, blobs: BlobStore, limits: ImageLimits, max_sessions: int = 16) -> None:
        self._blobs = blobs
        self._limits = limits
        self._max = max_sessions
        self._sessions: OrderedDict[str, ort.InferenceSession] = OrderedDict()
        self._lock = threading.Lock()

    def _session(self, ref: ModelRef) -> ort.InferenceSession:
        with self._lock:
            session = self._sessions.get(ref.sha256)
            if session is not None:
                self._sessions.move_to_end(ref.sha256)
                return session
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # many requests in parallel beat one fast request
        session = ort.InferenceSession(self._blobs.get(ref.blob_key), options, providers=["CPUExecutionProvider"])
        with self._lock:
            self._sessions[ref.sha256] = session
            while len(self._sessions) > self._max:
                self._sessions.popitem(last=False)
        return session

    def _outputs(self, ref: ModelRef, names: list[str], tensors: _Tensors) -> list[np.ndarray]:
        session = self._session(ref)
        try:
            return session.run(names, {ref.pipeline.input.tensor_name: tensors.get(ref)})
        except (ValueError, RuntimeError, ort.capi.onnxruntime_pybind11_state.Fail) as exc:  # type: ignore[attr-defined]
            raise PackageError("The active model could not be run on this image.", log_message=repr(exc)) from exc

    def _in_domain(self, oodd: ModelRef | None, tensors: _Tensors) -> float | None:
        if oodd is None:
            return None
        # The OODD graph outputs the in-domain score (or [out, in] probabilities: take "in").
        (score,) = self._outputs(oodd, [oodd.pipeline.output], tensors)
        return float(np.clip(np.asarray(score, dtype=np.float64).reshape(-1)[-1], 0.0, 1.0))

    def predict(self, primary: ModelRef, oodd: ModelRef | None, image: bytes) -> Prediction:
        tensors = _Tensors(image, self._limits)
        (output,) = self._outputs(primary, [primary.pipeline.output], tensors)
        probabilities = np.asarray(output, dtype=np.float64).reshape(-1)
        in_domain = self._in_domain(oodd, tensors)
        return predict_from_probabilities(probabilities.tolist(), primary.pipeline.class_names, in_domain)

    def anomaly(self, primary: ModelRef, oodd: ModelRef | None, image: bytes) -> AnomalyResult:
        """Score, map, severity and boxes of an anomaly model (the common post-processor)."""
        spec = primary.pipeline.anomaly
        if primary.pipeline.model_kind != "anomaly" or spec is None:
            raise PackageError("The active model of this detector is not an anomaly model.")
        tensors = _Tensors(image, self._limits)
        score, amap = self._outputs(primary, [spec.score_output, spec.map_output], tensors)
        return interpret(
            float(np.ravel(score)[0]),
            np.asarray(amap)[0, 0],
            threshold=spec.threshold,
            cuts=spec.severity_cuts,
            in_domain=self._in_domain(oodd, tensors),
        )

    def detection(self, primary: ModelRef, oodd: ModelRef | None, image: bytes) -> DetectionResult:
        """Boxes, count and the count's confidence of a COUNT / BOUNDING_BOX model (the common post-processor)."""
        spec = primary.pipeline.detection
        if primary.pipeline.model_kind != "detection" or spec is None:
            raise PackageError("The active model of this detector is not a detection model.")
        tensors = _Tensors(image, self._limits)
        heat, size, offset = self._outputs(primary, list(DETECTION_OUTPUTS), tensors)
        return interpret_detection(
            heat[0],
            size[0],
            offset[0],
            class_names=primary.pipeline.class_names,
            spec=spec,
            mode=primary.pipeline.mode,
            in_domain=self._in_domain(oodd, tensors),
        )


class _Tensors:
    """One image's input tensors, decoded once per input spec (primary and OODD usually share one)."""

    def __init__(self, image: bytes, limits: ImageLimits) -> None:
        self._image = image
        self._limits = limits
        self._by_spec: dict[InputSpec, np.ndarray] = {}

    def get(self, ref: ModelRef) -> np.ndarray:
        spec = ref.pipeline.input
        if spec not in self._by_spec:
            self._by_spec[spec] = load_input_tensor(self._image, spec, self._limits)
        return self._by_spec[spec]
