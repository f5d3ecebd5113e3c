"""The stream service's status, as the edge API shows it (``GET /streams``, ``/status``).

The stream service (``edge/streams``) listens only inside the edge; the edge API asks
it and serves the answer behind the gateway, with the caller's token checked here like
every other edge route. The stream service has already redacted camera credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class StreamsReport:
    streams: list[dict[str, Any]] | None  # None: the stream service did not answer
    error: str | None
    config_error: str | None = None


class StreamsStatus:
    def __init__(self, http: httpx.AsyncClient | None) -> None:
        self._http = http  # None: INTELLIOPTICS_STREAMS_URL is empty, no stream service

    @property
    def configured(self) -> bool:
        return self._http is not None

    async def report(self) -> StreamsReport:
        if self._http is None:
            return StreamsReport(None, "no stream service is configured (INTELLIOPTICS_STREAMS_URL is empty)")
        try:
            response = await self._http.get("/streams")
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            where = self._http.base_url
            return StreamsReport(None, f"the stream service at {where} is not answering ({type(exc).__name__})")
        return StreamsReport(body.get("streams", []), None, body.get("config_error"))
