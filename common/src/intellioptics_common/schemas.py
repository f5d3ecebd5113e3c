"""Groundlight-compatible wire schemas (SDK 1.3.1) plus IntelliOptics' own wire types.

Field names, enum values and required/nullable fields follow what the ``groundlight``
SDK 1.3.1 parses (its ``model.py`` and generated ``groundlight_openapi_client``): a field
the SDK requires is always present here, nullable where the SDK allows ``None``.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from intellioptics_common.roles import Role

T = TypeVar("T")

# Limits the SDK enforces client-side; the servers enforce the same ones.
MAX_DETECTOR_NAME = 200
MAX_DETECTOR_QUERY = 300
MAX_GROUP_NAME = 100
MAX_METADATA_BYTES = 1024
MAX_CLASSES = 50


class DetectorMode(str, Enum):
    BINARY = "BINARY"
    COUNT = "COUNT"
    MULTI_CLASS = "MULTI_CLASS"
    TEXT = "TEXT"
    BOUNDING_BOX = "BOUNDING_BOX"


SUPPORTED_MODES = (DetectorMode.BINARY, DetectorMode.MULTI_CLASS, DetectorMode.COUNT, DetectorMode.BOUNDING_BOX)
# Modes answered by a detection model (boxes; a COUNT answer is the number of boxes).
DETECTION_MODES = (DetectorMode.COUNT, DetectorMode.BOUNDING_BOX)
# The SDK's bounds on max_count / max_num_bboxes, and its default when none is sent.
MAX_OBJECTS_LIMIT = 50
DEFAULT_MAX_OBJECTS = 10


class ResultType(str, Enum):
    BINARY_CLASSIFICATION = "binary_classification"
    COUNTING = "counting"
    MULTI_CLASSIFICATION = "multi_classification"
    TEXT_RECOGNITION = "text_recognition"
    BOUNDING_BOX = "bounding_box"


RESULT_TYPE_BY_MODE = {
    DetectorMode.BINARY: ResultType.BINARY_CLASSIFICATION,
    DetectorMode.MULTI_CLASS: ResultType.MULTI_CLASSIFICATION,
    DetectorMode.COUNT: ResultType.COUNTING,
    DetectorMode.TEXT: ResultType.TEXT_RECOGNITION,
    DetectorMode.BOUNDING_BOX: ResultType.BOUNDING_BOX,
}


class Source(str, Enum):
    """Who produced a result (``result.source``)."""

    STILL_PROCESSING = "STILL_PROCESSING"
    CLOUD = "CLOUD"
    USER = "USER"
    CLOUD_ENSEMBLE = "CLOUD_ENSEMBLE"
    ALGORITHM = "ALGORITHM"
    AI_CLOUD = "AI_CLOUD"
    AI_CLOUD_ENSEMBLE = "AI_CLOUD_ENSEMBLE"
    HUMAN_AI_CLOUD_ENSEMBLE = "HUMAN_AI_CLOUD_ENSEMBLE"
    EDGE = "EDGE"


class BinaryLabel(str, Enum):
    YES = "YES"
    NO = "NO"
    UNCLEAR = "UNCLEAR"


class DetectorStatus(str, Enum):
    ON = "ON"
    OFF = "OFF"


class EscalationType(str, Enum):
    STANDARD = "STANDARD"
    NO_HUMAN_LABELING = "NO_HUMAN_LABELING"


class HumanReview(str, Enum):
    DEFAULT = "DEFAULT"
    ALWAYS = "ALWAYS"
    NEVER = "NEVER"


class WireModel(BaseModel):
    """Base for responses: tolerant of extra fields so newer servers do not break clients."""

    model_config = ConfigDict(use_enum_values=True)


class StrictRequest(BaseModel):
    """Base for request bodies: unknown fields are a 4xx, not silently dropped."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)


# --- geometry and ROIs -------------------------------------------------------------


class BBoxGeometry(WireModel):
    """Normalised box (0..1); ``x``/``y`` are the centre, as the SDK builds them."""

    left: float
    top: float
    right: float
    bottom: float
    x: float
    y: float


class BBoxGeometryRequest(StrictRequest):
    left: Annotated[float, Field(ge=0.0, le=1.0)]
    top: Annotated[float, Field(ge=0.0, le=1.0)]
    right: Annotated[float, Field(ge=0.0, le=1.0)]
    bottom: Annotated[float, Field(ge=0.0, le=1.0)]
    # The SDK's create_roi also fills the centre; accepted and recomputed.
    x: float | None = None
    y: float | None = None


