"""Row -> wire model conversions and small shared parsers (one place, so every route
answers the same shapes)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from intellioptics_cloud.models import DetectorRow, ImageQueryRow
from intellioptics_common.confidence import BINARY_CLASS_NAMES
from intellioptics_common.errors import InvalidInputError
from intellioptics_common.results import result_model
from intellioptics_common.schemas import (
    MAX_METADATA_BYTES,
    AnomalySummary,
    Detector,
    DetectorMode,
    DetectorStatus,
    EscalationType,
    ImageQuery,
    ResultType,
)


def decode_metadata(value: str | None) -> dict[str, Any] | None:
    """The SDK sends metadata as URL-safe base64 of a JSON object (at most 1 KB)."""
    if value is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError("metadata must be URL-safe base64 of a JSON object.") from exc
    if not isinstance(data, dict):
        raise InvalidInputError("metadata must be a JSON object.")
    if len(raw) > MAX_METADATA_BYTES:
        raise InvalidInputError(f"metadata is {len(raw)} bytes; the limit is {MAX_METADATA_BYTES}.")
    return data


def class_names(detector: DetectorRow) -> list[str]:
    """The classes a model of this detector answers (a COUNT / BOUNDING_BOX model: its one object class)."""
    config = detector.mode_configuration or {}
    if detector.mode == "MULTI_CLASS":
        return list(config.get("class_names", []))
    if detector.mode in ("COUNT", "BOUNDING_BOX"):
        return [str(config.get("class_name") or "object")]
    return list(BINARY_CLASS_NAMES)


def detector_out(row: DetectorRow) -> Detector:
    return Detector(
        id=row.id,
        created_at=row.created_at,
        name=row.name,
        query=row.query,
        group_name=row.group_name,
        confidence_threshold=row.confidence_threshold,
        patience_time=row.patience_time,
        metadata=row.metadata_json,
        mode=DetectorMode(row.mode),
        mode_configuration=row.mode_configuration,
        status=DetectorStatus(row.status),
        escalation_type=EscalationType(row.escalation_type),
    )


def image_query_out(row: ImageQueryRow) -> ImageQuery:
    return ImageQuery(
        id=row.id,
        created_at=row.created_at,
        query=row.query,
        detector_id=row.detector_id,
        result_type=ResultType(row.result_type),
        result=None if row.result is None else result_model(row.result),
        patience_time=row.patience_time,
        confidence_threshold=row.confidence_threshold,
        metadata=row.metadata_json,
        rois=row.rois,
        done_processing=row.done_processing,
        anomaly=_anomaly(row.model_scores),
    )


def _anomaly(scores: dict[str, Any] | None) -> AnomalySummary | None:
    """The anomaly model's score and severity, kept with the model's other scores."""
    found = (scores or {}).get("anomaly")
    return None if not isinstance(found, dict) else AnomalySummary.model_validate(found)


def image_url(image_query_id: str) -> str:
    return f"/v1/image-queries/{image_query_id}/image"


def depth_url(image_query_id: str) -> str:
    """The depth map as it was sent (fractions of a mm kept): what training reads."""
    return f"/v1/image-queries/{image_query_id}/depth?view=original"
