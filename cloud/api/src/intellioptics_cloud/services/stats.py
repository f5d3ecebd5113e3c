"""Dataset statistics per detector and the labeled dataset a training worker reads."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from intellioptics_cloud.auth import Principal
from intellioptics_cloud.models import LabelRow, ReviewItemRow
from intellioptics_cloud.services.detectors import get_detector


@dataclass(frozen=True)
class DatasetStats:
    labels_per_class: dict[str, int]
    by_source: dict[str, int]
    over_time: list[tuple[str, dict[str, int]]]
    total_labels: int
    pending_reviews: int
    active_model_version: int | None


def current_labels(session: Session, detector_id: str) -> list[LabelRow]:
    """The latest label of each labeled query: the training set."""
    rows = session.scalars(
        select(LabelRow).where(LabelRow.detector_id == detector_id).order_by(LabelRow.created_at, LabelRow.id)
    )
    latest: dict[str, LabelRow] = {}
    for row in rows:
        latest[row.image_query_id] = row
    return sorted(latest.values(), key=lambda r: (r.created_at, r.id))


def detector_stats(session: Session, principal: Principal, detector_id: str) -> DatasetStats:
    detector = get_detector(session, principal, detector_id)
    labels = current_labels(session, detector.id)
    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    for row in labels:
        per_day[_day(row.created_at)][row.label] += 1
    pending = session.scalar(
        select(func.count())
        .select_from(ReviewItemRow)
        .where(ReviewItemRow.detector_id == detector.id, ReviewItemRow.status != "labeled")
    )
    return DatasetStats(
        labels_per_class=dict(Counter(r.label for r in labels)),
        by_source=dict(Counter(r.source for r in labels)),
        over_time=[(day, dict(per_day[day])) for day in sorted(per_day)],
        total_labels=len(labels),
        pending_reviews=int(pending or 0),
        active_model_version=detector.active_model_version,
    )


def _day(moment: datetime) -> str:
    return moment.date().isoformat()


def dataset(session: Session, principal: Principal, detector_id: str) -> list[LabelRow]:
    detector = get_detector(session, principal, detector_id)
    return [row for row in current_labels(session, detector.id) if row.label != "UNCLEAR"]