class ROI(WireModel):
    label: str
    score: float
    geometry: BBoxGeometry


class ROIRequest(StrictRequest):
    label: Annotated[str, Field(min_length=1, max_length=200)]
    score: float | None = None
    geometry: BBoxGeometryRequest


# --- results ------------------------------------------------------------------------


class _ResultBase(WireModel):
    confidence: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    source: Source | None = None
    from_edge: bool = False


class BinaryClassificationResult(_ResultBase):
    result_type: Literal["binary_classification"] = "binary_classification"
    label: BinaryLabel


class MultiClassificationResult(_ResultBase):
    result_type: Literal["multi_classification"] = "multi_classification"
    label: str


class CountingResult(_ResultBase):
    result_type: Literal["counting"] = "counting"
    count: Annotated[int, Field(ge=0)] | None
    greater_than_max: bool = False


class BoundingBoxResult(_ResultBase):
    """``label``: BOUNDING_BOX (the boxes are the query's ``rois``), NO_OBJECTS,
    GREATER_THAN_MAX or UNCLEAR."""

    result_type: Literal["bounding_box"] = "bounding_box"
    label: str


Result = Annotated[
    BinaryClassificationResult | MultiClassificationResult | CountingResult | BoundingBoxResult,
    Field(discriminator="result_type"),
]


# --- image queries ------------------------------------------------------------------


class PipelineReport(WireModel):
    """Which stage of the edge answered (the design documents' "method comparison").

    ``rule-based``: a rule of the detector's rule stage answered and no model ran;
    ``hybrid``: the rules ran, none was sure, the model answered; ``ml``: the detector has
    no rules. SDK 1.3.1 ignores the field.
    """

    method: Literal["rule-based", "ml", "hybrid"]
    check: str | None = Field(default=None, description="The rule that answered (rule-based only).")
    rule_index: int | None = Field(default=None, description="Its position in the detector's rules.")
    measured: float | None = Field(default=None, description="What the rule measured, in the rule's unit.")
    rules_ms: float | None = Field(default=None, description="Time the rule stage took.")


class AnomalySummary(WireModel):
    """Extra fields of an anomaly detector's answer. The SDK 1.3.1 keeps unknown
    image-query properties (its generated model allows additional properties) and its
    pydantic ``ImageQuery`` ignores them, so they never break a client."""

    anomaly_score: float
    severity: str


class ImageQuery(WireModel):
    metadata: dict[str, Any] | None = None
    id: str
    type: Literal["image_query"] = "image_query"
    created_at: datetime
    query: str
    detector_id: str
    result_type: ResultType
    result: Result | None = None
    patience_time: float
    confidence_threshold: float
    rois: list[ROI] | None = None
    text: str | None = None
    done_processing: bool = False
    anomaly: AnomalySummary | None = None


class EdgeImageQuery(ImageQuery):
    """An answer the edge gave itself: the image query plus the stage that answered."""

    pipeline: PipelineReport | None = None


class Page(WireModel, Generic[T]):
    """DRF-style page, as the SDK's ``Paginated*List`` models read it."""

    count: int
    next: str | None = None
    previous: str | None = None
    results: list[T]


# --- detectors ----------------------------------------------------------------------


class MultiClassModeConfiguration(StrictRequest):
    class_names: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=100)]], Field(min_length=2, max_length=MAX_CLASSES)
    ]
    num_classes: int | None = None


class CountModeConfiguration(StrictRequest):
    class_name: Annotated[str, Field(min_length=1, max_length=100)]
    max_count: Annotated[int, Field(ge=1, le=MAX_OBJECTS_LIMIT)] | None = None  # None: DEFAULT_MAX_OBJECTS


class BoundingBoxModeConfiguration(StrictRequest):
    class_name: Annotated[str, Field(min_length=1, max_length=100)]
    max_num_bboxes: Annotated[int, Field(ge=1, le=MAX_OBJECTS_LIMIT)] | None = None  # None: DEFAULT_MAX_OBJECTS


def max_objects(mode: str, mode_configuration: dict[str, Any] | None) -> int:
    """The most objects a COUNT / BOUNDING_BOX detector answers (its max_count or max_num_bboxes)."""
    config = mode_configuration or {}
    key = "max_count" if mode == DetectorMode.COUNT.value else "max_num_bboxes"
    return int(config.get(key) or DEFAULT_MAX_OBJECTS)


