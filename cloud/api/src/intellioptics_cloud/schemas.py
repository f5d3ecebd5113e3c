"""Wire models of the cloud's own API (beyond the Groundlight SDK's, which live in
``intellioptics_common.schemas``). Requests forbid unknown fields; responses tolerate them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from intellioptics_common.schemas import ROI, Me, ROIRequest, StrictRequest, WireModel

RoleName = Literal["admin", "reviewer", "device", "worker"]
Name = Annotated[str, Field(min_length=1, max_length=100)]


class MeOut(Me):
    """``Me`` with the extras always set: the edge authorises its callers by them."""

    role: RoleName  # type: ignore[assignment]
    account_id: int  # type: ignore[assignment]


class TokenCreate(StrictRequest):
    name: Name
    role: RoleName


class TokenInfo(WireModel):
    id: str
    name: str
    role: RoleName
    snippet: str
    created_at: datetime
    last_used_at: datetime | None = None


class TokenCreated(TokenInfo):
    token: str = Field(description="The raw token; shown only once.")


class AccountCreate(StrictRequest):
    name: Name


class AccountOut(WireModel):
    id: int
    name: str


class AccountCreated(WireModel):
    account: AccountOut
    admin_token: str


# --- review queue -------------------------------------------------------------------


class EdgeAnswer(WireModel):
    """The model's answer a reviewer sees beside the item: the edge model's (from its
    escalation report) or the cloud model's, with what a person needs to judge it."""

    label: str | None
    confidence: float | None
    from_edge: bool
    source: str | None
    model_version: int | None = Field(default=None, description="The primary model version that answered.")
    probabilities: dict[str, float] | None = Field(default=None, description="Its score per class.")
    in_domain_score: float | None = Field(default=None, description="The OODD model's in-domain score.")


ReviewStatus = Literal["pending", "claimed", "labeled", "skipped"]


class ReviewItem(WireModel):
    id: str
    image_query_id: str
    detector_id: str
    detector_name: str
    query: str
    mode: str
    class_names: list[str]
    mode_configuration: dict[str, Any] | None = Field(
        default=None, description="The detector's: class_name and max_count / max_num_bboxes for COUNT / BOUNDING_BOX."
    )
    reason: str
    edge_answer: EdgeAnswer | None
    result: dict[str, Any] | None = Field(default=None, description="The query's result as it stands now.")
    rois: list[ROI] | None = Field(
        default=None,
        description="The query's boxes now: the model's (a reviewer's pre-labels) until a person's replace them.",
    )
    image_url: str
    created_at: datetime
    status: ReviewStatus
    claimed_by: str | None
    claim_expires_at: datetime | None
    label: str | None


class ReviewQueue(WireModel):
    count: int
    oldest_age_s: float | None
    items: list[ReviewItem]


class ReviewLabel(StrictRequest):
    label: Annotated[str, Field(min_length=1, max_length=100)]
    rois: list[ROIRequest] | None = None


class DetectorReviewStats(WireModel):
    detector_id: str
    detector_name: str
    pending: int
    oldest_age_s: float | None


class ReviewStats(WireModel):
    total_pending: int
    oldest_age_s: float | None
    per_detector: list[DetectorReviewStats]


# --- detectors extra ----------------------------------------------------------------


class DayCounts(WireModel):
    date: str
    counts: dict[str, int]


class DetectorStats(WireModel):
    labels_per_class: dict[str, int]
    by_source: dict[str, int]
    over_time: list[DayCounts]
    total_labels: int
    pending_reviews: int
    active_model_version: int | None


class EdgeLearningBucket(WireModel):
    """One hour or day: labels so far, and how the edges did in that bucket."""

    start: datetime
    labels: int = Field(description="Human labels in the training set by the end of this bucket (cumulative).")
    queries: int = Field(description="Queries the edges counted in this bucket.")
    edge_answers: int = Field(description="Of those, queries the edge model answered itself.")
    edge_answer_rate: float | None = Field(description="edge_answers / queries; null without queries.")
    compared: int = Field(description="Queries made in this bucket with both an edge answer and a human label.")
    agreed: int = Field(description="Of those, queries where the edge's answer equals the human label.")
    edge_accuracy: float | None = Field(description="agreed / compared; null when nothing could be compared.")


class EdgeLearning(WireModel):
    detector_id: str
    bucket: Literal["hour", "day"]
    buckets: list[EdgeLearningBucket]


PromotionPolicy = Literal["auto", "manual"]


class DetectorSettings(StrictRequest):
    retrain_every_n_labels: Annotated[int, Field(ge=1, le=100_000)] | None = None
    promotion_policy: PromotionPolicy | None = None


class DetectorSettingsOut(WireModel):
    retrain_every_n_labels: int | None
    promotion_policy: PromotionPolicy


