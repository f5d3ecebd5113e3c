"""Detectors and detector groups, always scoped to the caller's account."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from intellioptics_cloud.auth import Principal
from intellioptics_cloud.blobs import BlobStore
from intellioptics_cloud.errors import DuplicateNameError, UnsupportedModeError
from intellioptics_cloud.models import DetectorGroupRow, DetectorRow, ImageQueryRow, ModelVersionRow, utcnow
from intellioptics_cloud.schemas import DetectorSettings
from intellioptics_cloud.services.wire import decode_metadata
from intellioptics_common.errors import InvalidInputError, NotFoundError
from intellioptics_common.ids import new_id
from intellioptics_common.schemas import (
    DEFAULT_MAX_OBJECTS,
    SUPPORTED_MODES,
    BoundingBoxModeConfiguration,
    CountModeConfiguration,
    DetectorCreate,
    DetectorMode,
    DetectorPatch,
    MultiClassModeConfiguration,
)

ConfigT = TypeVar("ConfigT", bound=BaseModel)
DEFAULT_GROUP = "Default"
# Stored on each new detector, so that null in its settings can mean "no automatic jobs".
DEFAULT_RETRAIN_EVERY_N_LABELS = 10


@dataclass(frozen=True)
class DetectorPage:
    rows: list[DetectorRow]
    count: int


def get_detector(session: Session, principal: Principal, detector_id: str) -> DetectorRow:
    row = session.get(DetectorRow, detector_id)
    if row is None or row.account_id != principal.account_id:
        raise NotFoundError(f"Detector {detector_id} not found.")
    return row


def _mode_configuration(body: DetectorCreate) -> dict | None:
    mode = DetectorMode(body.mode)
    if mode not in SUPPORTED_MODES:
        supported = ", ".join(m.value for m in SUPPORTED_MODES)
        raise UnsupportedModeError(f"Detector mode {mode.value} is not supported yet; use one of {supported}.")
    if mode is DetectorMode.BINARY:
        if body.mode_configuration:
            raise InvalidInputError("BINARY detectors take no mode_configuration.")
        return None
    if mode is DetectorMode.COUNT:
        count = _validated(CountModeConfiguration, body.mode_configuration)
        return {"class_name": count.class_name, "max_count": count.max_count or DEFAULT_MAX_OBJECTS}
    if mode is DetectorMode.BOUNDING_BOX:
        boxes = _validated(BoundingBoxModeConfiguration, body.mode_configuration)
        return {"class_name": boxes.class_name, "max_num_bboxes": boxes.max_num_bboxes or DEFAULT_MAX_OBJECTS}
    config = _validated(MultiClassModeConfiguration, body.mode_configuration)
    if len(set(config.class_names)) != len(config.class_names):
        raise InvalidInputError("mode_configuration.class_names must be unique.")
    if config.num_classes is not None and config.num_classes != len(config.class_names):
        raise InvalidInputError("mode_configuration.num_classes must equal the number of class_names.")
    return {"class_names": list(config.class_names), "num_classes": len(config.class_names)}


def _validated(model: type[ConfigT], data: dict | None) -> ConfigT:
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "mode_configuration"
        raise InvalidInputError(f"mode_configuration.{where}: {first['msg']}") from None


def _ensure_group(session: Session, account_id: int, name: str) -> None:
    exists = session.scalar(
        select(DetectorGroupRow.id).where(DetectorGroupRow.account_id == account_id, DetectorGroupRow.name == name)
    )
    if exists is None:
        session.add(DetectorGroupRow(id=new_id("dgp"), account_id=account_id, name=name, created_at=utcnow()))


def create_detector(session: Session, principal: Principal, body: DetectorCreate) -> DetectorRow:
    mode_configuration = _mode_configuration(body)
    group = body.group_name or DEFAULT_GROUP
    row = DetectorRow(
        id=new_id("det"),
        account_id=principal.account_id,
        name=body.name,
        query=body.query,
        group_name=group,
        confidence_threshold=body.confidence_threshold,
        patience_time=body.patience_time,
        metadata_json=decode_metadata(body.metadata),
        mode=DetectorMode(body.mode).value,
        mode_configuration=mode_configuration,
        status="ON",
        escalation_type="STANDARD",
        pipeline_config=body.pipeline_config,
        retrain_every_n_labels=DEFAULT_RETRAIN_EVERY_N_LABELS,
        promotion_policy="auto",
        created_at=utcnow(),
    )
    try:
        _ensure_group(session, principal.account_id, group)
        session.add(row)
        session.commit()
    except IntegrityError:
        session.rollback()
        raise DuplicateNameError(f"A detector named {body.name!r} already exists in this account.") from None
    return row


def list_detectors(
    session: Session, principal: Principal, page: int, page_size: int, name: str | None = None
) -> DetectorPage:
    where = [DetectorRow.account_id == principal.account_id]
    if name is not None:
        where.append(DetectorRow.name == name)
    count = session.scalar(select(func.count()).select_from(DetectorRow).where(*where)) or 0
    rows = session.scalars(
        select(DetectorRow)
        .where(*where)
        .order_by(DetectorRow.created_at.desc(), DetectorRow.id.desc())
        .offset((page - 1) * page_size)
        .limit(page_size)
    )
    return DetectorPage(list(rows), count)


def patch_detector(session: Session, principal: Principal, detector_id: str, body: DetectorPatch) -> DetectorRow:
    row = get_detector(session, principal, detector_id)
    changes = body.model_dump(exclude_unset=True)
    for field in ("name", "confidence_threshold", "patience_time", "status", "escalation_type"):
        if field in changes:
            if changes[field] is None:
                raise InvalidInputError(f"{field} may not be null.")
            setattr(row, field, changes[field])
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise DuplicateNameError(f"A detector named {body.name!r} already exists in this account.") from None
    return row


def update_settings(session: Session, principal: Principal, detector_id: str, changes: DetectorSettings) -> DetectorRow:
    """Only the fields sent change; ``retrain_every_n_labels: null`` turns automatic retraining
    (after N labels and on the schedule) off for this detector."""
    row = get_detector(session, principal, detector_id)
    sent = changes.model_dump(exclude_unset=True)
    if "retrain_every_n_labels" in sent:
        row.retrain_every_n_labels = sent["retrain_every_n_labels"]
    if sent.get("promotion_policy") is not None:
        row.promotion_policy = sent["promotion_policy"]
    session.commit()
    return row


def delete_detector(session: Session, principal: Principal, detector_id: str, blobs: BlobStore) -> None:
    """Delete the detector with its queries, labels and models; blobs go after the commit."""
    row = get_detector(session, principal, detector_id)
    stored = session.execute(
        select(ImageQueryRow.image_blob_key, ImageQueryRow.depth_blob_key).where(ImageQueryRow.detector_id == row.id)
    )
    keys = [key for pair in stored for key in pair if key is not None]
    for model in session.scalars(select(ModelVersionRow).where(ModelVersionRow.detector_id == row.id)):
        keys.append(model.primary_blob_key)
        if model.oodd_blob_key:
            keys.append(model.oodd_blob_key)
    session.delete(row)
    session.commit()
    for key in keys:
        blobs.delete(key)


def list_groups(session: Session, principal: Principal) -> list[DetectorGroupRow]:
    return list(
        session.scalars(
            select(DetectorGroupRow)
            .where(DetectorGroupRow.account_id == principal.account_id)
            .order_by(DetectorGroupRow.name)
        )
    )


def create_group(session: Session, principal: Principal, name: str) -> DetectorGroupRow:
    row = DetectorGroupRow(id=new_id("dgp"), account_id=principal.account_id, name=name, created_at=utcnow())
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise DuplicateNameError(f"A detector group named {name!r} already exists.") from None
    return row
