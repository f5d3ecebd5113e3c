"""Cloud-side answers from a detector's active model (primary + optional OODD, ONNX),
run by the common model runtime (:mod:`intellioptics_common.runtime`), so the cloud
answers what the edge would: the same fusion, OODD rule and post-processors.

Models are cached in-process by the sha256 of their graphs and their pipeline configs:
versions are immutable, so that key names a model for ever and activating a new version
needs no invalidation. (The same graphs registered with another config, say a COUNT and a
BOUNDING_BOX detector with other caps, are another model.) A primary trained with depth gets the query's depth map as its second input.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from intellioptics_cloud.blobs import BlobStore
from intellioptics_common.anomaly import AnomalyResult
from intellioptics_common.confidence import Prediction
from intellioptics_common.detection import DetectionResult
from intellioptics_common.errors import IntelliOpticsError, PackageError
from intellioptics_common.imaging import ImageLimits
from intellioptics_common.model_package import Kind, PipelineConfig
from intellioptics_common.runtime import Answer, DetectorModel, MemoryPart, RuntimeOptions, build_model, default_fuser

# Many requests in parallel beat one fast request: one thread per run.
CLOUD_RUNTIME = RuntimeOptions(intra_op_threads=1, inter_op_threads=1)


@dataclass(frozen=True)
class ModelRef:
    """One binary of a model version: where it is and how to feed it."""

    blob_key: str
    sha256: str
    pipeline: PipelineConfig
    detector_id: str = ""
    version: int = 0

    def part(self, kind: Kind) -> MemoryPart:
        return MemoryPart(self.detector_id, kind, self.version, self.sha256, self.pipeline)


class ModelRunner:
    def __init__(self, blobs: BlobStore, limits: ImageLimits, max_models: int = 16) -> None:
        self._blobs = blobs
        self._limits = limits
        self._max = max_models
        self._models: OrderedDict[tuple[str, ...], DetectorModel] = OrderedDict()
        self._lock = threading.Lock()

    def model(self, primary: ModelRef, oodd: ModelRef | None) -> DetectorModel:
        key: tuple[str, ...] = (primary.sha256, _config_key(primary.pipeline))
        if oodd is not None:
            key += (oodd.sha256, _config_key(oodd.pipeline))
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
        oodd_bytes = None if oodd is None else self._blobs.get(oodd.blob_key)
        model = build_model(
            primary.part("primary"),
            self._blobs.get(primary.blob_key),
            None if oodd is None else oodd.part("oodd"),
            oodd_bytes,
            CLOUD_RUNTIME,
            fuser=default_fuser(),
        )
        with self._lock:
            self._models[key] = model
            while len(self._models) > self._max:
                self._models.popitem(last=False)
        return model

    def answer(
        self, primary: ModelRef, oodd: ModelRef | None, image: bytes, depth: bytes | np.ndarray | None = None
    ) -> Answer:
        """``depth``: the query's depth map (bytes as sent, or the checked mm array), which
        a depth model needs and the others ignore."""
        model = self.model(primary, oodd)
        try:
            return model.predict(image, self._limits, depth)
        except IntelliOpticsError:
            raise
        except Exception as exc:  # ONNX Runtime raises its own untyped exceptions
            raise PackageError("The active model could not be run on this image.", log_message=repr(exc)) from exc

    def predict(
        self, primary: ModelRef, oodd: ModelRef | None, image: bytes, depth_mm: np.ndarray | None = None
    ) -> Prediction:
        return self.answer(primary, oodd, image, depth_mm).prediction

    def anomaly(self, primary: ModelRef, oodd: ModelRef | None, image: bytes) -> AnomalyResult:
        """Score, map, severity and boxes of an anomaly model (the common post-processor)."""
        if primary.pipeline.model_kind != "anomaly" or primary.pipeline.anomaly is None:
            raise PackageError("The active model of this detector is not an anomaly model.")
        found = self.answer(primary, oodd, image).anomaly
        assert found is not None  # an anomaly primary always answers with its map
        return found

    def detection(self, primary: ModelRef, oodd: ModelRef | None, image: bytes) -> DetectionResult:
        """Boxes, count and the count's confidence of a COUNT / BOUNDING_BOX model (the common post-processor)."""
        if primary.pipeline.model_kind != "detection" or primary.pipeline.detection is None:
            raise PackageError("The active model of this detector is not a detection model.")
        found = self.answer(primary, oodd, image).detection
        assert found is not None  # a detection primary always answers with boxes
        return found


def _config_key(pipeline: PipelineConfig) -> str:
    return json.dumps(pipeline.to_dict(), sort_keys=True, separators=(",", ":"))