class DatasetExample(WireModel):
    image_query_id: str
    label: str
    source: str
    created_at: datetime
    image_url: str
    rois: list[dict[str, Any]] | None = None  # a COUNT / BOUNDING_BOX label's boxes (image fractions)
    # The depth map sent with the image, as sent (GET it for the bytes); None: the image has none.
    depth_url: str | None = None


# --- model registry -----------------------------------------------------------------


class Decision(WireModel):
    action: str
    reason: str
    at: datetime


VersionStatus = Literal["candidate", "active", "retired"]


class ModelVersion(WireModel):
    id: str
    detector_id: str
    version: int
    status: VersionStatus
    trainer: str
    created_at: datetime
    metrics: dict[str, Any]
    training_set_size: int
    class_counts: dict[str, int]
    dataset_image_query_ids: list[str] | None = None
    decision: Decision | None
    primary_sha256: str
    oodd_sha256: str | None
    primary_pipeline_config: dict[str, Any] | None = None
    oodd_pipeline_config: dict[str, Any] | None = None


class ModelManifest(StrictRequest):
    """The ``manifest`` form field of ``POST /v1/detectors/{id}/models``."""

    primary_pipeline_config: dict[str, Any]
    oodd_pipeline_config: dict[str, Any] | None = None
    primary_metadata: dict[str, Any] = Field(default_factory=dict)
    oodd_metadata: dict[str, Any] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    training_set_size: Annotated[int, Field(ge=0)] = 0
    class_counts: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    dataset_image_query_ids: list[str] | None = None
    training_job_id: str | None = None
    trainer: Annotated[str, Field(min_length=1, max_length=40)] = "manual"
    activate: bool = False
    decision_reason: Annotated[str, Field(max_length=2000)] | None = Field(
        default=None, description="Why the trainer (de)activated it; recorded in the version's decision."
    )


class ModelCompare(WireModel):
    a: ModelVersion
    b: ModelVersion
    metric_deltas: dict[str, float]


# --- edges --------------------------------------------------------------------------


class EdgeRegister(StrictRequest):
    name: Name
    software_version: Annotated[str, Field(min_length=1, max_length=50)]
    detector_ids: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=1000)


class EdgeDetectorVersions(StrictRequest):
    detector_id: Annotated[str, Field(max_length=64)]
    primary_version: int | None = None
    oodd_version: int | None = None


class EdgeHeartbeat(StrictRequest):
    software_version: Annotated[str, Field(min_length=1, max_length=50)]
    detectors: list[EdgeDetectorVersions] = Field(default_factory=list, max_length=1000)
    counters: dict[str, float] | None = None


class EdgeHourly(WireModel):
    detector_id: str
    hour: datetime
    counters: dict[str, float]


class EdgeOut(WireModel):
    id: str
    name: str
    last_seen: datetime | None
    software_version: str
    detector_ids: list[str]
    detectors: list[dict[str, Any]]
    counters: dict[str, float] | None = None
    created_at: datetime
    hourly: list[EdgeHourly] = Field(default_factory=list)


class EdgeMetricsEntry(StrictRequest):
    detector_id: Annotated[str, Field(max_length=64)]
    hour: datetime
    counters: dict[str, float]


class EdgeMetricsReport(StrictRequest):
    edge_id: Annotated[str, Field(max_length=64)]
    entries: list[EdgeMetricsEntry] = Field(max_length=10_000)


# --- training jobs ------------------------------------------------------------------

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobTrigger = Literal["manual", "labels", "schedule"]


class EpochMetrics(WireModel):
    epoch: int
    loss: float | None = None
    accuracy: float | None = None
    val_accuracy: float | None = None


class EpochMetricsIn(StrictRequest):
    epoch: Annotated[int, Field(ge=0)]
    loss: float | None = None
    accuracy: float | None = None
    val_accuracy: float | None = None


class TrainingJob(WireModel):
    id: str
    detector_id: str
    status: JobStatus
    trigger: JobTrigger
    trainer: str
    progress: float
    eta_s: float | None
    message: str | None
    epochs: list[EpochMetrics]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    model_version: int | None
    attempts: int


class TrainingJobCreate(StrictRequest):
    trainer: Literal["fast", "finetune", "auto", "anomaly"] = Field(
        default="auto",
        description=(
            "auto: a BINARY detector with good (NO) labels but too few YES labels gets an anomaly model "
            "trained from its good images, otherwise the fast trainer; anomaly: always the anomaly model "
            "(BINARY only)."
        ),
    )


class TrainingProgress(StrictRequest):
    progress: Annotated[float, Field(ge=0.0, le=1.0)]
    eta_s: Annotated[float, Field(ge=0.0)] | None = None
    message: Annotated[str, Field(max_length=2000)] | None = None
    epoch: EpochMetricsIn | None = None


class TrainingComplete(StrictRequest):
    model_version: int | None = None
    error: Annotated[str, Field(max_length=10_000)] | None = None


class Health(WireModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
