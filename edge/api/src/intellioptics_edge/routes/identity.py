"""What the SDK asks on construction (``/v1/me``, token snippet) and ``get_detector``.

Offline, the edge answers all three itself. With a cloud, ``/v1/me`` is answered from
the identity the cloud confirmed for the token, while the token snippet and detectors
answer 404 so that nginx asks the cloud, which owns them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response

from intellioptics_common.errors import NotFoundError
from intellioptics_common.schemas import ApiToken
from intellioptics_edge.deps import Reader, StateDep
from intellioptics_edge.errors import DetectorNotFoundError

router = APIRouter(tags=["identity"])
_STARTED_AT = datetime.now(UTC)


@router.get("/me")
async def me(caller: Reader) -> Response:
    return Response(caller.identity.model_dump_json(exclude_none=True), media_type="application/json")


@router.get("/api-tokens/by-snippet/{snippet}")
async def token_by_snippet(snippet: str, state: StateDep, caller: Reader) -> Response:
    if state.cloud is not None or not caller.token.startswith(snippet):
        raise NotFoundError("Token management is not served by this edge.")
    described = ApiToken(name="edge token", raw_key_snippet=snippet, created_at=_STARTED_AT, token_ttl=None)
    return Response(described.model_dump_json(), media_type="application/json")


@router.get("/detectors/{detector_id}")
async def get_detector(detector_id: str, state: StateDep, _caller: Reader) -> Response:
    detector = state.detectors.local(detector_id) if state.cloud is None else None
    if detector is None:
        raise DetectorNotFoundError(f"Detector {detector_id} is not configured on this edge.")
    return Response(detector.to_wire().model_dump_json(), media_type="application/json")
