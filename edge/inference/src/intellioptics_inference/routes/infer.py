"""``POST /infer``: raw image bytes in, :class:`InferenceResult` out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from intellioptics_common.errors import ImageTooLargeError, IntelliOpticsError
from intellioptics_common.schemas import ErrorBody, InferenceResult
from intellioptics_inference.deps import InferenceDep

router = APIRouter(tags=["inference"])

_ERRORS = {
    400: {"model": ErrorBody, "description": "Not an image, truncated or malformed; bad detector id"},
    404: {"model": ErrorBody, "description": "No model installed for this detector"},
    413: {"model": ErrorBody, "description": "Image bytes or pixels over the limits"},
    503: {"model": ErrorBody, "description": "Model still loading, or its package was refused"},
}


@router.post("/infer", response_model=InferenceResult, responses=_ERRORS)
async def infer(
    request: Request,
    service: InferenceDep,
    detector_id: Annotated[str, Query(description="Detector whose model answers")],
) -> Response:
    try:
        body = await _read_body(request, service.limits.max_bytes)
    except IntelliOpticsError as exc:
        service.record_status(detector_id, exc.status_code, known=service.cache.loaded(detector_id) is not None)
        raise
    result = await service.infer(detector_id, body)
    # Serialised once by pydantic-core; FastAPI would validate the model a second time.
    return Response(result.model_dump_json(), media_type="application/json")


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """Refuse oversized bodies before holding them in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ImageTooLargeError(_too_large(int(declared), max_bytes))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ImageTooLargeError(_too_large(size, max_bytes))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, max_bytes: int) -> str:
    return f"The body is {size}+ bytes; the limit is {max_bytes} bytes. Send a smaller or more compressed image."