class Detector(WireModel):
    id: str
    type: Literal["detector"] = "detector"
    created_at: datetime
    name: str
    query: str
    group_name: str
    confidence_threshold: float = 0.9
    patience_time: float = 30.0
    metadata: dict[str, Any] | None = None
    mode: DetectorMode = DetectorMode.BINARY
    mode_configuration: dict[str, Any] | None = None
    status: DetectorStatus | None = DetectorStatus.ON
    escalation_type: EscalationType | None = EscalationType.STANDARD


class DetectorCreate(StrictRequest):
    """``DetectorCreationInputRequest``: the body of ``POST /v1/detectors``."""

    name: Annotated[str, Field(min_length=1, max_length=MAX_DETECTOR_NAME)]
    query: Annotated[str, Field(min_length=1, max_length=MAX_DETECTOR_QUERY)]
    group_name: Annotated[str, Field(min_length=1, max_length=MAX_GROUP_NAME)] | None = None
    confidence_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.9
    patience_time: Annotated[float, Field(ge=0.0, le=3600.0)] = 30.0
    pipeline_config: Annotated[str, Field(max_length=100)] | None = None
    edge_pipeline_config: Annotated[str, Field(max_length=100)] | None = None
    metadata: Annotated[str, Field(min_length=1, max_length=1362)] | None = None
    mode: DetectorMode = DetectorMode.BINARY
    mode_configuration: dict[str, Any] | None = None
    priming_group_id: Annotated[str, Field(min_length=1, max_length=44)] | None = None


class DetectorPatch(StrictRequest):
    """``PatchedDetectorRequest``: the body of ``PATCH /v1/detectors/{id}``."""

    name: Annotated[str, Field(min_length=1, max_length=MAX_DETECTOR_NAME)] | None = None
    confidence_threshold: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    patience_time: Annotated[float, Field(ge=0.0, le=3600.0)] | None = None
    status: DetectorStatus | None = None
    escalation_type: EscalationType | None = None


class DetectorGroup(WireModel):
    id: str
    name: str


class DetectorGroupCreate(StrictRequest):
    name: Annotated[str, Field(min_length=1, max_length=MAX_GROUP_NAME)]


# --- labels -------------------------------------------------------------------------


class LabelCreate(StrictRequest):
    """``LabelValueRequest``: the body of ``POST /v1/labels`` as the SDK sends it."""

    label: Annotated[str, Field(min_length=1, max_length=100)]
    image_query_id: Annotated[str, Field(min_length=1, max_length=100)]
    rois: list[ROIRequest] | None = None


class LabelValue(WireModel):
    confidence: float | None = 1.0
    class_name: str | None
    rois: list[ROI] | None = None
    annotations_requested: list[str] = Field(default_factory=list)
    created_at: datetime
    detector_id: int | None = None
    source: str = "USER"
    text: str | None = None


# --- identity -----------------------------------------------------------------------


class Group(WireModel):
    id: int
    name: str


class Me(WireModel):
    email: str
    username: str
    group: Group
    is_superuser: bool
    # IntelliOptics extras (SDK 1.3.1 ignores them): the edge authorises callers by them.
    role: Role | None = None
    account_id: int | None = None


class ApiToken(WireModel):
    name: str
    raw_key_snippet: str
    created_at: datetime
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    # Null tells the SDK to use the token as-is (no rotation).
    token_ttl: int | None = None


# --- edge <-> cloud -----------------------------------------------------------------


class EdgeModelInfo(WireModel):
    """Answer of ``GET /edge-api/v1/fetch-model-urls/{detector_id}``."""

    model_binary_id: str | None = None
    model_binary_url: str | None = None
    model_binary_sha256: str | None = None
    oodd_model_binary_id: str | None = None
    oodd_model_binary_url: str | None = None
    oodd_model_binary_sha256: str | None = None
    pipeline_config: Any = None
    oodd_pipeline_config: Any = None
    predictor_metadata: Any = None
    oodd_predictor_metadata: Any = None
    minimal_compatible: bool = False


# --- inference service --------------------------------------------------------------


class InferenceTimings(WireModel):
    decode_ms: float
    preprocess_ms: float
    model_ms: float
    total_ms: float


class AnomalyOutput(WireModel):
    """What an anomaly model adds to its BINARY answer (see intellioptics_common.anomaly)."""

    anomaly_score: float = Field(description="Normalised anomaly score in [0, 1]; 0.5 is the threshold.")
    severity: str = Field(description="Normal, Potential, Moderate or Critical.")
    rois: list[ROI] = Field(default_factory=list, description="Boxes around the anomalous regions.")
    map: list[list[float]] | None = Field(
        default=None, description="The anomaly map on a coarse grid (rows of values in [0, 1])."
    )


