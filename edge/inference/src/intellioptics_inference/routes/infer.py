"""``POST /infer``: raw image bytes in, :class:`InferenceResult` out.

A depth model's image comes with its depth map as ``multipart/form-data``: a part
``image`` and a part ``depth`` (16-bit PNG or float32 ``.npy``, mm). The raw body stays
the path of every other model: nothing on it changes, so it costs what it did.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from intellioptics_common.depth import MAX_DEPTH_BYTES
from intellioptics_common.errors import ImageTooLargeError, IntelliOpticsError, InvalidInputError
from intellioptics_common.schemas import ErrorBody, InferenceResult, MultiInferenceResult
from intellioptics_inference.deps import InferenceDep

router = APIRouter(tags=["inference"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "Not an image, truncated or malformed; bad detector id; a depth map missing "
        "(depth_required) or unusable (invalid_depth)",
    },
    404: {"model": ErrorBody, "description": "No model installed for this detector"},
    413: {"model": ErrorBody, "description": "Image bytes or pixels over the limits"},
    503: {"model": ErrorBody, "description": "Model still loading, or its package was refused"},
}
_PARTS = ("image", "depth")


class _InMemoryParser(MultiPartParser):
    # The body is already in memory and under its limit: spooling parts to disk would
    # only add a file write per request.
    spool_max_size = MAX_DEPTH_BYTES


@router.post("/infer", response_model=InferenceResult, responses=_ERRORS)
async def infer(
    request: Request,
    service: InferenceDep,
    detector_id: Annotated[str, Query(description="Detector whose model answers")],
) -> Response:
    depth = None
    try:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            image, depth = await _read_parts(request, service.limits.max_bytes + MAX_DEPTH_BYTES)
        else:
            image = await _read_body(request, service.limits.max_bytes)
    except IntelliOpticsError as exc:
        service.record_status(detector_id, exc.status_code, known=service.cache.loaded(detector_id) is not None)
        raise
    result = await service.infer(detector_id, image, depth)
    # Serialised once by pydantic-core; FastAPI would validate the model a second time.
    return Response(result.model_dump_json(), media_type="application/json")


MAX_DETECTORS_PER_IMAGE = 32


@router.post(
    "/infer/multi",
    response_model=MultiInferenceResult,
    responses={
        400: {"model": ErrorBody, "description": "Not an image; no detector, too many or one named twice"},
        413: _ERRORS[413],
    },
)
async def infer_multi(
    request: Request,
    service: InferenceDep,
    detector_id: Annotated[
        list[str], Query(description="Detectors whose models answer, repeated: ?detector_id=a&detector_id=b")
    ],
) -> Response:
    """One image for several detectors: decoded once, the backbone they share run once,
    then each detector's head. Each detector's answer (or its own error: unknown, still
    loading, a depth model) comes back in the order asked; an image that cannot be read
    fails the whole call."""
    if not detector_id or len(detector_id) > MAX_DETECTORS_PER_IMAGE:
        raise InvalidInputError(f"Name 1 to {MAX_DETECTORS_PER_IMAGE} detectors (?detector_id=a&detector_id=b).")
    if len(set(detector_id)) != len(detector_id):
        raise InvalidInputError("A detector is named twice; name each detector once.")
    image = await _read_body(request, service.limits.max_bytes)
    result = await service.infer_many(detector_id, image)
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


async def _read_parts(request: Request, max_bytes: int) -> tuple[bytes, bytes | None]:
    """The ``image`` and ``depth`` file parts of a multipart body (``depth`` may be absent)."""
    body = await _read_body(request, max_bytes)

    async def replay() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await _InMemoryParser(request.headers, replay(), max_files=len(_PARTS), max_fields=0).parse()
    except MultiPartException as exc:
        raise InvalidInputError(
            f"The multipart body could not be read ({exc}); send file parts `image` and `depth`."
        ) from exc
    try:
        parts: dict[str, bytes] = {}
        for name, value in form.multi_items():
            if name not in _PARTS or name in parts or not isinstance(value, UploadFile):
                raise InvalidInputError(
                    f"Unexpected multipart part {name!r}: send one file part each of `image` and `depth`."
                )
            parts[name] = await value.read()
    finally:
        await form.close()
    if "image" not in parts:
        raise InvalidInputError("The multipart body has no `image` part; send the image as a file part named image.")
    return parts["image"], parts.get("depth")


def _too_large(size: int, max_bytes: int) -> str:
    return f"The body is {size}+ bytes; the limit is {max_bytes} bytes. Send a smaller or more compressed image."
