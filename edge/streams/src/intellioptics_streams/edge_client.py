"""The stream service's calls to the edge API: its configuration and image queries.

Every sampled frame goes through ``POST /device-api/v1/image-queries`` (or, for a
stream watched by several detectors, ``POST /device-api/v1/image-queries/multi``: one
decode and one backbone pass for all of them), the same decision tree as a camera
posting itself: escalation, audits, outbox and the local record all apply, and the
answer comes back at once (escalations are queued).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from intellioptics_common.schemas import ImageQuery
from intellioptics_common.streams import StreamConfig, Streams
from intellioptics_streams.errors import EdgeApiError

_STREAMS = TypeAdapter(Streams)


@dataclass(frozen=True)
class Answer:
    image_query_id: str
    detector_id: str
    label: str | None  # a COUNT detector's count as text
    confidence: float | None
    source: str | None
    count: int | None = None  # COUNT detectors
    rois: tuple[dict[str, Any], ...] = ()  # COUNT / BOUNDING_BOX boxes, anomaly regions


def encode_metadata(metadata: dict[str, Any]) -> str:
    """URL-safe base64 of the JSON, as the groundlight SDK sends ``metadata``."""
    return base64.urlsafe_b64encode(json.dumps(metadata, separators=(",", ":")).encode()).decode()


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)[:200]


class EdgeApiClient:
    """Thread-safe (one httpx.Client shared by every stream's sampler thread)."""

    def __init__(
        self, base_url: str, token: str | None, timeout_s: float, transport: httpx.BaseTransport | None = None
    ):
        headers = {"x-api-token": token} if token else {}
        self._http = httpx.Client(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=2.0),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def streams(self) -> dict[str, StreamConfig]:
        """The ``streams:`` section of the edge's serving configuration."""
        try:
            response = self._http.get("/edge-config")
        except httpx.HTTPError as exc:
            raise EdgeApiError(f"GET /edge-config failed: {type(exc).__name__}: {exc}") from None
        if response.status_code == 401:
            raise EdgeApiError("the edge API refused INTELLIOPTICS_STREAMS_TOKEN (401); set a token it accepts")
        if not response.is_success:
            raise EdgeApiError(f"GET /edge-config answered HTTP {response.status_code}: {_detail(response)}")
        try:
            return _STREAMS.validate_python(response.json().get("streams") or {})
        except (ValueError, ValidationError) as exc:
            raise EdgeApiError(f"GET /edge-config: the streams section does not validate: {exc}") from None

    def submit(self, detector_id: str, jpeg: bytes, metadata: dict[str, Any]) -> Answer:
        response = self._post("image-queries", [detector_id], jpeg, metadata)
        return _answer(detector_id, response.content)

    def submit_many(
        self, detector_ids: list[str], jpeg: bytes, metadata: dict[str, Any]
    ) -> list[Answer | EdgeApiError]:
        """One frame for several detectors in one ``POST image-queries/multi``: the edge
        decodes it once and runs the backbone they share once. Each detector's answer, or
        its own error, in the order of ``detector_ids``; a failed call raises."""
        names = ",".join(detector_ids)
        response = self._post("image-queries/multi", detector_ids, jpeg, metadata)
        try:
            results = _MULTI.validate_json(response.content).results
        except ValidationError as exc:
            raise EdgeApiError(f"{names}: the edge API's answer is not a list of results: {exc}") from None
        by_id = {item.detector_id: item for item in results}
        out: list[Answer | EdgeApiError] = []
        for detector_id in detector_ids:
            item = by_id.get(detector_id)
            if item is None:
                out.append(EdgeApiError(f"{detector_id}: the edge API gave no answer for it"))
            elif item.image_query is not None and item.status_code < 400:
                try:
                    out.append(_answer(detector_id, json.dumps(item.image_query).encode()))
                except EdgeApiError as exc:
                    out.append(exc)
            else:
                detail = (item.error or {}).get("detail", item.error)
                out.append(EdgeApiError(f"{detector_id}: HTTP {item.status_code}: {detail}"))
        return out

    def _post(self, route: str, detector_ids: list[str], jpeg: bytes, metadata: dict[str, Any]) -> httpx.Response:
        """The JPEG posted to ``/device-api/v1/<route>``; a failed call or an HTTP error raises."""
        names = ",".join(detector_ids)
        try:
            response = self._http.post(
                f"/device-api/v1/{route}",
                params={"detector_id": detector_ids, "metadata": encode_metadata(metadata)},
                content=jpeg,
                headers={"content-type": "image/jpeg"},
            )
        except httpx.HTTPError as exc:
            raise EdgeApiError(f"{names}: POST {route} failed: {type(exc).__name__}: {exc}") from None
        if not response.is_success:
            raise EdgeApiError(f"{names}: HTTP {response.status_code}: {_detail(response)}")
        return response


class _MultiItem(BaseModel):
    detector_id: str
    status_code: int
    image_query: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class _Multi(BaseModel):
    results: list[_MultiItem]


_MULTI = TypeAdapter(_Multi)


def _answer(detector_id: str, content: bytes) -> Answer:
    try:
        query = ImageQuery.model_validate_json(content)
    except ValidationError as exc:
        raise EdgeApiError(f"{detector_id}: the edge API's answer is not an image query: {exc}") from None
    result = query.result
    count = getattr(result, "count", None)
    label = getattr(result, "label", None) if count is None else count
    return Answer(
        image_query_id=query.id,
        detector_id=detector_id,
        label=None if label is None else str(getattr(label, "value", label)),
        confidence=None if result is None else result.confidence,
        source=None if result is None or result.source is None else str(getattr(result.source, "value", result.source)),
        count=count,
        rois=tuple(roi.model_dump(mode="json") for roi in query.rois or ()),
    )
