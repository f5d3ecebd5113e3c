"""Calls to the local inference service (``edge/inference``).

One ``POST /infer`` per query and no separate readiness probe on the request path: the
service's 404 (no model on disk) and 503 (loading) already say "not ready", and a
second round trip would cost every answer. That call goes through
:class:`~intellioptics_edge.loopback_http.LoopbackHTTP` when the service is at a plain
``http://`` address (httpx costs ~3 ms per image there); the rest, and tests that replace
the transport, use httpx.

An image with a depth map goes as ``multipart/form-data`` (parts ``image`` and ``depth``),
built here in one join; an image without one goes as the raw body, as it always did.

No retries: the camera is waiting, and a query the model cannot answer now has a
better path than a retry (the cloud, or the outbox); timeouts are short for the same
reason.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Literal

import httpx
from pydantic import BaseModel, ValidationError

from intellioptics_common.errors import (
    DepthMapError,
    DepthRequiredError,
    ImageDecodeError,
    ImageTooLargeError,
    IntelliOpticsError,
    InvalidInputError,
)
from intellioptics_common.schemas import InferenceResult, MultiInferenceResult
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


def _error_body(response: httpx.Response | LoopbackResponse) -> tuple[str, str | None]:
    """(detail, code) of the service's JSON error body."""
    try:
        body = json.loads(response.content)
        if isinstance(body, dict) and isinstance(body.get("detail"), str):
            code = body.get("code")
            return body["detail"], code if isinstance(code, str) else None
    except ValueError:
        pass
    return f"HTTP {response.status_code}", None


# The service's 400s by code; any other 400 is about the image.
_BAD_INPUT: dict[str | None, type[InvalidInputError]] = {
    DepthMapError.code: DepthMapError,
    DepthRequiredError.code: DepthRequiredError,
}


def rgbd_form(image: bytes, content_type: str, depth: bytes) -> tuple[bytes, str]:
    """``multipart/form-data`` body and content type with file parts ``image`` and ``depth``.

    The boundary is 128 random bits: it does not occur inside the image or the depth map.
    """
    boundary = secrets.token_hex(16).encode("ascii")
    head = b"--" + boundary + b'\r\ncontent-disposition: form-data; name="'
    body = b"".join(
        (
            head, b'image"; filename="image"\r\ncontent-type: ', content_type.encode("latin-1"), b"\r\n\r\n",
            image, b"\r\n",
            head, b'depth"; filename="depth"\r\ncontent-type: application/octet-stream\r\n\r\n',
            depth, b"\r\n--", boundary, b"--\r\n",
        )
    )  # fmt: skip
    return body, "multipart/form-data; boundary=" + boundary.decode("ascii")


def _refusal(detector_id: str, status: int, detail: str, code: str | None) -> NotReady:
    """What a status other than 200 means: bad input raises, the rest is "not ready"."""
    if status == 400:
        raise _BAD_INPUT.get(code, ImageDecodeError)(detail)
    if status == 413:
        raise ImageTooLargeError(detail)
    if status == 404:
        return NotReady(f"no model is installed for {detector_id} on this edge")
    return NotReady(f"the model for {detector_id} is not ready: {detail}")


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

    async def infer(
        self, detector_id: str, image: bytes, content_type: str, depth: bytes | None = None
    ) -> InferenceResult | NotReady:
        """The model's answer, or why there is none. Bad images and depth maps, and no depth
        map for a model that needs one, raise the common errors."""
        if depth is not None:
            image, content_type = rgbd_form(image, content_type, depth)
        response = await self._post(self._infer_url(detector_id), image, content_type)
        if isinstance(response, NotReady):
            return response
        if response.status_code == 200:
            try:
                return InferenceResult.model_validate_json(response.content)
            except ValidationError:
                return NotReady("the inference service sent an answer this edge cannot read")
        detail, code = _error_body(response)
        return _refusal(detector_id, response.status_code, detail, code)

    async def infer_many(
        self, detector_ids: list[str], image: bytes, content_type: str
    ) -> dict[str, InferenceResult | NotReady | IntelliOpticsError]:
        """Every detector's answer on one image from one ``POST /infer/multi`` (one decode,
        one pass of a backbone they share). A bad or oversized image raises, as ``infer``
        does; a detector's own refusal (a depth model, say) comes back in its place."""
        url = self._client.base_url.join("/infer/multi").copy_merge_params({"detector_id": detector_ids})
        response = await self._post(url, image, content_type)
        if isinstance(response, NotReady):
            return dict.fromkeys(detector_ids, response)
        if response.status_code != 200:
            detail, code = _error_body(response)
            refusal = _refusal(",".join(detector_ids), response.status_code, detail, code)
            return dict.fromkeys(detector_ids, refusal)
        try:
            many = MultiInferenceResult.model_validate_json(response.content)
        except ValidationError:
            return dict.fromkeys(detector_ids, NotReady("the inference service sent an answer this edge cannot read"))
        out: dict[str, InferenceResult | NotReady | IntelliOpticsError] = {}
        for answer in many.results:
            if answer.result is not None:
                out[answer.detector_id] = answer.result
                continue
            error = answer.error
            detail, code = (error.detail, error.code) if error is not None else (f"HTTP {answer.status_code}", None)
            try:
                out[answer.detector_id] = _refusal(answer.detector_id, answer.status_code, detail, code)
            except IntelliOpticsError as exc:
                out[answer.detector_id] = exc
        return out

    async def _post(
        self, url: httpx.URL, body: bytes, content_type: str
    ) -> httpx.Response | LoopbackResponse | NotReady:
        """One POST to the service (the loopback client where it serves plain HTTP), or why it failed."""
        try:
            if self._infer_http is not None:
                return await self._infer_http.post(url.raw_path.decode("ascii"), body, content_type)
            return await self._client.post(url, content=body, headers={"content-type": content_type})
        except (httpx.TimeoutException, TimeoutError):
            return NotReady("the inference service did not answer in time")
        except httpx.HTTPError as exc:
            return NotReady(f"the inference service is unreachable ({type(exc).__name__})")
        except LoopbackHTTPError as exc:
            return NotReady(f"the inference service is unreachable ({exc})")

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
