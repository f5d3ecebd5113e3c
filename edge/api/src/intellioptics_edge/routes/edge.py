"""Edge-only routes at the host root, as the SDK's ``gl.edge`` calls them: reads for the
admin and device tokens of the edge's account, ``PUT /edge-config`` for its admins only."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from intellioptics_common.errors import InvalidInputError
from intellioptics_common.jsonlimits import MAX_JSON_BYTES, loads_limited
from intellioptics_edge.deps import EdgeAdmin, EdgeUser, StateDep

router = APIRouter(tags=["edge"])


@router.get("/edge-config")
async def get_edge_config(state: StateDep, _caller: EdgeUser) -> Response:
    return Response(json.dumps(state.config.current().to_payload()), media_type="application/json")


@router.put("/edge-config")
async def put_edge_config(
    request: Request,
    state: StateDep,
    _caller: EdgeAdmin,
    allow_empty: Annotated[
        bool, Query(description="Accept a body that leaves no detector configured (refused without it).")
    ] = False,
) -> Response:
    """Validate, write atomically, serve; a bad body is a 400 and the file stays as it was.
    ``null``, ``{}`` or a configuration that would remove every detector is refused too
    unless ``?allow_empty=true`` says that is meant."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise InvalidInputError(f"The edge configuration is over {MAX_JSON_BYTES} bytes; send a smaller one.")
    payload = loads_limited(bytes(body), "The edge configuration (the body, a JSON object)")
    config = await asyncio.to_thread(state.config.replace, payload, allow_empty=allow_empty)
    return Response(json.dumps(config.to_payload()), media_type="application/json")


@router.get("/edge-detector-readiness")
async def detector_readiness(state: StateDep, _caller: EdgeUser) -> dict[str, dict[str, bool]]:
    """``{detector_id: {ready}}`` for the configured detectors; asking also starts their loading."""
    ids = [entry.detector_id for entry in state.config.current().detectors]
    ready = await asyncio.gather(*(state.inference.detector_ready(detector_id) for detector_id in ids))
    return {detector_id: {"ready": value} for detector_id, value in zip(ids, ready, strict=True)}


@router.get("/edge-info")
async def edge_info(state: StateDep, _caller: EdgeUser) -> dict[str, str | None]:
    return {"upstream_endpoint": state.settings.cloud_base or None}
