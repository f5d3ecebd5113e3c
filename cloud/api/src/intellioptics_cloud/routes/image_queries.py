"""Image queries as the groundlight SDK sends them: raw image bytes in the body,
everything else in the query string. An image with its depth map comes as the edge
takes it (:mod:`intellioptics_common.rgbd`): multipart parts ``image`` and ``depth`` on
the same route, or the JSON form on ``POST image-queries/rgbd``."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.orm import Session

from intellioptics_cloud.auth import Principal
from intellioptics_cloud.deps import Reader, ResourcesDep, SessionDep, Submitter
from intellioptics_cloud.resources import Resources
from intellioptics_cloud.routes.paging import page_links
from intellioptics_cloud.services import image_queries
from intellioptics_cloud.services.wire import decode_metadata, image_query_out
from intellioptics_common.depth import MAX_DEPTH_BYTES
from intellioptics_common.errors import (
    ImageTooLargeError,
    IntelliOpticsError,
    InvalidInputError,
    UnsupportedMediaTypeError,
)
from intellioptics_common.rgbd import RgbdBody, is_multipart, rgbd_json
from intellioptics_common.rgbd_form import read_form_bytes
from intellioptics_common.schemas import HumanReview, ImageQuery, Page, StrictRequest

router = APIRouter(tags=["image-queries"])

# Room for the multipart boundaries and part headers around the image and the depth map.
_FORM_SLACK = 64 * 1024
_DEPTH_DOC = "The depth map of the same frame: a 16-bit PNG or a float32 .npy, in mm (0 = no reading)"


async def _read_limited(request: Request, limit: int, what: str) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ImageTooLargeError(f"The {what} is {declared} bytes; the limit is {limit} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ImageTooLargeError(f"The {what} is over the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def raw_image(request: Request, _caller: Submitter) -> RgbdBody:
    """Read the body (the raw image, or multipart ``image`` + ``depth``), refusing it as
    soon as it passes the size limit.

    It depends on the caller so that a missing or wrong token (and a client the
    failed-token limiter blocks) is answered before a byte of the body is read: an
    unauthenticated client must not make the server take in up to the limit.
    """
    limit = request.app.state.resources.settings.max_image_bytes
    declared = request.headers.get("content-type")
    if not is_multipart(declared):
        return RgbdBody(await _read_limited(request, limit, "image"), declared or "", None)
    body = await _read_limited(request, limit + MAX_DEPTH_BYTES + _FORM_SLACK, "multipart body")
    return await read_form_bytes(request.headers, body)


async def rgbd_body(request: Request, _caller: Submitter) -> RgbdBody:
    """``POST image-queries/rgbd``: the JSON form, read within the limit once the caller is known."""
    declared = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if declared != "application/json":
        raise UnsupportedMediaTypeError(
            f'Content-Type must be application/json (got {declared or "none"}); send {{"rgb_base64": "…", '
            '"depth_base64": "…"}, or the image and depth as multipart parts to POST image-queries.'
        )
    limit = request.app.state.resources.settings.max_image_bytes
    body = await _read_limited(request, (limit + MAX_DEPTH_BYTES) * 4 // 3 + _FORM_SLACK, "RGB + depth body")
    return rgbd_json(body, limit)


@dataclass(frozen=True)
class SubmitParams:
    """The query string of ``POST image-queries`` (the SDK's parameters)."""

    detector_id: str
    confidence_threshold: float | None
    patience_time: float | None
    human_review: HumanReview | None
    metadata: str | None
    inspection_id: str | None
    image_query_id: str | None


def submit_params(
    detector_id: Annotated[str, Query(min_length=1, max_length=64)],
    confidence_threshold: Annotated[float | None, Query(ge=0.0, le=1.0)] = None,
    patience_time: Annotated[float | None, Query(ge=0.0, le=3600.0)] = None,
    human_review: HumanReview | None = None,
    want_async: bool = False,  # noqa: ARG001  # the SDK sends it; the cloud answers at once either way
    metadata: Annotated[str | None, Query(max_length=1400)] = None,
    inspection_id: Annotated[str | None, Query(max_length=100)] = None,
    image_query_id: Annotated[str | None, Query(max_length=100)] = None,
) -> SubmitParams:
    # want_async changes nothing here: the answer (model or placeholder) is immediate.
    return SubmitParams(
        detector_id, confidence_threshold, patience_time, human_review, metadata, inspection_id, image_query_id
    )


def _submit(
    response: Response,
    body: RgbdBody,
    params: SubmitParams,
    principal: Principal,
    session: Session,
    resources: Resources,
) -> ImageQuery:
    submitted = image_queries.submit(
        resources,
        session,
        principal,
        image_queries.SubmitRequest(
            detector_id=params.detector_id,
            image=body.image,
            content_type=body.content_type or None,
            confidence_threshold=params.confidence_threshold,
            patience_time=params.patience_time,
            human_review=params.human_review.value if params.human_review else None,
            metadata=decode_metadata(params.metadata),
            inspection_id=params.inspection_id,
            image_query_id=params.image_query_id,
            depth=body.depth,
        ),
    )
    if not submitted.created:
        response.status_code = status.HTTP_200_OK
    return image_query_out(submitted.row)


@router.post(
    "/image-queries",
    response_model=ImageQuery,
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {
            "content": {
                "image/*": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["image"],
                        "properties": {
                            "image": {"type": "string", "format": "binary"},
                            "depth": {"type": "string", "format": "binary", "description": _DEPTH_DOC},
                        },
                    }
                },
            }
        }
    },
)
def submit_image_query(
    response: Response,
    body: Annotated[RgbdBody, Depends(raw_image)],
    params: Annotated[SubmitParams, Depends(submit_params)],
    principal: Submitter,
    session: SessionDep,
    resources: ResourcesDep,
) -> ImageQuery:
    return _submit(response, body, params, principal, session, resources)


