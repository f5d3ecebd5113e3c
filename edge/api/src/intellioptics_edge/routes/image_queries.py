"""``/device-api/v1/image-queries`` and ``/v1/image-queries``: the SDK's image-query calls.

Submitting needs a token with ``submit`` (admin, device), reading one with ``read`` (every
role), of the edge's own account: see :mod:`intellioptics_edge.auth`. An image with its
depth map comes as multipart parts or as the JSON form of ``POST image-queries/rgbd``
(:mod:`intellioptics_common.rgbd`); the SDK's raw image body takes the path it always took."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from intellioptics_common.errors import InvalidInputError, UnsupportedMediaTypeError
from intellioptics_common.rgbd import RgbdBody, is_multipart, rgbd_json
from intellioptics_common.rgbd_form import read_form
from intellioptics_common.roles import Permission
from intellioptics_common.schemas import Page
from intellioptics_edge.cloud import CloudResponse
from intellioptics_edge.deps import Caller, Reader, StateDep, Submitter, authorize
from intellioptics_edge.errors import ImageQueryNotFoundError
from intellioptics_edge.images import check_content_type
from intellioptics_edge.params import parse_submit_params
from intellioptics_edge.service import EdgeAnswer, SubmitRequest
from intellioptics_edge.state import EdgeState

router = APIRouter(tags=["image-queries"])


@router.post("/image-queries", status_code=201)
async def submit_image_query(request: Request) -> Response:
    # The hot path reads state and token itself: FastAPI's dependency solving costs
    # more per request than everything else this function does outside the model.
    state: EdgeState = request.app.state.edge
    caller = await authorize(request, Permission.SUBMIT)  # before a byte of the body is read
    declared = request.headers.get("content-type")
    if is_multipart(declared):
        arguments = parse_submit_params(request.query_params)
        pair = await read_form(request.headers, request.stream())
        return await _submit(state, _pair_request(pair, caller, arguments))
    content_type = check_content_type(declared)
    arguments = parse_submit_params(request.query_params)
    body = await request.body()
    submit = SubmitRequest(
        image=body, content_type=content_type, token=caller.token, local_caller=caller.local, **arguments
    )
    return await _submit(state, submit)


@router.post("/image-queries/rgbd", status_code=201)
async def submit_rgbd_image_query(request: Request, state: StateDep, caller: Submitter) -> Response:
    """The design documents' JSON form, ``{"rgb_base64", "depth_base64"}``, with the query
    string of ``POST image-queries``; answered as a multipart query with both parts."""
    declared = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if declared != "application/json":
        raise UnsupportedMediaTypeError(
            f'Content-Type must be application/json (got {declared or "none"}); send {{"rgb_base64": "…", '
            '"depth_base64": "…"}, or the image and depth as multipart parts to POST image-queries.'
        )
    arguments = parse_submit_params(request.query_params)
    pair = rgbd_json(await request.body(), state.limits.max_bytes)
    return await _submit(state, _pair_request(pair, caller, arguments))


def _pair_request(pair: RgbdBody, caller: Caller, arguments: dict[str, Any]) -> SubmitRequest:
    return SubmitRequest(
        image=pair.image,
        content_type=pair.content_type,
        depth=pair.depth,
        token=caller.token,
        local_caller=caller.local,
        **arguments,
    )


async def _submit(state: EdgeState, submit: SubmitRequest) -> Response:
    outcome = await state.service.submit(submit)
    if isinstance(outcome, EdgeAnswer):
        return Response(outcome.body, status_code=201, media_type="application/json")
    return _cloud(outcome)


MAX_DETECTORS_PER_IMAGE = 32


@router.post("/image-queries/multi")
async def submit_for_many_detectors(request: Request, state: StateDep, caller: Submitter) -> Response:
    """One image for several detectors (``?detector_id=a&detector_id=b``, the other query
    parameters of ``POST image-queries`` apply to each): one image query per detector,
    each through the whole decision tree, with one model call for all of them. Answers
    ``{"results": [{"detector_id", "status_code", "image_query" | "error"}]}`` in the order
    asked; one detector's refusal does not fail the others."""
    detector_ids = request.query_params.getlist("detector_id")
    if not detector_ids or len(detector_ids) > MAX_DETECTORS_PER_IMAGE:
        raise InvalidInputError(f"Name 1 to {MAX_DETECTORS_PER_IMAGE} detectors (?detector_id=a&detector_id=b).")
    if len(set(detector_ids)) != len(detector_ids):
        raise InvalidInputError("A detector is named twice; name each detector once.")
    if request.query_params.get("image_query_id"):
        raise InvalidInputError("image_query_id names one query; each detector gets its own here, so leave it out.")
    content_type = check_content_type(request.headers.get("content-type"))
    shared = {name: value for name, value in request.query_params.items() if name != "detector_id"}
    arguments = [parse_submit_params({**shared, "detector_id": detector_id}) for detector_id in detector_ids]
    body = await request.body()
    submits = [
        SubmitRequest(image=body, content_type=content_type, token=caller.token, local_caller=caller.local, **each)
        for each in arguments
    ]
    outcomes = await state.service.submit_many(submits)
    parts = []
    for detector_id, outcome in zip(detector_ids, outcomes, strict=True):
        head = '{"detector_id":' + json.dumps(detector_id)
        if isinstance(outcome, EdgeAnswer):
            parts.append(head + ',"status_code":201,"image_query":' + outcome.body + "}")
        elif isinstance(outcome, CloudResponse):
            key = "image_query" if outcome.status_code < 400 else "error"  # the cloud's own answer, as it came
            parts.append(head + f',"status_code":{outcome.status_code},"{key}":{json.dumps(outcome.body)}}}')
        else:
            error = {"detail": outcome.public_message, "code": outcome.code}
            parts.append(head + f',"status_code":{outcome.status_code},"error":{json.dumps(error)}}}')
    return Response('{"results":[' + ",".join(parts) + "]}", media_type="application/json")


