"""Labels: a person's answer becomes the query's result and joins the training set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from intellioptics_cloud.auth import Principal
from intellioptics_cloud.models import DetectorRow, ImageQueryRow, LabelRow, ReviewItemRow, utcnow
from intellioptics_cloud.services import triggers
from intellioptics_cloud.services.detectors import get_detector
from intellioptics_cloud.services.wire import class_names
from intellioptics_cloud.workqueue import WorkQueue
from intellioptics_common.confidence import normalize_binary_label
from intellioptics_common.errors import InvalidInputError
from intellioptics_common.ids import new_id
from intellioptics_common.schemas import ROIRequest

SOURCE_API = "USER"
SOURCE_REVIEW = "REVIEW"


@dataclass(frozen=True)
class LabelRequest:
    image_query_id: str
    label: str
    rois: list[ROIRequest] | None
    source: str


def normalize_label(detector: DetectorRow, label: str) -> str:
    if detector.mode == "BINARY":
        try:
            return normalize_binary_label(label).value
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
    names = class_names(detector)
    if label not in names:
        raise InvalidInputError(f"{label!r} is not a class of this detector; use one of {', '.join(names)}.")
    return label


def _rois(rois: list[ROIRequest] | None) -> list[dict[str, Any]] | None:
    if not rois:
        return None
    out = []
    for roi in rois:
        g = roi.geometry
        if g.right < g.left or g.bottom < g.top:
            raise InvalidInputError("An ROI's right/bottom must not be less than its left/top.")
        geometry = {"left": g.left, "top": g.top, "right": g.right, "bottom": g.bottom}
        geometry.update(x=(g.left + g.right) / 2, y=(g.top + g.bottom) / 2)
        out.append({"label": roi.label, "score": 1.0 if roi.score is None else roi.score, "geometry": geometry})
    return out


def apply_label(
    session: Session, principal: Principal, iq: ImageQueryRow, request: LabelRequest, queue: WorkQueue
) -> LabelRow:
    """Record the label and make it the query's answer. The caller commits."""
    detector = get_detector(session, principal, iq.detector_id)
    value = normalize_label(detector, request.label)
    rois = _rois(request.rois)
    now = utcnow()
    label = LabelRow(
        id=new_id("lbl"),
        account_id=principal.account_id,
        detector_id=detector.id,
        image_query_id=iq.id,
        label=value,
        rois=rois,
        source=request.source,
        user_id=principal.user_id,
        previous_result={"result": iq.result, "rois": iq.rois, "done_processing": iq.done_processing},
        created_at=now,
    )
    session.add(label)
    iq.result = {
        "result_type": iq.result_type,
        "label": value,
        "confidence": 1.0,
        "source": "USER",
        "from_edge": False,
    }
    if rois is not None:
        iq.rois = rois
    iq.done_processing = True
    item = session.scalar(select(ReviewItemRow).where(ReviewItemRow.image_query_id == iq.id))
    if item is not None:
        item.status = "labeled"
        item.label = value
        item.label_id = label.id
        item.labeled_by = principal.user_id
        item.labeled_at = now
        item.claim_expires_at = None
    session.flush()
    _maybe_retrain(session, detector, queue)
    return label


def _maybe_retrain(session: Session, detector: DetectorRow, queue: WorkQueue) -> None:
    triggers.after_label(session, queue, detector)
