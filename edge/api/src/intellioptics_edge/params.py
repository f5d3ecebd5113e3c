"""The query string of ``POST image-queries``, parsed by hand into clear 400s.

FastAPI's own validation would answer 422, which nginx turns into a fallback to the
cloud; a bad threshold must instead tell the caller what to fix.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from typing import Any

from intellioptics_common.errors import InvalidInputError
from intellioptics_common.ids import is_valid_id
from intellioptics_common.schemas import MAX_METADATA_BYTES, HumanReview

FORWARDED_PARAMS = (
    "detector_id",
    "confidence_threshold",
    "patience_time",
    "human_review",
    "want_async",
    "metadata",
    "inspection_id",
    "image_query_id",
)
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


def _float(params: Mapping[str, str], name: str, low: float, high: float) -> float | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInputError(f"{name} must be a number between {low:g} and {high:g}, got {raw!r}.") from None
    if math.isnan(value) or not low <= value <= high:
        raise InvalidInputError(f"{name} must be between {low:g} and {high:g}, got {raw!r}.")
    return value


def parse_bool(raw: str | None, name: str) -> bool:
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidInputError(f"{name} must be true or false, got {raw!r}.")


def decode_metadata(raw: str | None) -> dict[str, Any] | None:
    """URL-safe base64 of a JSON object of at most 1 KB, as the SDK sends it."""
    if raw is None:
        return None
    try:
        decoded = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise InvalidInputError("metadata must be URL-safe base64 of a JSON object.") from None
    if len(decoded) > MAX_METADATA_BYTES:
        raise InvalidInputError(f"metadata is {len(decoded)} bytes of JSON; the limit is {MAX_METADATA_BYTES}.")
    try:
        value = json.loads(decoded)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidInputError("metadata must be URL-safe base64 of a JSON object; the JSON is invalid.") from None
    if not isinstance(value, dict):
        raise InvalidInputError("metadata must be a JSON object (a dictionary).")
    return value


def parse_submit_params(params: Mapping[str, str]) -> dict[str, Any]:
    """Validated keyword arguments for :class:`~intellioptics_edge.service.SubmitRequest`."""
    detector_id = params.get("detector_id")
    if not detector_id:
        raise InvalidInputError("detector_id is required (a query parameter, e.g. ?detector_id=det_...).")
    if not is_valid_id(detector_id, "det"):
        raise InvalidInputError(
            f"detector_id {detector_id!r} is not a detector id (det_ followed by letters and digits)."
        )
    human_review = params.get("human_review")
    if human_review is not None:
        human_review = human_review.upper()
        if human_review not in HumanReview.__members__:
            raise InvalidInputError(f"human_review must be DEFAULT, ALWAYS or NEVER, got {params['human_review']!r}.")
    image_query_id = params.get("image_query_id") or None
    if image_query_id is not None and not is_valid_id(image_query_id, "iq"):
        raise InvalidInputError(f"image_query_id {image_query_id!r} must look like iq_ followed by letters and digits.")
    inspection_id = params.get("inspection_id") or None
    if inspection_id is not None and len(inspection_id) > 100:
        raise InvalidInputError("inspection_id is longer than 100 characters.")
    return {
        "detector_id": detector_id,
        "confidence_threshold": _float(params, "confidence_threshold", 0.0, 1.0),
        "patience_time": _float(params, "patience_time", 0.0, 3600.0),
        "human_review": human_review,
        "want_async": parse_bool(params.get("want_async"), "want_async"),
        "metadata": decode_metadata(params.get("metadata")),
        "inspection_id": inspection_id,
        "image_query_id": image_query_id,
        "forward_params": {name: params[name] for name in FORWARDED_PARAMS if name in params},
    }