@router.post(
    "/image-queries/rgbd",
    response_model=ImageQuery,
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["rgb_base64", "depth_base64"],
                        "properties": {"rgb_base64": {"type": "string"}, "depth_base64": {"type": "string"}},
                    }
                }
            }
        }
    },
)
def submit_rgbd_image_query(
    response: Response,
    body: Annotated[RgbdBody, Depends(rgbd_body)],
    params: Annotated[SubmitParams, Depends(submit_params)],
    principal: Submitter,
    session: SessionDep,
    resources: ResourcesDep,
) -> ImageQuery:
    """The design documents' JSON form of an image with its depth map (both base64)."""
    return _submit(response, body, params, principal, session, resources)


@router.get("/image-queries", response_model=Page[ImageQuery])
def list_image_queries(
    request: Request,
    principal: Reader,
    session: SessionDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 10,
    detector_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Page[ImageQuery]:
    rows, count = image_queries.list_image_queries(session, principal, page, page_size, detector_id)
    nxt, prev = page_links(request, page, page_size, count)
    return Page[ImageQuery](count=count, next=nxt, previous=prev, results=[image_query_out(r) for r in rows])


@router.get("/image-queries/{image_query_id}", response_model=ImageQuery)
def get_image_query(image_query_id: str, principal: Reader, session: SessionDep) -> ImageQuery:
    return image_query_out(image_queries.get_image_query(session, principal, image_query_id))


@router.get(
    "/image-queries/{image_query_id}/depth",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "application/x-npy": {}}}, 404: {"description": "no depth map"}},
)
def get_depth(
    image_query_id: str,
    principal: Reader,
    session: SessionDep,
    resources: ResourcesDep,
    view: Annotated[
        str, Query(description="png: 16-bit PNG in mm; original: the bytes as sent; colour: false colour for people")
    ] = "png",
) -> Response:
    """The depth map sent with the image (404 ``no_depth`` when it came without one)."""
    data, media_type = image_queries.get_depth(resources, session, principal, image_query_id, view)
    return Response(content=data, media_type=media_type, headers={"cache-control": "private, max-age=3600"})


