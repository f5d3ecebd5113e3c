"""Image queries: submit (answer from the active model or send to review), get, list, image.

Escalations from edges arrive here too, with ``image_query_id`` set: a retry with the
same id returns the stored query and never makes a second one. An edge's outbox sends
them in batches (:func:`submit_batch`): the same checks per query, one commit per batch.

A query may come with its depth map (:mod:`intellioptics_common.depth`): checked as the
edge checks it, stored as it was sent beside the image (``<image key>-depth``, so
sub-millimetre ``.npy`` readings stay what they were), fed to a depth model, and read
back by :func:`get_depth`. A depth model refuses a query without depth (400
``depth_required``), except an edge's escalation, which is stored for a person to label.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from intellioptics_cloud.auth import Principal
from intellioptics_cloud.errors import DetectorOffError, ImageQueryIdTakenError, NoDepthError
from intellioptics_cloud.inference import ModelRef
from intellioptics_cloud.models import DetectorRow, ImageQueryRow, ModelVersionRow, ReviewItemRow, utcnow
from intellioptics_cloud.resources import Resources
from intellioptics_cloud.services.detectors import get_detector
from intellioptics_common.anomaly import OVERLAY_KINDS, render_overlay
from intellioptics_common.confidence import is_confident
from intellioptics_common.depth import checked_depth, colour_png, depth_media_type, encode_depth_png, read_depth
from intellioptics_common.errors import (
    DepthMapError,
    DepthRequiredError,
    ImageDecodeError,
    ImageTooLargeError,
    IntelliOpticsError,
    InvalidInputError,
    NotFoundError,
    UnsupportedMediaTypeError,
)
from intellioptics_common.ids import is_valid_id, new_id
from intellioptics_common.imaging import decode_image, sniff_format
from intellioptics_common.model_package import PipelineConfig, sha256_bytes
from intellioptics_common.results import UNCLEAR, result_payload
from intellioptics_common.schemas import RESULT_TYPE_BY_MODE, DetectorMode, EdgeEscalationMetadata

logger = logging.getLogger(__name__)

_CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp"}


@dataclass(frozen=True)
class SubmitRequest:
    detector_id: str
    image: bytes
    content_type: str | None
    confidence_threshold: float | None = None
    patience_time: float | None = None
    human_review: str | None = None
    metadata: dict[str, Any] | None = None
    inspection_id: str | None = None
    image_query_id: str | None = None
    depth: bytes | None = None  # the depth map as sent: 16-bit PNG or float32 .npy, mm


@dataclass(frozen=True)
class Submitted:
    row: ImageQueryRow
    created: bool  # False when an idempotent retry returned the stored query


@dataclass(frozen=True)
class Answer:
    result: dict[str, Any] | None
    confident: bool
    model_version: int | None
    reason: str | None  # why it goes to review, or None
    rois: list[dict[str, Any]] | None = None  # a detection model's boxes (a reviewer's pre-labels)
    scores: dict[str, Any] | None = None  # the model's per-class scores and in-domain score, for reviewers


def get_image_query(session: Session, principal: Principal, image_query_id: str) -> ImageQueryRow:
    row = session.get(ImageQueryRow, image_query_id)
    if row is None or row.account_id != principal.account_id:
        raise NotFoundError(f"Image query {image_query_id} not found.")
    return row


def list_image_queries(
    session: Session, principal: Principal, page: int, page_size: int, detector_id: str | None
) -> tuple[list[ImageQueryRow], int]:
    where = [ImageQueryRow.account_id == principal.account_id]
    if detector_id:
        where.append(ImageQueryRow.detector_id == detector_id)
    count = session.scalar(select(func.count()).select_from(ImageQueryRow).where(*where)) or 0
    rows = session.scalars(
        select(ImageQueryRow)
        .where(*where)
        .order_by(ImageQueryRow.created_at.desc(), ImageQueryRow.id.desc())
        .offset((page - 1) * page_size)
        .limit(page_size)
    )
    return list(rows), count


def active_model_refs(
    session: Session, detector: DetectorRow
) -> tuple[ModelVersionRow, ModelRef, ModelRef | None] | None:
    if detector.active_model_version is None:
        return None
    model = session.scalar(
        select(ModelVersionRow).where(
            ModelVersionRow.detector_id == detector.id, ModelVersionRow.version == detector.active_model_version
        )
    )
    if model is None:
        return None
    primary = ModelRef(
        model.primary_blob_key,
        model.primary_sha256,
        PipelineConfig.from_dict(model.primary_pipeline_config),
        detector.id,
        model.version,
    )
    oodd = None
    if model.oodd_blob_key and model.oodd_sha256 and model.oodd_pipeline_config:
        oodd_config = PipelineConfig.from_dict(model.oodd_pipeline_config)
        oodd = ModelRef(model.oodd_blob_key, model.oodd_sha256, oodd_config, detector.id, model.version)
    return model, primary, oodd


def _placeholder(mode: str) -> dict[str, Any]:
    # What the SDK reads as "not answered yet": it keeps polling while source is STILL_PROCESSING.
    return result_payload(mode, UNCLEAR, None, "STILL_PROCESSING", False)


def _edge_result(mode: str, escalation: EdgeEscalationMetadata) -> dict[str, Any] | None:
    report = escalation.edge_result
    if report is None:
        return None
    return result_payload(mode, report.label, report.confidence, "EDGE", True)


def _answer(
    resources: Resources,
    session: Session,
    detector: DetectorRow,
    image: bytes,
    threshold: float,
    depth_mm: np.ndarray | None,
    from_edge: bool,
) -> Answer:
    refs = active_model_refs(session, detector)
    if refs is None:
        return Answer(None, False, None, "no_model")
    model, primary, oodd = refs
    if primary.pipeline.depth is not None and depth_mm is None:
        if from_edge:  # an escalation is never lost: a person answers it
            return Answer(None, False, None, "no_depth")
        raise DepthRequiredError(
            f"The model of detector {detector.id} was trained with depth and needs the depth map of every image: "
            "send multipart/form-data with an `image` part and a `depth` part (a 16-bit PNG or a float32 .npy, "
            "in mm)."
        )
    try:
        answered = resources.runner.answer(primary, oodd, image, depth_mm)
    except (ImageDecodeError, ImageTooLargeError, DepthMapError):
        raise
    except Exception:  # a broken model must not lose the query: a person answers instead
        logger.exception("active model %s v%s failed on %s", detector.id, model.version, detector.name)
        return Answer(None, False, None, "model_error")
    prediction, found = answered.prediction, answered.detection
    rois = None if found is None else found.rois()
    if answered.anomaly is not None:  # where the anomaly is: the answer's boxes, as on the edge
        rois = [box.to_wire() for box in answered.anomaly.boxes] or None
    label = prediction.label
    if detector.mode == DetectorMode.BINARY.value:
        label = label.upper()
    result = result_payload(
        detector.mode,
        label,
        round(float(prediction.confidence), 6),
        "ALGORITHM",
        False,
        count=None if found is None else found.count,
        greater_than_max=found is not None and found.greater_than_max,
    )
    confident = is_confident(prediction.confidence, threshold)
    reason = None
    if not confident:
        reason = "out_of_domain" if prediction.p_out is not None and prediction.p_out > 0.5 else "low_confidence"
    scores: dict[str, Any] = {  # stored as the query's model_scores (JSON)
        "probabilities": {name: round(float(p), 6) for name, p in answered.probabilities.items()},
        "in_domain": None if answered.in_domain_score is None else round(float(answered.in_domain_score), 6),
    }
    if answered.anomaly is not None:  # the score and severity the answer carries, as on the edge
        scores["anomaly"] = {
            "anomaly_score": round(float(answered.anomaly.anomaly_score), 6),
            "severity": answered.anomaly.severity.value,
        }
    return Answer(result, confident, model.version, reason, rois, scores)


def _existing(session: Session, principal: Principal, image_query_id: str) -> ImageQueryRow | None:
    return _owned(session.get(ImageQueryRow, image_query_id), principal, image_query_id)


def _owned(row: ImageQueryRow | None, principal: Principal, image_query_id: str) -> ImageQueryRow | None:
    if row is None:
        return None
    if row.account_id != principal.account_id:
        raise ImageQueryIdTakenError(f"image_query_id {image_query_id} is already in use; send a new id.")
    return row


@dataclass(frozen=True)
class _Staged:
    """A new query checked and built, its image in the blob store, its rows not yet added."""

    row: ImageQueryRow
    review: ReviewItemRow | None
    blob_key: str
    depth_key: str | None = None

    def delete_blobs(self, resources: Resources) -> None:
        resources.blobs.delete(self.blob_key)
        if self.depth_key is not None:
            resources.blobs.delete(self.depth_key)


def _stage(
    resources: Resources,
    session: Session,
    principal: Principal,
    request: SubmitRequest,
    stored: dict[str, ImageQueryRow] | None = None,
) -> _Staged | Submitted:
    """Everything of a submit before the database write; a stored id is returned as it is.
    ``stored``: the rows of the ids a batch asked for, looked up at once (else one by one)."""
    if request.image_query_id is not None:
        if not is_valid_id(request.image_query_id, "iq"):
            raise InvalidInputError("image_query_id must look like iq_<letters and digits>.")
        if stored is None:
            existing = _existing(session, principal, request.image_query_id)
        else:
            existing = _owned(stored.get(request.image_query_id), principal, request.image_query_id)
        if existing is not None:
            return Submitted(existing, created=False)
    detector = get_detector(session, principal, request.detector_id)
    if detector.status == "OFF":
        raise DetectorOffError(f"Detector {detector.id} is OFF; turn it ON to submit image queries.")
    if not (request.content_type or "").lower().startswith("image/"):
        raise UnsupportedMediaTypeError("Send the raw image bytes with a Content-Type of image/jpeg, image/png, ...")
    # Refuses non-images (400) and oversize ones (413); only validates, so a small draft
    # keeps a 40-megapixel image from costing full-size copies here.
    decoded = decode_image(request.image, resources.limits, draft_size=(64, 64))
    fmt = sniff_format(request.image) or "JPEG"
    # The edge's rules: readable, finite, with readings, the image's aspect ratio (400 otherwise).
    depth_mm = None if request.depth is None else checked_depth(request.depth, decoded.original_size)

    metadata = request.metadata
    try:
        escalation = EdgeEscalationMetadata.model_validate(metadata or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInputError(f"metadata.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None

    threshold = detector.confidence_threshold if request.confidence_threshold is None else request.confidence_threshold
    result_type = RESULT_TYPE_BY_MODE[DetectorMode(detector.mode)].value
    from_edge = escalation.edge_result is not None or bool(escalation.is_from_edge)
    answer = _answer(resources, session, detector, request.image, threshold, depth_mm, from_edge)

    human_review = request.human_review or "DEFAULT"
    # use_enum_values: the parsed reason is its plain string value.
    edge_reason = str(escalation.escalation_reason) if escalation.escalation_reason is not None else None
    reason = answer.reason
    if edge_reason is not None and not answer.confident:
        reason = edge_reason
    if human_review == "ALWAYS":
        reason = "human_review_always"
    elif edge_reason == "audit":
        reason = "audit"
    needs_review = reason is not None and human_review != "NEVER" and detector.escalation_type != "NO_HUMAN_LABELING"
    result = answer.result or _edge_result(detector.mode, escalation) or _placeholder(detector.mode)

    iq_id = request.image_query_id or new_id("iq")
    blob_key = f"images/{principal.account_id}/{detector.id}/{iq_id}-{secrets.token_hex(4)}"
    depth_key = None if request.depth is None else f"{blob_key}-depth"
    row = ImageQueryRow(
        id=iq_id,
        account_id=principal.account_id,
        detector_id=detector.id,
        created_at=utcnow(),
        query=detector.query,
        result_type=result_type,
        result=result,
        confidence_threshold=threshold,
        patience_time=detector.patience_time if request.patience_time is None else request.patience_time,
        metadata_json=metadata,
        rois=answer.rois,
        done_processing=answer.confident and not needs_review,
        human_review=human_review,
        inspection_id=request.inspection_id,
        image_blob_key=blob_key,
        image_sha256=sha256_bytes(request.image),
        image_content_type=_CONTENT_TYPES[fmt],
        depth_blob_key=depth_key,
        from_edge=from_edge,
        escalation_reason=edge_reason,
        edge_result=escalation.edge_result.model_dump() if escalation.edge_result else None,
        model_version=answer.model_version,
        model_scores=answer.scores,
    )
    review = None
    if needs_review:
        review = ReviewItemRow(
            id=new_id("rvw"),
            account_id=principal.account_id,
            detector_id=detector.id,
            image_query_id=iq_id,
            reason=reason,
            status="pending",
            sort_at=row.created_at,
            created_at=row.created_at,
        )
    resources.blobs.put(blob_key, request.image, _CONTENT_TYPES[fmt])
    if request.depth is not None and depth_key is not None:
        try:
            resources.blobs.put(depth_key, request.depth, depth_media_type(request.depth))
        except BaseException:
            resources.blobs.delete(blob_key)
            raise
    return _Staged(row, review, blob_key, depth_key)


def _add(session: Session, staged: _Staged) -> None:
    session.add(staged.row)
    if staged.review is not None:
        session.flush()  # the review item's foreign key needs the query's row first
        session.add(staged.review)


def submit(resources: Resources, session: Session, principal: Principal, request: SubmitRequest) -> Submitted:
    staged = _stage(resources, session, principal, request)
    if isinstance(staged, Submitted):
        return staged
    try:
        _add(session, staged)
        session.commit()
    except IntegrityError:
        # Two retries of one escalation raced: the other one won; answer with its query.
        session.rollback()
        staged.delete_blobs(resources)
        if request.image_query_id is not None:
            existing = _existing(session, principal, request.image_query_id)
            if existing is not None:
                return Submitted(existing, created=False)
        raise
    except BaseException:
        session.rollback()
        staged.delete_blobs(resources)
        raise
    return Submitted(staged.row, created=True)


def submit_batch(
    resources: Resources, session: Session, principal: Principal, requests: list[SubmitRequest]
) -> list[Submitted | IntelliOpticsError]:
    """Many submits (an edge's outbox) in one transaction: one commit instead of one per
    query is most of the gain. Each item succeeds or fails on its own (its domain error
    is its result); a repeated id, in the batch or stored, is the stored query. When the
    commit fails (another request stored one of the ids meanwhile) every item is done
    again one by one, which settles such races as ``submit`` does."""
    results: list[Submitted | IntelliOpticsError] = []
    staged_by_id: dict[str, _Staged] = {}
    staged_all: list[_Staged] = []
    ids = [r.image_query_id for r in requests if r.image_query_id]
    stored = {row.id: row for row in session.scalars(select(ImageQueryRow).where(ImageQueryRow.id.in_(ids)))}
    # Held here, so that each get_detector finds it in the session (its identity map keeps weak references).
    detectors = list(session.scalars(select(DetectorRow).where(DetectorRow.id.in_({r.detector_id for r in requests}))))
    try:
        # Rows are written at the end, queries first (the review items refer to them):
        # no flush per query.
        with session.no_autoflush:
            for request in requests:
                earlier = staged_by_id.get(request.image_query_id or "")
                if earlier is not None:
                    results.append(Submitted(earlier.row, created=False))
                    continue
                try:
                    staged = _stage(resources, session, principal, request, stored)
                except IntelliOpticsError as exc:
                    results.append(exc)
                    continue
                if isinstance(staged, Submitted):
                    results.append(staged)
                    continue
                staged_all.append(staged)
                staged_by_id[staged.row.id] = staged
                session.add(staged.row)
                results.append(Submitted(staged.row, created=True))
        session.flush()
        session.add_all([staged.review for staged in staged_all if staged.review is not None])
        session.commit()
        del detectors
    except IntegrityError:
        session.rollback()
        for staged in staged_all:
            staged.delete_blobs(resources)
        return [_one(resources, session, principal, request) for request in requests]
    except BaseException:
        session.rollback()
        for staged in staged_all:
            staged.delete_blobs(resources)
        raise
    return results


def _one(
    resources: Resources, session: Session, principal: Principal, request: SubmitRequest
) -> Submitted | IntelliOpticsError:
    try:
        return submit(resources, session, principal, request)
    except IntelliOpticsError as exc:
        return exc


def get_overlay(resources: Resources, session: Session, principal: Principal, image_query_id: str, kind: str) -> bytes:
    """PNG of the active anomaly model's heat map, mask or boxes over the query's image
    (the model runs again: the map is not stored)."""
    if kind not in OVERLAY_KINDS:
        raise InvalidInputError(f"kind must be one of {', '.join(OVERLAY_KINDS)}, not {kind!r}.")
    row = get_image_query(session, principal, image_query_id)
    detector = get_detector(session, principal, row.detector_id)
    refs = active_model_refs(session, detector)
    if refs is None or refs[1].pipeline.model_kind != "anomaly":
        raise InvalidInputError(
            f"Detector {detector.id} has no active anomaly model; overlays exist only for anomaly models."
        )
    _, primary, oodd = refs
    image = resources.blobs.get(row.image_blob_key)
    result = resources.runner.anomaly(primary, oodd, image)
    rgb = decode_image(image, resources.limits).rgb
    return render_overlay(rgb, result.anomaly_map, result.boxes, kind, primary.pipeline.anomaly.threshold)  # type: ignore[union-attr]


def get_image(resources: Resources, session: Session, principal: Principal, image_query_id: str) -> tuple[bytes, str]:
    row = get_image_query(session, principal, image_query_id)
    return resources.blobs.get(row.image_blob_key), row.image_content_type


DEPTH_VIEWS = ("png", "original", "colour")


def get_depth(
    resources: Resources, session: Session, principal: Principal, image_query_id: str, view: str
) -> tuple[bytes, str]:
    """The query's depth map: ``png`` a 16-bit PNG in whole mm, ``original`` the bytes as
    sent (a ``.npy`` keeps its fractions of a mm: what the worker trains on), ``colour``
    a false-colour PNG for people (:func:`~intellioptics_common.depth.colour_png`)."""
    view = "colour" if view == "color" else view
    if view not in DEPTH_VIEWS:
        raise InvalidInputError(f"view must be one of {', '.join(DEPTH_VIEWS)}, not {view!r}.")
    row = get_image_query(session, principal, image_query_id)
    if row.depth_blob_key is None:
        raise NoDepthError(
            f"Image query {image_query_id} has no depth map: it was sent without one. Send the depth with the "
            "image (multipart parts `image` and `depth`) to have it stored."
        )
    data = resources.blobs.get(row.depth_blob_key)
    media_type = depth_media_type(data)
    if view == "original" or (view == "png" and media_type == "image/png"):
        return data, media_type
    depth_mm = read_depth(data)
    return (colour_png(depth_mm) if view == "colour" else encode_depth_png(depth_mm)), "image/png"
