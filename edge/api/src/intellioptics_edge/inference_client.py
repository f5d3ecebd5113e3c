"""Calls to the local inference service (``edge/inference``).

One ``POST /infer`` per query and no separate readiness probe on the request path: the
service's 404 (no model on disk) and 503 (loading) already say "not ready", and a
second round trip would cost every answer. That call goes through
:class:`~intellioptics_edge.loopback_http.LoopbackHTTP` when the service is at a plain
``http://`` address (httpx costs ~3 ms per image there); the rest, and tests that replace
the transport, use httpx.

No retries: the camera is waiting, and a query the model cannot answer now has a
better path than a retry (the cloud, or the outbox); timeouts are short for the same
reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import httpx
from pydantic import BaseModel, ValidationError

from intellioptics_common.errors import ImageDecodeError, ImageTooLargeError
from intellioptics_common.schemas import InferenceResult
from intellioptics_edge.loopback_http import LoopbackHTTP, LoopbackHTTPError, LoopbackResponse


@dataclass(frozen=True)
class NotReady:
    """The model cannot answer this query; ``reason`` is shown to people."""

    reason: str


class ModelState(BaseModel):
    """One detector as the inference service's ``GET /detectors`` lists it (fields we show)."""

    detector_id: str
    state: Literal["loaded", "loading", "refused", "on_disk"] | str
    primary_versions_on_disk: list[int] = []
    loaded: dict | None = None
    refused_reason: str | None = None

    @property
    def serving_versions(self) -> tuple[int | None, int | None]:
        loaded = self.loaded or {}
        return loaded.get("primary_model_version"), loaded.get("oodd_model_version")


class _ModelStates(BaseModel):
    cache_size: int | None = None
    detectors: list[ModelState]


def _detail(response: httpx.Response | LoopbackResponse) -> str:
    try:
        body = json.loads(response.content)
        if isinstance(body, dict) and isinstance(body.get("detail"), str):
            return body["detail"]
    except ValueError:
        pass
    return f"HTTP {response.status_code}"


class InferenceClient:
    def __init__(self, client: httpx.AsyncClient, infer_http: LoopbackHTTP | None = None) -> None:
        self._client = client
        self._infer_http = infer_http
        # Absolute URLs built once per detector: httpx's URL parsing and merging is a
        # visible share of the edge's CPU per answer.
        self._infer_urls: dict[str, httpx.URL] = {}

    def _infer_url(self, detector_id: str) -> httpx.URL:
        url = self._infer_urls.get(detector_id)
        if url is None:
            if len(self._infer_urls) > 1000:
                self._infer_urls.clear()
            url = self._client.base_url.join("/infer").copy_merge_params({"detector_id": detector_id})
            self._infer_urls[detector_id] = url
        return url

    async def infer(self, detector_id: str, image: bytes, content_type: str) -> InferenceResult | NotReady:
        """The model's answer, or why there is none. Bad images raise the common errors."""
        response: httpx.Response | LoopbackResponse
        try:
            if self._infer_http is not None:
                target = self._infer_url(detector_id).raw_path.decode("ascii")
                response = await self._infer_http.post(target, image, content_type)
            else:
                response = await self._client.post(
                    self._infer_url(detector_id), content=image, headers={"content-type": content_type}
                )
        except (httpx.TimeoutException, TimeoutError):
            return NotReady("the inference service did not answer in time")
        except httpx.HTTPError as exc:
            return NotReady(f"the inference service is unreachable ({type(exc).__name__})")
        except LoopbackHTTPError as exc:
            return NotReady(f"the inference service is unreachable ({exc})")
        if response.status_code == 200:
            try:
                return InferenceResult.model_validate_json(response.content)
            except ValidationError:
                return NotReady("the inference service sent an answer this edge cannot read")
        if response.status_code == 400:
            raise ImageDecodeError(_detail(response))
        if response.status_code == 413:
            raise ImageTooLargeError(_detail(response))
        if response.status_code == 404:
            return NotReady(f"no model is installed for {detector_id} on this edge")
        return NotReady(f"the model for {detector_id} is not ready: {_detail(response)}")

    async def detector_ready(self, detector_id: str) -> bool:
        """Asking also makes the service start loading the detector (warm-up)."""
        try:
            response = await self._client.get(f"/detectors/{detector_id}/ready")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def model_states(self) -> tuple[int | None, dict[str, ModelState]] | None:
        """Cache size and per-detector state, without loading anything (for /status)."""
        try:
            response = await self._client.get("/detectors")
            listing = _ModelStates.model_validate_json(response.content) if response.status_code == 200 else None
        except (httpx.HTTPError, ValidationError):
            return None
        if listing is None:
            return None
        return listing.cache_size, {entry.detector_id: entry for entry in listing.detectors}

    async def service_ready(self) -> bool:
        try:
            response = await self._client.get("/health/ready")
        except httpx.HTTPError:
            return False
        return response.status_code == 200
