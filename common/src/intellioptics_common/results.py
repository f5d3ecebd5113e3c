"""One image query's ``result`` object, in the shape its detector's mode answers.

The edge, the cloud's own model, the cloud's labels and the edge's escalation reports all
build results here, so a COUNT answer is ``count`` + ``greater_than_max`` wherever it
comes from and the other modes carry ``label`` (Groundlight SDK 1.3.1 result types).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter

from intellioptics_common.schemas import RESULT_TYPE_BY_MODE, DetectorMode, Result

UNCLEAR = "UNCLEAR"
GREATER_THAN_MAX = "GREATER_THAN_MAX"
NO_OBJECTS = "NO_OBJECTS"
BOUNDING_BOX = "BOUNDING_BOX"
BOUNDING_BOX_LABELS = (BOUNDING_BOX, NO_OBJECTS, GREATER_THAN_MAX, UNCLEAR)


def count_from_label(label: str | None) -> int | None:
    """A COUNT label or edge report ("3") as a number; None when it is not one (UNCLEAR)."""
    text = (label or "").strip()
    return int(text) if text.isdigit() else None


def result_payload(
    mode: str,
    label: str | None,
    confidence: float | None,
    source: str,
    from_edge: bool,
    *,
    count: int | None = None,
    greater_than_max: bool = False,
) -> dict[str, Any]:
    """The stored / answered ``result``. COUNT: ``count`` (from ``label`` when not given);
    BOUNDING_BOX, BINARY, MULTI_CLASS: ``label``."""
    payload: dict[str, Any] = {
        "result_type": RESULT_TYPE_BY_MODE[DetectorMode(mode)].value,
        "confidence": confidence,
        "source": source,
        "from_edge": from_edge,
    }
    if mode == DetectorMode.COUNT.value:
        payload["count"] = count_from_label(label) if count is None else count
        payload["greater_than_max"] = greater_than_max or label == GREATER_THAN_MAX
    else:
        payload["label"] = label if label is not None else UNCLEAR
    return payload


def result_label(result: dict[str, Any] | None) -> str | None:
    """The answer of a stored result as one string (a COUNT result's count as text)."""
    if not result:
        return None
    if result.get("result_type") == "counting":
        count = result.get("count")
        return None if count is None else str(count)
    label = result.get("label")
    return None if label is None else str(label)


_RESULT: TypeAdapter[Result] = TypeAdapter(Result)


def result_model(payload: Mapping[str, Any]) -> Result:
    """A built or stored payload as the wire contract's typed result (checked once here)."""
    return _RESULT.validate_python(payload)
