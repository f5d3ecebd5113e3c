"""``GET /streams``: every camera stream of edge-config, with its state and counters."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from intellioptics_common.errors import ServiceUnavailableError
from intellioptics_edge.deps import EdgeUser, StateDep

router = APIRouter(tags=["streams"])


@router.get("/streams")
async def list_streams(state: StateDep, _caller: EdgeUser) -> dict[str, Any]:
    report = await state.streams.report()
    if report.streams is None and not state.config.current().streams:
        # No stream service answering and no streams configured: nothing to report, and
        # nothing wrong (an edge without cameras need not run the stream service).
        return {"streams": [], "config_error": None}
    if report.streams is None:
        raise ServiceUnavailableError(f"Stream status is unavailable: {report.error}.")
    return {"streams": report.streams, "config_error": report.config_error}
