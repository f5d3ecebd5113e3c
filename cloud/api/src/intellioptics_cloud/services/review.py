"""The review queue: people answer the queries the models could not.

Claims are compare-and-set updates (``WHERE status allows it``), so two reviewers never
hold the same item even on SQLite; on PostgreSQL each candidate row is first locked with
``FOR UPDATE SKIP LOCKED``, so concurrent claimers move past a row another one is taking. A claim expires
after ``lock_s``; an expired claim is free for anyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from intellioptics_cloud.auth import Principal
from intellioptics_cloud.db import rows_changed
from intellioptics_cloud.errors import ClaimError
from intellioptics_cloud.models import DetectorRow, ImageQueryRow, LabelRow, ReviewItemRow, utcnow
from intellioptics_cloud.services.image_queries import get_image_query
from intellioptics_cloud.services.labels import SOURCE_REVIEW, LabelRequest, apply_label
from intellioptics_cloud.workqueue import WorkQueue
from intellioptics_common.errors import NotFoundError
from intellioptics_common.schemas import ROIRequest


@dataclass(frozen=True)
class ReviewView:
    item: ReviewItemRow
    iq: ImageQueryRow
    detector: DetectorRow


@dataclass(frozen=True)
class DetectorPending:
    detector_id: str
    detector_name: str
    pending: int
    oldest: datetime | None


def _open(now: datetime):  # type: ignore[no-untyped-def]
    """Items a reviewer may take: never claimed, skipped, or whose claim has expired."""
    return or_(
        ReviewItemRow.status.in_(("pending", "skipped")),
        and_(ReviewItemRow.status == "claimed", ReviewItemRow.claim_expires_at < now),
    )


def _view(session: Session, item: ReviewItemRow) -> ReviewView:
    iq = session.get(ImageQueryRow, item.image_query_id)
    detector = session.get(DetectorRow, item.detector_id)
    assert iq is not None and detector is not None
    return ReviewView(item, iq, detector)


def _item(session: Session, principal: Principal, item_id: str) -> ReviewItemRow:
    item = session.get(ReviewItemRow, item_id)
    if item is None or item.account_id != principal.account_id:
        raise NotFoundError(f"Review item {item_id} not found.")
    return item


def queue(
    session: Session, principal: Principal, detector_id: str | None, limit: int
) -> tuple[list[ReviewView], int, datetime | None]:
    now = utcnow()
    where = [ReviewItemRow.account_id == principal.account_id, _open(now)]
    if detector_id:
        where.append(ReviewItemRow.detector_id == detector_id)
    count, oldest = session.execute(
        select(func.count(), func.min(ReviewItemRow.created_at)).select_from(ReviewItemRow).where(*where)
    ).one()
    items = session.scalars(select(ReviewItemRow).where(*where).order_by(ReviewItemRow.sort_at).limit(limit))
    return [_view(session, i) for i in items], int(count or 0), oldest


def claim(
    session: Session, principal: Principal, detector_id: str | None, lock_s: float, ahead: bool = False
) -> ReviewView | None:
    """The caller's held item (refreshed), else the next free one; ``ahead`` always takes
    a new one, so a UI can keep the next item claimed while the current one is shown."""
    now = utcnow()
    expires = now + timedelta(seconds=lock_s)
    mine = select(ReviewItemRow).where(
        ReviewItemRow.account_id == principal.account_id,
        ReviewItemRow.status == "claimed",
        ReviewItemRow.claimed_by == principal.user_id,
        ReviewItemRow.claim_expires_at >= now,
    )
    if detector_id:
        mine = mine.where(ReviewItemRow.detector_id == detector_id)
    held = None if ahead else session.scalars(mine.order_by(ReviewItemRow.sort_at).limit(1)).first()
    if held is not None:  # a reviewer who reloads gets the item already in hand
        held.claim_expires_at = expires
        session.commit()
        return _view(session, held)
    where = [ReviewItemRow.account_id == principal.account_id, _open(now)]
    if detector_id:
        where.append(ReviewItemRow.detector_id == detector_id)
    candidates = session.scalars(select(ReviewItemRow).where(*where).order_by(ReviewItemRow.sort_at).limit(50)).all()
    # Items this reviewer skipped come last for them, first for everyone else.
    ordered = sorted(candidates, key=lambda i: (principal.user_id in (i.skipped_by or []), i.sort_at))
    ids = [i.id for i in ordered]
    session.rollback()
    for item_id in ids:
        # PostgreSQL: lock just this row, skipping it if another claimer holds it.
        locked = session.scalar(
            select(ReviewItemRow.id).where(ReviewItemRow.id == item_id).with_for_update(skip_locked=True)
        )
        taken = 0
        if locked is not None:
            # The compare-and-set is the guard on SQLite (which has no row locks).
            taken = rows_changed(
                session,
                update(ReviewItemRow)
                .where(ReviewItemRow.id == item_id, _open(now))
                .values(
                    status="claimed",
                    claimed_by=principal.user_id,
                    claimed_by_name=principal.username,
                    claim_expires_at=expires,
                )
                .execution_options(synchronize_session=False),
            )
        session.commit()
        if taken == 1:
            item = session.get(ReviewItemRow, item_id)
            assert item is not None
            session.refresh(item)
            return _view(session, item)
    return None


def _require_claim(item: ReviewItemRow, principal: Principal) -> None:
    now = utcnow()
    if item.status != "claimed" or item.claimed_by != principal.user_id:
        raise ClaimError("Claim this item first (POST /v1/review/claim); it is not claimed by you.")
    if item.claim_expires_at is None or item.claim_expires_at < now:
        raise ClaimError("Your claim on this item expired; claim it again before labeling.")


def label(
    session: Session, principal: Principal, item_id: str, value: str, rois: list[ROIRequest] | None, queue: WorkQueue
) -> ReviewView:
    item = _item(session, principal, item_id)
    _require_claim(item, principal)
    iq = get_image_query(session, principal, item.image_query_id)
    apply_label(session, principal, iq, LabelRequest(iq.id, value, rois, SOURCE_REVIEW), queue)
    session.commit()
    return _view(session, item)


def skip(session: Session, principal: Principal, item_id: str) -> ReviewView:
    item = _item(session, principal, item_id)
    _require_claim(item, principal)
    item.status = "skipped"
    item.claimed_by = None
    item.claimed_by_name = None
    item.claim_expires_at = None
    item.skipped_by = sorted({*(item.skipped_by or []), principal.user_id})
    item.sort_at = utcnow()
    session.commit()
    return _view(session, item)


def release(session: Session, principal: Principal, item_id: str) -> ReviewView:
    """Give back a claim without passing judgement: the item keeps its place in the queue.

    For a UI that claimed items ahead and will not show them (the reviewer changed the
    detector filter or closed the page); a skip would send them to the back of the line.
    Releasing an item the caller no longer holds (the claim expired or was taken over)
    changes nothing and is not an error: the item is free already.
    """
    item = _item(session, principal, item_id)
    if item.status == "claimed" and item.claimed_by == principal.user_id:
        item.status = "skipped" if item.skipped_by else "pending"
        item.claimed_by = None
        item.claimed_by_name = None
        item.claim_expires_at = None
        session.commit()
    return _view(session, item)


def undo(session: Session, principal: Principal, item_id: str, lock_s: float) -> ReviewView:
    """Take back the caller's own latest label on this item and hold the item again."""
    item = _item(session, principal, item_id)
    iq = get_image_query(session, principal, item.image_query_id)
    latest = session.scalars(
        select(LabelRow)
        .where(LabelRow.image_query_id == iq.id)
        .order_by(LabelRow.created_at.desc(), LabelRow.id.desc())
    ).first()
    if item.status != "labeled" or latest is None or latest.user_id != principal.user_id:
        raise ClaimError("Nothing to undo: the latest label on this item is not yours.")
    previous = latest.previous_result or {}
    iq.result = previous.get("result")
    iq.rois = previous.get("rois")
    iq.done_processing = bool(previous.get("done_processing", False))
    session.delete(latest)
    item.status = "claimed"
    item.label = None
    item.label_id = None
    item.labeled_by = None
    item.labeled_at = None
    item.claimed_by = principal.user_id
    item.claimed_by_name = principal.username
    item.claim_expires_at = utcnow() + timedelta(seconds=lock_s)
    session.commit()
    return _view(session, item)


def stats(session: Session, principal: Principal) -> list[DetectorPending]:
    rows = session.execute(
        select(ReviewItemRow.detector_id, DetectorRow.name, func.count(), func.min(ReviewItemRow.created_at))
        .join(DetectorRow, DetectorRow.id == ReviewItemRow.detector_id)
        .where(ReviewItemRow.account_id == principal.account_id, ReviewItemRow.status != "labeled")
        .group_by(ReviewItemRow.detector_id, DetectorRow.name)
        .order_by(DetectorRow.name)
    ).all()
    return [DetectorPending(r[0], r[1], int(r[2]), r[3]) for r in rows]