MAX_BATCH_IMAGES = 32


@router.post("/image-queries/batch")
async def batch_image_queries(request: Request, state: StateDep, caller: Submitter, detector_id: str) -> Response:
    """Several images (multipart files, any field name) for one detector: one result per
    image and a summary (total, flagged, per severity, mean ms). Nothing is stored."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidInputError("Send the images as multipart/form-data files (for example curl -F image=@a.jpg).")
    try:
        form = await request.form(max_files=MAX_BATCH_IMAGES, max_fields=MAX_BATCH_IMAGES)
    except Exception as exc:  # starlette's parser raises its own errors for malformed or oversized forms
        raise InvalidInputError(
            f"The multipart body could not be read ({exc}); at most {MAX_BATCH_IMAGES} files."
        ) from exc
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if not files:
        raise InvalidInputError("The batch holds no image files; attach 1 to 32 files to the multipart body.")
    images = [(f.filename or f"image_{i}", await f.read(), f.content_type or "image/jpeg") for i, f in enumerate(files)]
    result = await state.service.batch(detector_id, caller.token, images)
    return Response(result.model_dump_json(), media_type="application/json")


@router.get("/image-queries")
async def list_image_queries(
    request: Request,
    state: StateDep,
    _caller: Reader,
    page: int = 1,
    page_size: int = 10,
    detector_id: str | None = None,
) -> Response:
    """Offline only: the queries this edge answered. With a cloud, 404 lets nginx ask the cloud."""
    if state.cloud is not None:
        raise ImageQueryNotFoundError("Listing image queries is served by the cloud.")
    # Bounded above too: a 20-digit page overflows SQLite's INTEGER offset (a 500 found by fuzzing).
    if not 1 <= page <= 1_000_000 or not 1 <= page_size <= 1000:
        raise InvalidInputError("page must be between 1 and 1000000 and page_size between 1 and 1000.")
    total, rows = await anyio.to_thread.run_sync(
        partial(state.store.list, detector_id=detector_id, offset=(page - 1) * page_size, limit=page_size)
    )
    # Absolute links, as the SDK's pagination model requires.
    listing = Page[dict](
        count=total,
        next=str(request.url.include_query_params(page=page + 1)) if page * page_size < total else None,
        previous=str(request.url.include_query_params(page=page - 1)) if page > 1 else None,
        results=[json.loads(row.body) for row in rows],
    )
    return Response(listing.model_dump_json(), media_type="application/json")


@router.get("/image-queries/{image_query_id}")
async def get_image_query(image_query_id: str, state: StateDep, caller: Reader) -> Response:
    answer = await state.service.get(image_query_id, caller.token)
    if isinstance(answer, CloudResponse):
        return _cloud(answer)
    return Response(answer, media_type="application/json")


@router.get("/image-queries/{image_query_id}/explanation")
async def get_explanation(image_query_id: str, state: StateDep, _caller: Reader) -> Response:
    """Why this edge answered as it did: model, raw scores, threshold, escalation."""
    return Response(await state.service.explanation(image_query_id), media_type="application/json")


@router.get("/image-queries/{image_query_id}/image")
async def get_image(image_query_id: str, state: StateDep, _caller: Reader) -> Response:
    image = await state.service.image(image_query_id)
    return Response(image.data, media_type=image.content_type)


@router.get("/image-queries/{image_query_id}/overlay")
async def get_overlay(image_query_id: str, state: StateDep, _caller: Reader, kind: str = "heatmap") -> Response:
    """Anomaly detectors: PNG of the heat map, the mask or the boxes over the image."""
    return Response(await state.service.overlay(image_query_id, kind), media_type="image/png")


def _cloud(answer: CloudResponse) -> Response:
    return JSONResponse(answer.body, status_code=answer.status_code)