@router.get(
    "/image-queries/{image_query_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
def get_image(image_query_id: str, principal: Reader, session: SessionDep, resources: ResourcesDep) -> Response:
    data, content_type = image_queries.get_image(resources, session, principal, image_query_id)
    return Response(content=data, media_type=content_type, headers={"cache-control": "private, max-age=3600"})


MAX_BATCH_ITEMS = 50
# Base64 of the images and the JSON around them; the edge keeps a request well under it.
MAX_BATCH_BYTES = 64 * 1024 * 1024


class BatchItem(StrictRequest):
    """One query of a batch: the query parameters of ``POST /image-queries``, plus the image."""

    detector_id: str = Field(min_length=1, max_length=64)
    # Required: a batch is an edge's outbox, delivered at least once and deduplicated by id.
    image_query_id: str = Field(min_length=1, max_length=100)
    content_type: str = Field(min_length=1, max_length=100)
    image: str = Field(description="The image bytes, standard base64")
    depth: str | None = Field(default=None, description="The depth map as sent (16-bit PNG or .npy, mm), base64")
    confidence_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    patience_time: float | None = Field(default=None, ge=0.0, le=3600.0)
    human_review: HumanReview | None = None
    metadata: str | None = Field(default=None, max_length=1400, description="As the query parameter: base64url JSON")
    inspection_id: str | None = Field(default=None, max_length=100)


class BatchRequest(StrictRequest):
    items: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class BatchResult(BaseModel):
    """What ``POST /image-queries`` would have answered for this item."""

    image_query_id: str
    status: int
    code: str | None = None
    detail: str | None = None


class BatchResponse(BaseModel):
    results: list[BatchResult]


async def raw_batch(request: Request, _caller: Submitter) -> BatchRequest:
    """The body, read (within a limit) only once the caller is known, then validated."""
    body = await _read_limited(request, MAX_BATCH_BYTES, "batch")
    try:
        return BatchRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInputError(f"Invalid batch: {where}: {first['msg']}") from None


def _submit_request(item: BatchItem) -> image_queries.SubmitRequest:
    try:
        image = base64.b64decode(item.image, validate=True)
    except binascii.Error:
        raise InvalidInputError("image must be standard base64 of the image bytes.") from None
    try:
        depth = None if item.depth is None else base64.b64decode(item.depth, validate=True)
    except binascii.Error:
        raise InvalidInputError("depth must be standard base64 of the depth map's bytes.") from None
    return image_queries.SubmitRequest(
        detector_id=item.detector_id,
        image=image,
        content_type=item.content_type,
        confidence_threshold=item.confidence_threshold,
        patience_time=item.patience_time,
        human_review=item.human_review,
        metadata=decode_metadata(item.metadata),
        inspection_id=item.inspection_id,
        image_query_id=item.image_query_id,
        depth=depth,
    )


@router.post("/image-queries/batch", response_model=BatchResponse)
def submit_image_query_batch(
    batch: Annotated[BatchRequest, Depends(raw_batch)],
    principal: Submitter,
    session: SessionDep,
    resources: ResourcesDep,
) -> BatchResponse:
    """Up to 50 queries in one request and one transaction (an edge's outbox). Each item
    gets the status ``POST /image-queries`` would give it (201 new, 200 already stored,
    4xx refused); the request itself is 200 unless the whole batch could not be read."""
    results: list[BatchResult | None] = [None] * len(batch.items)
    requests, positions = [], []
    limit = resources.settings.max_image_bytes
    for index, item in enumerate(batch.items):
        try:
            request = _submit_request(item)
            if len(request.image) > limit:
                raise ImageTooLargeError(f"The image is {len(request.image)} bytes; the limit is {limit} bytes.")
        except IntelliOpticsError as exc:
            results[index] = BatchResult(
                image_query_id=item.image_query_id, status=exc.status_code, code=exc.code, detail=exc.public_message
            )
            continue
        requests.append(request)
        positions.append(index)
    outcomes = image_queries.submit_batch(resources, session, principal, requests)
    for index, outcome, request in zip(positions, outcomes, requests, strict=True):
        if isinstance(outcome, IntelliOpticsError):
            results[index] = BatchResult(
                image_query_id=str(request.image_query_id),
                status=outcome.status_code,
                code=outcome.code,
                detail=outcome.public_message,
            )
        else:
            code = status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK
            results[index] = BatchResult(image_query_id=outcome.row.id, status=code)
    return BatchResponse(results=[r for r in results if r is not None])


@router.get(
    "/image-queries/{image_query_id}/overlay",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def get_overlay(
    image_query_id: str,
    principal: Reader,
    session: SessionDep,
    resources: ResourcesDep,
    kind: Annotated[str, Query(description="heatmap, mask or boxes")] = "heatmap",
) -> Response:
    """Anomaly detectors: the heat map, mask or boxes over the image, as PNG."""
    png = image_queries.get_overlay(resources, session, principal, image_query_id, kind)
    return Response(content=png, media_type="image/png", headers={"cache-control": "private, max-age=60"})
