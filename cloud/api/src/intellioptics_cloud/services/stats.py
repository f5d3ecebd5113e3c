"""Dataset statistics per detector and the labeled dataset a training worker reads."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from intellioptics_cloud.auth import Principal
from intellioptics_cloud.models import EdgeHourlyRow, ImageQueryRow, LabelRow, ReviewItemRow, utcnow
from intellioptics_cloud.services.detectors import get_detector


@dataclass(frozen=True)
class DatasetStats:
    labels_per_class: dict[str, int]
    by_source: dict[str, int]
    over_time: list[tuple[str, dict[str, int]]]
    total_labels: int
    pending_reviews: int
    active_model_version: int | None


Bucket = Literal["hour", "day"]

# Up to three days of data reads best hour by hour; beyond that a day is one point.
HOURLY_SPAN = timedelta(hours=72)


@dataclass(frozen=True)
class LearningBucket:
    start: datetime
    labels: int
    queries: int
    edge_answers: int
    compared: int
    agreed: int

    @property
    def edge_answer_rate(self) -> float | None:
        return self.edge_answers / self.queries if self.queries else None

    @property
    def edge_accuracy(self) -> float | None:
        return self.agreed / self.compared if self.compared else None


@dataclass(frozen=True)
class EdgeLearning:
    bucket: Bucket
    buckets: list[LearningBucket]


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


@dataclass(frozen=True)
class DatasetEntry:
    label: LabelRow
    has_depth: bool  # the image came with a depth map (a depth model trains on both)


def dataset(session: Session, principal: Principal, detector_id: str) -> list[DatasetEntry]:
    detector = get_detector(session, principal, detector_id)
    with_depth = set(
        session.scalars(
            select(ImageQueryRow.id).where(
                ImageQueryRow.detector_id == detector.id, ImageQueryRow.depth_blob_key.is_not(None)
            )
        )
    )
    return [
        DatasetEntry(row, row.image_query_id in with_depth)
        for row in current_labels(session, detector.id)
        if row.label != "UNCLEAR"
    ]


def edge_learning(session: Session, principal: Principal, detector_id: str, days: int) -> EdgeLearning:
    """How the edges did as labels grew: per bucket, the training-set size so far, the
    share of queries the edges answered themselves (their hourly counters), and how often
    an edge's own answer (carried by its escalations and audits) matched the human label.

    Only buckets in which something happened are returned; the last ``days`` are read,
    and labels from before that still count towards the cumulative total.
    """
    detector = get_detector(session, principal, detector_id)
    since = utcnow() - timedelta(days=days)
    labels = [row for row in current_labels(session, detector.id) if row.label != "UNCLEAR"]
    hours = list(
        session.scalars(
            select(EdgeHourlyRow).where(
                EdgeHourlyRow.account_id == detector.account_id,
                EdgeHourlyRow.detector_id == detector.id,
                EdgeHourlyRow.hour >= since.replace(minute=0, second=0, microsecond=0),
            )
        )
    )
    human = {row.image_query_id: row.label for row in labels}
    # Only labeled queries can be compared; an absent edge answer may be SQL NULL or JSON null.
    answered = session.execute(
        select(ImageQueryRow.id, ImageQueryRow.created_at, ImageQueryRow.edge_result).where(
            ImageQueryRow.detector_id == detector.id,
            ImageQueryRow.created_at >= since,
            ImageQueryRow.id.in_(select(LabelRow.image_query_id).where(LabelRow.detector_id == detector.id)),
        )
    )
    compared = [
        (created_at, edge_result.get("label") == human[iq_id])
        for iq_id, created_at, edge_result in answered
        if edge_result and iq_id in human
    ]
    moments = (
        [r.created_at for r in labels if r.created_at >= since] + [h.hour for h in hours] + [m for m, _ in compared]
    )
    if not moments:
        return EdgeLearning(bucket="hour", buckets=[])
    bucket: Bucket = "hour" if max(moments) - min(moments) <= HOURLY_SPAN else "day"

    counts: dict[datetime, Counter[str]] = defaultdict(Counter)
    for h in hours:
        key = _floor(h.hour, bucket)
        counts[key]["queries"] += int(h.counters.get("queries", 0))
        counts[key]["edge_answers"] += int(h.counters.get("edge_answers", 0))
    for moment, agreed in compared:
        counts[_floor(moment, bucket)]["compared"] += 1
        counts[_floor(moment, bucket)]["agreed"] += int(agreed)
    for row in labels:
        if row.created_at >= since:
            counts[_floor(row.created_at, bucket)]["new_labels"] += 1

    total = sum(1 for row in labels if row.created_at < since)
    out = []
    for start in sorted(counts):
        c = counts[start]
        total += c["new_labels"]
        out.append(LearningBucket(start, total, c["queries"], c["edge_answers"], c["compared"], c["agreed"]))
    return EdgeLearning(bucket=bucket, buckets=out)


def _floor(moment: datetime, bucket: Bucket) -> datetime:
    hour = moment.replace(minute=0, second=0, microsecond=0)
    return hour.replace(hour=0) if bucket == "day" else hour
