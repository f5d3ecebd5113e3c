"""SQLAlchemy 2 ORM models. The schema itself is created by the Alembic migrations in
``migrations/versions`` (never ``create_all``); a test checks that the two agree.

Timestamps are stored as naive UTC (the same on SQLite and PostgreSQL) and come back
timezone-aware through :class:`UTCDateTime`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Literal column types: SQLAlchemy reads these annotations when it maps the classes.
from intellioptics_cloud.schemas import JobStatus, JobTrigger, PromotionPolicy, ReviewStatus, RoleName, VersionStatus


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, _dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, _dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Clock:
    """The cloud's one clock for leases, claims and expiries. Tests move it on instead of
    sleeping until a lease runs out; production never does."""

    def __init__(self) -> None:
        self._offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def advance(self, seconds: float) -> None:
        self._offset += timedelta(seconds=seconds)

    def reset(self) -> None:
        self._offset = timedelta(0)


CLOCK = Clock()


def utcnow() -> datetime:
    return CLOCK.now()


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Account(Base):
    __tablename__ = "accounts"
    # Integer: the SDK's Me.group.id is an int.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    username: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200))
    is_superuser: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiTokenRow(Base):
    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[RoleName] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    snippet: Mapped[str] = mapped_column(String(20), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]


class DetectorGroupRow(Base):
    __tablename__ = "detector_groups"
    __table_args__ = (Index("uq_detector_groups_account_name", "account_id", "name", unique=True),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DetectorRow(Base):
    __tablename__ = "detectors"
    __table_args__ = (Index("uq_detectors_account_name", "account_id", "name", unique=True),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    query: Mapped[str] = mapped_column(String(300))
    group_name: Mapped[str] = mapped_column(String(100))
    confidence_threshold: Mapped[float] = mapped_column(Float)
    patience_time: Mapped[float] = mapped_column(Float)
    metadata_json: Mapped[dict[str, Any] | None]
    mode: Mapped[str] = mapped_column(String(20))
    mode_configuration: Mapped[dict[str, Any] | None]
    status: Mapped[str] = mapped_column(String(10), default="ON")
    escalation_type: Mapped[str] = mapped_column(String(30), default="STANDARD")
    pipeline_config: Mapped[str | None] = mapped_column(String(100))
    retrain_every_n_labels: Mapped[int | None]
    promotion_policy: Mapped[PromotionPolicy] = mapped_column(String(10), default="auto")
    active_model_version: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ImageQueryRow(Base):
    __tablename__ = "image_queries"
    __table_args__ = (Index("ix_image_queries_account_detector_created", "account_id", "detector_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    detector_id: Mapped[str] = mapped_column(ForeignKey("detectors.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    query: Mapped[str] = mapped_column(String(300))
    result_type: Mapped[str] = mapped_column(String(40))
    result: Mapped[dict[str, Any] | None]
    confidence_threshold: Mapped[float] = mapped_column(Float)
    patience_time: Mapped[float] = mapped_column(Float)
    metadata_json: Mapped[dict[str, Any] | None]
    rois: Mapped[list[Any] | None]
    done_processing: Mapped[bool] = mapped_column(Boolean, default=False)
    human_review: Mapped[str] = mapped_column(String(10), default="DEFAULT")
    inspection_id: Mapped[str | None] = mapped_column(String(100))
    image_blob_key: Mapped[str] = mapped_column(String(300))
    image_sha256: Mapped[str] = mapped_column(String(64))
    image_content_type: Mapped[str] = mapped_column(String(40))
    # The depth map as it was sent (16-bit PNG or float32 .npy, mm), beside the image; None: no depth.
    depth_blob_key: Mapped[str | None] = mapped_column(String(300))
    from_edge: Mapped[bool] = mapped_column(Boolean, default=False)
    escalation_reason: Mapped[str | None] = mapped_column(String(40))
    edge_result: Mapped[dict[str, Any] | None]
    model_version: Mapped[int | None]
    # The cloud model's scores when it answered: {"probabilities": {class: p}, "in_domain": p | None}.
    model_scores: Mapped[dict[str, Any] | None]


class LabelRow(Base):
    __tablename__ = "labels"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    detector_id: Mapped[str] = mapped_column(ForeignKey("detectors.id", ondelete="CASCADE"), index=True)
    image_query_id: Mapped[str] = mapped_column(ForeignKey("image_queries.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(100))
    rois: Mapped[list[Any] | None]
    source: Mapped[str] = mapped_column(String(20))
    user_id: Mapped[str | None] = mapped_column(String(64))
    previous_result: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReviewItemRow(Base):
    __tablename__ = "review_items"
    __table_args__ = (Index("ix_review_items_queue", "account_id", "status", "sort_at"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    detector_id: Mapped[str] = mapped_column(ForeignKey("detectors.id", ondelete="CASCADE"), index=True)
    image_query_id: Mapped[str] = mapped_column(ForeignKey("image_queries.id", ondelete="CASCADE"), unique=True)
    reason: Mapped[str] = mapped_column(String(40))
    status: Mapped[ReviewStatus] = mapped_column(String(10), default="pending")
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_by_name: Mapped[str | None] = mapped_column(String(100))
    claim_expires_at: Mapped[datetime | None]
    skipped_by: Mapped[list[Any] | None]
    label: Mapped[str | None] = mapped_column(String(100))
    label_id: Mapped[str | None] = mapped_column(String(64))
    labeled_by: Mapped[str | None] = mapped_column(String(64))
    labeled_at: Mapped[datetime | None]
    sort_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (Index("uq_model_versions_detector_version", "detector_id", "version", unique=True),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    detector_id: Mapped[str] = mapped_column(ForeignKey("detectors.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[VersionStatus] = mapped_column(String(10), default="candidate")
    trainer: Mapped[str] = mapped_column(String(40))
    metrics: Mapped[dict[str, Any]]
    training_set_size: Mapped[int] = mapped_column(Integer, default=0)
    class_counts: Mapped[dict[str, Any]]
    dataset_image_query_ids: Mapped[list[Any] | None]
    decision: Mapped[dict[str, Any] | None]
    training_job_id: Mapped[str | None] = mapped_column(String(64))
    primary_blob_key: Mapped[str] = mapped_column(String(300))
    primary_sha256: Mapped[str] = mapped_column(String(64))
    primary_pipeline_config: Mapped[dict[str, Any]]
    primary_metadata: Mapped[dict[str, Any]]
    oodd_blob_key: Mapped[str | None] = mapped_column(String(300))
    oodd_sha256: Mapped[str | None] = mapped_column(String(64))
    oodd_pipeline_config: Mapped[dict[str, Any] | None]
    oodd_metadata: Mapped[dict[str, Any] | None]
    activated_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EdgeRow(Base):
    __tablename__ = "edges"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    software_version: Mapped[str] = mapped_column(String(50))
    detector_ids: Mapped[list[Any]]
    detectors: Mapped[list[Any]]
    counters: Mapped[dict[str, Any] | None]
    last_seen: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EdgeHourlyRow(Base):
    __tablename__ = "edge_hourly_metrics"
    __table_args__ = (Index("uq_edge_hourly", "edge_id", "detector_id", "hour", unique=True),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    edge_id: Mapped[str] = mapped_column(ForeignKey("edges.id", ondelete="CASCADE"))
    detector_id: Mapped[str] = mapped_column(String(64))
    hour: Mapped[datetime]
    counters: Mapped[dict[str, Any]]


class TrainingJobRow(Base):
    __tablename__ = "training_jobs"
    __table_args__ = (Index("ix_training_jobs_account_status", "account_id", "status"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    detector_id: Mapped[str] = mapped_column(ForeignKey("detectors.id", ondelete="CASCADE"), index=True)
    status: Mapped[JobStatus] = mapped_column(String(12), default="queued")
    trigger: Mapped[JobTrigger] = mapped_column(String(10), default="manual")
    trainer: Mapped[str] = mapped_column(String(20), default="auto")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    eta_s: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str | None] = mapped_column(Text)
    epochs: Mapped[list[Any]]
    error: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[int | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class QueueMessageRow(Base):
    """The database work queue (see ``workqueue.DatabaseWorkQueue``)."""

    __tablename__ = "queue_messages"
    __table_args__ = (Index("ix_queue_messages_topic_available", "topic", "available_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(100))
    body: Mapped[dict[str, Any]]
    available_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