class DetectionOutput(WireModel):
    """What a COUNT or BOUNDING_BOX model adds to its answer (see intellioptics_common.detection)."""

    count: int = Field(description="Boxes at or above the detector's box threshold, capped at its maximum.")
    greater_than_max: bool = Field(description="More boxes were found than the detector's maximum.")
    rois: list[ROI] = Field(default_factory=list, description="The boxes, highest score first.")


class InferenceResult(WireModel):
    """Answer of the edge inference service's ``POST /infer``."""

    detector_id: str
    mode: DetectorMode
    label: str
    confidence: float = Field(description="Primary confidence adjusted by the OODD score.")
    raw_primary_confidence: float
    oodd_in_domain_score: float | None = Field(
        default=None, description="In-domain probability from the OODD model; None when no OODD model is loaded."
    )
    probabilities: dict[str, float]
    primary_model_version: int
    primary_model_id: str
    oodd_model_version: int | None = None
    oodd_model_id: str | None = None
    timings: InferenceTimings
    anomaly: AnomalyOutput | None = Field(
        default=None, description="Set when the detector's model is an anomaly model."
    )
    detection: DetectionOutput | None = Field(
        default=None, description="Set when the detector's model is a COUNT or BOUNDING_BOX model."
    )


class DetectorAnswer(WireModel):
    """One detector's part of ``POST /infer/multi``: its answer, or why there is none."""

    detector_id: str
    status_code: int = Field(description="200 with ``result``; otherwise the status ``POST /infer`` would give.")
    result: InferenceResult | None = None
    error: ErrorBody | None = None


class MultiInferenceResult(WireModel):
    """Answer of ``POST /infer/multi``: one image, several detectors, in the order asked."""

    results: list[DetectorAnswer]
    decode_ms: float = Field(description="The one decode of the image (per draft size, normally one).")
    backbone_runs: int = Field(description="Backbone passes run for all the detectors together.")


class BatchItem(WireModel):
    """One image of a batch: the answer, or why there is none."""

    filename: str
    label: str | None = None
    confidence: float | None = None
    anomaly_score: float | None = None
    severity: str | None = None
    rois: list[ROI] = Field(default_factory=list)
    ms: float | None = None
    error: str | None = None


class BatchSummary(WireModel):
    total: int
    answered: int
    flagged: int = Field(description="Images answered YES (anomalous).")
    per_severity: dict[str, int]
    mean_ms: float | None
    errors: int


class BatchResult(WireModel):
    detector_id: str
    results: list[BatchItem]
    summary: BatchSummary


# --- errors -------------------------------------------------------------------------


class ErrorBody(WireModel):
    """The one JSON error body of every IntelliOptics service."""

    detail: str = Field(description="What went wrong and what to do about it.")
    code: str = Field(description="Stable machine-readable error code.")
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = Field(default=None, description="Per-field validation errors, if any.")


# --- edge escalations (edge -> cloud, in ImageQuery metadata) ------------------------


class EscalationReason(str, Enum):
    """Why an edge sent a query to the cloud (``metadata.escalation_reason``)."""

    LOW_CONFIDENCE = "low_confidence"
    OUT_OF_DOMAIN = "out_of_domain"
    AUDIT = "audit"
    HUMAN_REVIEW_ALWAYS = "human_review_always"
    NO_MODEL = "no_model"
    UNUSABLE_IMAGE = "unusable_image"  # a rule found the image too dark, overexposed or blurred


class EdgeResultReport(WireModel):
    """The edge's own answer, carried in ``metadata.edge_result`` of an escalated query."""

    label: str
    confidence: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    raw_primary_confidence: float | None = None
    oodd_in_domain_score: float | None = None
    primary_model_version: int | None = None
    oodd_model_version: int | None = None
    edge_id: str | None = None
    probabilities: dict[str, float] | None = Field(
        default=None, description="The edge model's score per class (none for boxes and counts)."
    )


class EdgeEscalationMetadata(WireModel):
    """Reserved keys of ``ImageQuery.metadata`` on an escalation from an edge; other keys
    (the caller's own metadata) pass through untouched."""

    edge_result: EdgeResultReport | None = None
    escalation_reason: EscalationReason | None = None
    is_from_edge: bool | None = None
