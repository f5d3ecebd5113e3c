"""Image queries as the groundlight SDK sends them: raw image bytes in the body,
everything else in the query string."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from intellioptics_cloud.deps import Reader, ResourcesDep, SessionDep, Submitter
from intellioptics_cloud.routes.paging import page_links
from intellioptics_cloud.services import image_queries
from intellioptics_cloud.services.wire import decode_metadata, image_query_out
from intellioptics_common.errors import ImageTooLargeError
from intellioptics_common.schemas import HumanReview, ImageQuery, Page

router = APIRouter(tags=["image-queries"])


async def raw_image(request: Request, _caller: Submitter) -> bytes:
    """Read the body, refusing it as soon as it passes the size limit.

    It depends on the caller so that a missing or wrong token (and a client the
    failed-token limiter blocks) is answered before a byte of the body is read: an
    unauthenticated client must not make the server take in up to the limit.
    """
    limit = request.app.state.resources.settings.max_image_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ImageTooLargeError(f"The image is {declared} bytes; the limit is {limit} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ImageTooLargeError(f"The image is over the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/image-queries",
    response_model=ImageQuery,
    status_code=status.HTTP_201_CREATED,
    openapi_extra={"requestBody": {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}}},
)
def submit_image_query(
    request: Request,
    response: Response,
    image: Annotated[bytes, Depends(raw_image)],
    principal: Submitter,
    session: SessionDep,
    resources: ResourcesDep,
    detector_id: Annotated[str, Query(min_length=1, max_length=64)],
    confidence_threshold: Annotated[float | None, Query(ge=0.0, le=1.0)] = None,
    patience_time: Annotated[float | None, Query(ge=0.0, le=3600.0)] = None,
    human_review: HumanReview | None = None,
    want_async: bool = False,
    metadata: Annotated[str | None, Query(max_length=1400)] = None,
    inspection_id: Annotated[str | None, Query(max_length=100)] = None,
    image_query_id: Annotated[str | None, Query(max_length=100)] = None,
) -> ImageQuery:
    # want_async changes nothing here: the answer (model or placeholder) is immediate.
    submitted = image_queries.submit(
        resources,
        session,
        principal,
        image_queries.SubmitRequest(
            detector_id=detector_id,
            image=image,
            content_type=request.headers.get("content-type"),
            confidence_threshold=confidence_threshold,
            patience_time=patience_time,
            human_review=human_review.value if human_review else None,
            metadata=decode_metadata(metadata),
            inspection_id=inspection_id,
            image_query_id=image_query_id,
        ),
    )
    if not submitted.created:
        response.status_code = status.HTTP_200_OK
    return image_query_out(submitted.row)


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
    "/image-queries/{image_query_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
def get_image(image_query_id: str, principal: Reader, session: SessionDep, resources: ResourcesDep) -> Response:
    data, content_type = image_queries.get_image(resources, session, principal, image_query_id)
    return Response(content=data, media_type=content_type, headers={"cache-control": "private, max-age=3600"})


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
