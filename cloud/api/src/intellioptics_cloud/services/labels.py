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
from intellioptics_common.results import (
    BOUNDING_BOX,
    BOUNDING_BOX_LABELS,
    NO_OBJECTS,
    UNCLEAR,
    count_from_label,
    result_payload,
)
from intellioptics_common.schemas import ROIRequest, max_objects

SOURCE_API = "USER"
SOURCE_REVIEW = "REVIEW"


@dataclass(frozen=True)
class LabelRequest:
    image_query_id: str
    label: str
    rois: list[ROIRequest] | None
    source: str


def normalize_label(detector: DetectorRow, label: str) -> str:
    if detector.mode == "COUNT":
        return _count_label(detector, label)
    if detector.mode == "BOUNDING_BOX":
        value = label.strip().upper()
        if value not in BOUNDING_BOX_LABELS:
            raise InvalidInputError(
                f"{label!r} is not a BOUNDING_BOX label; use one of {', '.join(BOUNDING_BOX_LABELS)} "
                "(BOUNDING_BOX with the boxes as rois)."
            )
        return value
    if detector.mode == "BINARY":
        try:
            return normalize_binary_label(label).value
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
    names = class_names(detector)
    if label not in names:
        raise InvalidInputError(f"{label!r} is not a class of this detector; use one of {', '.join(names)}.")
    return label


def _count_label(detector: DetectorRow, label: str) -> str:
    value = label.strip().upper()
    if value == UNCLEAR:
        return value
    limit = max_objects(detector.mode, detector.mode_configuration)
    count = count_from_label(value)
    if count is None:
        raise InvalidInputError(
            f"{label!r} is not a count; a COUNT label is a whole number from 0 to {limit}, or UNCLEAR."
        )
    if count > limit:
        raise InvalidInputError(
            f"The count {count} is above this detector's max_count of {limit}; count at most {limit} objects."
        )
    return str(count)


def _check_boxes(detector: DetectorRow, value: str, rois: list[dict[str, Any]] | None) -> None:
    """A label's boxes must agree with it: the number of boxes is the count, BOUNDING_BOX
    has boxes, NO_OBJECTS has none, and no label has more than the detector's maximum."""
    if detector.mode not in ("COUNT", "BOUNDING_BOX"):
        return
    n = len(rois or [])
    limit = max_objects(detector.mode, detector.mode_configuration)
    if n > limit:
        key = "max_count" if detector.mode == "COUNT" else "max_num_bboxes"
        raise InvalidInputError(f"The label has {n} boxes; this detector's {key} is {limit}. Send at most {limit}.")
    if detector.mode == "COUNT" and rois and value != UNCLEAR and int(value) != n:
        raise InvalidInputError(f"The count is {value} but {n} boxes were sent; send one box per object, or none.")
    if value == BOUNDING_BOX and n == 0:
        raise InvalidInputError("A BOUNDING_BOX label needs its boxes as rois; with no objects, label NO_OBJECTS.")
    if value == NO_OBJECTS and n:
        raise InvalidInputError(f"A NO_OBJECTS label takes no rois, but {n} were sent; label BOUNDING_BOX instead.")


def _rois(rois: list[ROIRequest] | None) -> list[dict[str, Any]] | None:
    if not rois:
        return None
    out = []
    for roi in rois:
        g = roi.geometry
        if g.right <= g.left or g.bottom <= g.top:
            raise InvalidInputError(
                "An ROI must have right > left and bottom > top (image fractions 0..1); "
                f"got left={g.left}, top={g.top}, right={g.right}, bottom={g.bottom}."
            )
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
    _check_boxes(detector, value, rois)
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
    iq.result = result_payload(detector.mode, value, 1.0, "USER", False)
    if rois is not None or detector.mode in ("COUNT", "BOUNDING_BOX"):
        iq.rois = rois  # a person's boxes replace the model's, none included
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
