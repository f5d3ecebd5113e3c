"""Why a query got its answer: what ``GET .../image-queries/{id}/explanation`` returns.

Written once, from the model's raw outputs and the decision, by whichever part answered
(the edge for its answers). Nearest labeled examples need a bank of labeled embeddings
with their image query ids, which no model package carries yet: the field is then
``None`` and ``nearest_labeled_examples_note`` says so, rather than ids made up.
"""

from __future__ import annotations

from pydantic import Field

from intellioptics_common.schemas import EscalationReason, InferenceResult, WireModel

NO_NEAREST_EXAMPLES = (
    "not available: the model package keeps no labeled embeddings with image query ids, "
    "so the nearest labeled examples cannot be named"
)
# The model kind of every classifier package (binary or multi-class); other kinds
# (anomaly, boxes) bring their own name with their post-processor.
CLASSIFIER = "classifier"


class ModelRef(WireModel):
    kind: str = Field(description="the model kind: classifier (binary / multi-class), anomaly or detection")
    mode: str
    primary_version: int
    primary_model_id: str
    oodd_version: int | None = None
    oodd_model_id: str | None = None


class Explanation(WireModel):
    image_query_id: str
    detector_id: str
    answered_by: str = Field(description="edge | cloud")
    model: ModelRef
    label: str
    confidence: float = Field(description="the primary confidence adjusted by the OODD score: what T is compared with")
    raw_primary_confidence: float
    oodd_in_domain_score: float | None = Field(description="None when the detector has no OODD model")
    confidence_threshold: float
    escalated: bool
    escalation_reason: EscalationReason | None = None
    why: str = Field(description="the decision in one sentence")
    held_back: str | None = Field(
        default=None, description="why an unsure answer was not escalated: near_duplicate or escalation_budget"
    )
    nearest_labeled_examples: list[str] | None = None
    nearest_labeled_examples_note: str | None = None


def explain_edge_answer(
    *,
    image_query_id: str,
    result: InferenceResult,
    threshold: float,
    escalated: bool,
    reason: EscalationReason | None,
    held_back: tuple[str, str] | None = None,
) -> Explanation:
    """``held_back``: (reason, detail) when the edge did not escalate an unsure answer."""
    why = _why(result, threshold, escalated, reason)
    if held_back is not None:
        why = f"{_compared(result, threshold)}: answered at the edge, not escalated ({held_back[0]}: {held_back[1]})"
    return Explanation(
        image_query_id=image_query_id,
        detector_id=result.detector_id,
        answered_by="edge",
        model=ModelRef(
            kind="anomaly"
            if result.anomaly is not None
            else "detection"
            if result.detection is not None
            else CLASSIFIER,
            mode=str(getattr(result.mode, "value", result.mode)),
            primary_version=result.primary_model_version,
            primary_model_id=result.primary_model_id,
            oodd_version=result.oodd_model_version,
            oodd_model_id=result.oodd_model_id,
        ),
        label=result.label,
        confidence=result.confidence,
        raw_primary_confidence=result.raw_primary_confidence,
        oodd_in_domain_score=result.oodd_in_domain_score,
        confidence_threshold=threshold,
        escalated=escalated,
        escalation_reason=reason if escalated or reason is EscalationReason.AUDIT else None,
        why=why,
        held_back=None if held_back is None else held_back[0],
        nearest_labeled_examples=None,
        nearest_labeled_examples_note=NO_NEAREST_EXAMPLES,
    )


def _compared(result: InferenceResult, threshold: float) -> str:
    return (
        f"confidence {result.confidence:.3f} {'>=' if result.confidence >= threshold else '<'} threshold {threshold:g}"
    )


def _why(result: InferenceResult, threshold: float, escalated: bool, reason: EscalationReason | None) -> str:
    compared = _compared(result, threshold)
    domain = result.oodd_in_domain_score
    if reason is EscalationReason.OUT_OF_DOMAIN:
        return f"{compared}: the image is unlike the model's training images (in-domain {domain:.3f}); escalated"
    if reason is EscalationReason.HUMAN_REVIEW_ALWAYS:
        return f"{compared}; human_review=ALWAYS: escalated whatever the confidence"
    if reason is EscalationReason.AUDIT:
        return f"{compared}: answered at the edge, and sent to the cloud as a random audit"
    if escalated:
        return f"{compared}: escalated for a human label"
    if result.confidence >= threshold:
        return f"{compared}: answered at the edge"
    return f"{compared}: answered at the edge without escalating (edge config returns edge predictions, escalation rate-limited or disabled)"
