"""Calls to the IntelliOptics cloud (Groundlight-compatible API), when one is configured.

Timeouts are short (connect 2 s, read 4 s by default) and there are no retries: the
cloud is an escalation path, never something a camera should wait on; whatever the
cloud cannot take now goes to the durable outbox instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from intellioptics_common.depth import depth_media_type
from intellioptics_common.ratelimit import CALLER_HEADER, VOUCHER_HEADER, TooManyFailedAttemptsError
from intellioptics_common.schemas import Detector, Me


class CloudUnreachable(Exception):
    """The cloud did not answer usefully (network error, timeout, 5xx); internal only."""


@dataclass(frozen=True)
class CloudResponse:
    """A cloud answer passed back to the client as it came."""

    status_code: int
    body: Any


class CloudClient:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def _request(
        self, method: str, path: str, token: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        try:
            response = await self._client.request(
                method, path, headers={**(headers or {}), "x-api-token": token}, **kwargs
            )
        except httpx.HTTPError as exc:
            raise CloudUnreachable(f"{type(exc).__name__} on {method} {path}") from exc
        if response.status_code >= 500:
            raise CloudUnreachable(f"HTTP {response.status_code} on {method} {path}")
        return response

    async def whoami(self, token: str, *, caller: str | None = None, edge_token: str | None = None) -> Me | None:
        """The identity behind ``token``; None when the cloud refuses it. With ``caller``
        and ``edge_token`` the edge asks on the caller's behalf: the cloud then counts a
        refusal against the caller's address (see ``intellioptics_common.ratelimit``)."""
        headers = {} if caller is None or edge_token is None else {CALLER_HEADER: caller, VOUCHER_HEADER: edge_token}
        response = await self._request("GET", "/device-api/v1/me", token, headers)
        if response.status_code in (401, 403):
            return None
        if response.status_code == 429:  # the caller (not this edge) is over the cloud's limit
            retry_after = response.headers.get("retry-after", "")
            raise TooManyFailedAttemptsError(int(retry_after) if retry_after.isdigit() else 60)
        if response.status_code != 200:
            raise CloudUnreachable(f"HTTP {response.status_code} on GET /v1/me")
        try:
            return Me.model_validate_json(response.content)
        except ValidationError as exc:
            raise CloudUnreachable("unreadable /v1/me answer") from exc

    async def get_detector(self, detector_id: str, token: str) -> Detector | None:
        response = await self._request("GET", f"/device-api/v1/detectors/{detector_id}", token)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise CloudUnreachable(f"HTTP {response.status_code} on GET detector")
        try:
            return Detector.model_validate_json(response.content)
        except ValidationError as exc:
            raise CloudUnreachable("unreadable detector answer") from exc

    async def submit_image_query(
        self, params: dict[str, str], image: bytes, content_type: str, token: str, *, depth: bytes | None = None
    ) -> CloudResponse:
        """The query as the camera sent it: the raw image, or multipart ``image`` + ``depth``."""
        if depth is None:
            body: dict[str, Any] = {"content": image, "headers": {"content-type": content_type}}
        else:
            body = {"files": depth_parts(image, content_type, depth)}
        response = await self._request("POST", "/device-api/v1/image-queries", token, params=params, **body)
        return _as_cloud_response(response)

    async def get_image_query(self, image_query_id: str, token: str, timeout_s: float | None = None) -> CloudResponse:
        extra: dict[str, Any] = {} if timeout_s is None else {"timeout": timeout_s}
        path = f"/device-api/v1/image-queries/{image_query_id}"
        return _as_cloud_response(await self._request("GET", path, token, **extra))


def depth_parts(image: bytes, content_type: str, depth: bytes) -> dict[str, tuple[str, bytes, str]]:
    """The multipart parts ``image`` and ``depth`` of an image query with its depth map."""
    return {"image": ("image", image, content_type), "depth": ("depth", depth, depth_media_type(depth))}


def _as_cloud_response(response: httpx.Response) -> CloudResponse:
    try:
        body = response.json()
    except ValueError:
        body = {"detail": f"the cloud answered HTTP {response.status_code}", "code": "cloud_error"}
    return CloudResponse(status_code=response.status_code, body=body)
