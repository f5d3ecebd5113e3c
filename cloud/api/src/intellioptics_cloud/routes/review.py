"""The review queue for people (reviewer or admin tokens)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from intellioptics_cloud.deps import ResourcesDep, Reviewer, SessionDep
from intellioptics_cloud.models import utcnow
from intellioptics_cloud.schemas import (
    DetectorReviewStats,
    EdgeAnswer,
    ReviewItem,
    ReviewLabel,
    ReviewQueue,
    ReviewStats,
)
from intellioptics_cloud.services import review
from intellioptics_cloud.services.wire import class_names, image_url
from intellioptics_common.results import result_label

router = APIRouter(prefix="/review", tags=["review"])


def _age(moment: datetime | None) -> float | None:
    return None if moment is None else round(max((utcnow() - moment).total_seconds(), 0.0), 3)


def item_out(view: review.ReviewView) -> ReviewItem:
    item, iq, detector = view.item, view.iq, view.detector
    edge = None
    if iq.edge_result:
        report = iq.edge_result
        edge = EdgeAnswer(
            label=report.get("label"),
            confidence=report.get("confidence"),
            from_edge=True,
            source="EDGE",
            model_version=report.get("primary_model_version"),
            probabilities=report.get("probabilities"),
            in_domain_score=report.get("oodd_in_domain_score"),
        )
    elif iq.result and iq.result.get("source") not in (None, "STILL_PROCESSING", "USER"):
        scores = iq.model_scores or {}
        edge = EdgeAnswer(
            label=result_label(iq.result),
            confidence=iq.result.get("confidence"),
            from_edge=bool(iq.result.get("from_edge")),
            source=iq.result.get("source"),
            model_version=iq.model_version,
            probabilities=scores.get("probabilities"),
            in_domain_score=scores.get("in_domain"),
        )
    return ReviewItem(
        id=item.id,
        image_query_id=iq.id,
        detector_id=detector.id,
        detector_name=detector.name,
        query=detector.query,
        mode=detector.mode,
        class_names=class_names(detector),
        mode_configuration=detector.mode_configuration,
        reason=item.reason,
        edge_answer=edge,
        result=iq.result,
        rois=iq.rois,
        image_url=image_url(iq.id),
        created_at=item.created_at,
        status=item.status,
        claimed_by=item.claimed_by_name if item.status == "claimed" else None,
        claim_expires_at=item.claim_expires_at if item.status == "claimed" else None,
        label=item.label,
    )


@router.get("/queue", response_model=ReviewQueue)
def queue(
    principal: Reviewer,
    session: SessionDep,
    detector_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ReviewQueue:
    views, count, oldest = review.queue(session, principal, detector_id, limit)
    return ReviewQueue(count=count, oldest_age_s=_age(oldest), items=[item_out(v) for v in views])


@router.post("/claim", response_model=ReviewItem, responses={204: {"description": "Nothing left to review"}})
def claim(
    principal: Reviewer,
    session: SessionDep,
    resources: ResourcesDep,
    detector_id: Annotated[str | None, Query(max_length=64)] = None,
    ahead: Annotated[bool, Query(description="Claim a further item even while holding one")] = False,
) -> ReviewItem | Response:
    view = review.claim(session, principal, detector_id, resources.settings.review_lock_s, ahead)
    if view is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return item_out(view)


@router.post("/items/{item_id}/label", response_model=ReviewItem)
def label(
    item_id: str, body: ReviewLabel, principal: Reviewer, session: SessionDep, resources: ResourcesDep
) -> ReviewItem:
    return item_out(review.label(session, principal, item_id, body.label, body.rois, resources.queue))


@router.post("/items/{item_id}/skip", response_model=ReviewItem)
def skip(item_id: str, principal: Reviewer, session: SessionDep) -> ReviewItem:
    return item_out(review.skip(session, principal, item_id))


@router.post("/items/{item_id}/release", response_model=ReviewItem)
def release(item_id: str, principal: Reviewer, session: SessionDep) -> ReviewItem:
    """Hand a claimed item back unjudged: it keeps its place in the queue."""
    return item_out(review.release(session, principal, item_id))


@router.post("/items/{item_id}/undo", response_model=ReviewItem)
def undo(item_id: str, principal: Reviewer, session: SessionDep, resources: ResourcesDep) -> ReviewItem:
    return item_out(review.undo(session, principal, item_id, resources.settings.review_lock_s))


@router.get("/stats", response_model=ReviewStats)
def stats(principal: Reviewer, session: SessionDep) -> ReviewStats:
    rows = review.stats(session, principal)
    oldest = min((r.oldest for r in rows if r.oldest is not None), default=None)
    return ReviewStats(
        total_pending=sum(r.pending for r in rows),
        oldest_age_s=_age(oldest),
        per_detector=[
            DetectorReviewStats(
                detector_id=r.detector_id, detector_name=r.detector_name, pending=r.pending, oldest_age_s=_age(r.oldest)
            )
            for r in rows
        ],
    )
