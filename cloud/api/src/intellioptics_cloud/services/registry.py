"""Model registry: versions of a detector's primary (+ OODD) model, kept in blobs.

Exactly one version is ``active`` (the cloud answers with it and edges fetch it); older
active ones become ``retired``, new uploads start as ``candidate``. Edges download the
binaries through signed, expiring URLs so no token travels with a download.

An uploaded file is data, never a path: :mod:`intellioptics_common.model_check` refuses
external data, operators outside the allow-list and oversized tensors, then runs the
model once on a blank image in a child process under a memory cap and a time limit
(never in this process: a model could allocate gigabytes when run). ``activate: true``
is honoured only where the detector's promotion policy lets the uploader activate:
under ``manual`` only an admin does, so a worker's upload stays a candidate and its
``decision`` says why.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from intellioptics_cloud.auth import Permission, Principal, sign, verify_signature
from intellioptics_cloud.models import DetectorRow, ModelVersionRow, utcnow
from intellioptics_cloud.resources import Resources
from intellioptics_cloud.schemas import ModelManifest
from intellioptics_cloud.services.detectors import get_detector
from intellioptics_cloud.services.wire import class_names
from intellioptics_common.errors import (
    ConflictError,
    IntelliOpticsError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from intellioptics_common.ids import new_id
from intellioptics_common.model_check import check_model_bytes, trial_run
from intellioptics_common.model_package import PipelineConfig, sha256_bytes
from intellioptics_common.schemas import EdgeModelInfo

MAX_MODEL_BYTES = 512 * 1024 * 1024
_BINARY_ID = re.compile(r"^(?P<model>mdl_[A-Za-z0-9]{8,64})-(?P<kind>primary|oodd)$")


@dataclass(frozen=True)
class Binary:
    data: bytes
    sha256: str


def get_version(session: Session, principal: Principal, detector_id: str, version: int) -> ModelVersionRow:
    detector = get_detector(session, principal, detector_id)
    row = session.scalar(
        select(ModelVersionRow).where(ModelVersionRow.detector_id == detector.id, ModelVersionRow.version == version)
    )
    if row is None:
        raise NotFoundError(f"Detector {detector_id} has no model version {version}.")
    return row


def list_versions(session: Session, principal: Principal, detector_id: str) -> list[ModelVersionRow]:
    detector = get_detector(session, principal, detector_id)
    return list(
        session.scalars(
            select(ModelVersionRow).where(ModelVersionRow.detector_id == detector.id).order_by(ModelVersionRow.version)
        )
    )


def _check_onnx(data: bytes, what: str, config: PipelineConfig) -> None:
    """Static checks first (cheap, no ONNX Runtime), then one bounded trial run."""
    if not data:
        raise InvalidInputError(f"The {what} model file is empty.")
    if len(data) > MAX_MODEL_BYTES:
        raise InvalidInputError(f"The {what} model file is over {MAX_MODEL_BYTES} bytes.")
    check_model_bytes(data, what)
    trial_run(data, what, height=config.input.height, width=config.input.width)


def _pipeline(data: dict[str, Any], kind: str, what: str) -> PipelineConfig:
    try:
        config = PipelineConfig.from_dict(data)
    except IntelliOpticsError as exc:
        raise InvalidInputError(f"{what}: {exc.public_message}") from None
    if config.kind != kind:
        raise InvalidInputError(f"{what}.kind must be {kind!r}.")
    return config


def upload(
    resources: Resources,
    session: Session,
    principal: Principal,
    detector_id: str,
    manifest: ModelManifest,
    primary: bytes,
    oodd: bytes | None,
) -> ModelVersionRow:
    detector = get_detector(session, principal, detector_id)
    primary_config = _pipeline(manifest.primary_pipeline_config, "primary", "primary_pipeline_config")
    if primary_config.mode != detector.mode:
        raise InvalidInputError(
            f"primary_pipeline_config.mode is {primary_config.mode!r}, but detector {detector.id} is {detector.mode}:"
            " upload a model trained for the detector's mode."
        )
    if list(primary_config.class_names) != class_names(detector):
        raise InvalidInputError(
            f"primary_pipeline_config.class_names must be {class_names(detector)} (the detector's classes, in order)."
        )
    if (oodd is None) != (manifest.oodd_pipeline_config is None):
        raise InvalidInputError("Send the oodd file and oodd_pipeline_config together, or neither.")
    oodd_config = None
    if manifest.oodd_pipeline_config is not None:
        oodd_config = _pipeline(manifest.oodd_pipeline_config, "oodd", "oodd_pipeline_config")
    _check_onnx(primary, "primary", primary_config)
    if oodd is not None and oodd_config is not None:
        _check_onnx(oodd, "oodd", oodd_config)

    version = (
        session.scalar(select(func.max(ModelVersionRow.version)).where(ModelVersionRow.detector_id == detector.id)) or 0
    ) + 1
    model_id = new_id("mdl")
    prefix = f"models/{principal.account_id}/{detector.id}/{version}-{secrets.token_hex(4)}"
    keys = [f"{prefix}/primary.onnx"] + ([f"{prefix}/oodd.onnx"] if oodd is not None else [])
    row = ModelVersionRow(
        id=model_id,
        account_id=principal.account_id,
        detector_id=detector.id,
        version=version,
        status="candidate",
        trainer=manifest.trainer,
        metrics=manifest.metrics,
        training_set_size=manifest.training_set_size,
        class_counts=manifest.class_counts,
        dataset_image_query_ids=manifest.dataset_image_query_ids,
        decision=None,
        training_job_id=manifest.training_job_id,
        primary_blob_key=keys[0],
        primary_sha256=sha256_bytes(primary),
        primary_pipeline_config=primary_config.to_dict(),
        primary_metadata=manifest.primary_metadata,
        oodd_blob_key=keys[1] if oodd is not None else None,
        oodd_sha256=sha256_bytes(oodd) if oodd is not None else None,
        oodd_pipeline_config=manifest.oodd_pipeline_config,
        oodd_metadata=manifest.oodd_metadata,
        created_at=utcnow(),
    )
    try:
        resources.blobs.put(keys[0], primary)
        if oodd is not None:
            resources.blobs.put(keys[1], oodd)
        session.add(row)
        session.flush()
        refusal = _activation_refusal(detector, principal) if manifest.activate else None
        if manifest.activate and refusal is None:
            _activate(session, detector, row, manifest.decision_reason or "uploaded with activate=true")
        elif refusal is not None:
            reason = f"{refusal}; {manifest.decision_reason}" if manifest.decision_reason else refusal
            row.decision = {"action": "keep_candidate", "reason": reason, "at": utcnow().isoformat()}
        elif manifest.decision_reason:
            row.decision = {"action": "keep_candidate", "reason": manifest.decision_reason, "at": utcnow().isoformat()}
        session.commit()
    except BaseException as exc:
        session.rollback()
        for key in keys:
            resources.blobs.delete(key)
        if isinstance(exc, IntegrityError):
            raise ConflictError("Another version was uploaded at the same moment; retry the upload.") from None
        raise
    return row


def _activation_refusal(detector: DetectorRow, principal: Principal) -> str | None:
    """Why ``activate: true`` is not honoured for this uploader, or None when it is.
    Under the manual policy activating is a person's decision, which is the admin's right
    (the same one ``POST .../activate`` asks for)."""
    if detector.promotion_policy == "manual" and not principal.allows(Permission.MANAGE):
        return (
            "kept as a candidate: the detector's promotion policy is manual, so only an admin activates a version "
            "(POST /v1/detectors/{id}/models/{version}/activate)"
        )
    return None


def _activate(session: Session, detector: DetectorRow, row: ModelVersionRow, reason: str) -> None:
    now = utcnow()
    for other in session.scalars(
        select(ModelVersionRow).where(ModelVersionRow.detector_id == detector.id, ModelVersionRow.status == "active")
    ):
        if other.id != row.id:
            other.status = "retired"
            other.decision = {"action": "retire", "reason": f"replaced by version {row.version}", "at": now.isoformat()}
    row.status = "active"
    row.activated_at = now
    row.decision = {"action": "activate", "reason": reason, "at": now.isoformat()}
    detector.active_model_version = row.version


def activate(session: Session, principal: Principal, detector_id: str, version: int) -> ModelVersionRow:
    row = get_version(session, principal, detector_id, version)
    detector = get_detector(session, principal, detector_id)
    _activate(session, detector, row, f"activated by {principal.username}")
    session.commit()
    return row


def rollback(session: Session, principal: Principal, detector_id: str) -> ModelVersionRow:
    """Re-activate the version that was active before the current one."""
    detector = get_detector(session, principal, detector_id)
    current = session.scalar(
        select(ModelVersionRow).where(ModelVersionRow.detector_id == detector.id, ModelVersionRow.status == "active")
    )
    query = select(ModelVersionRow).where(
        ModelVersionRow.detector_id == detector.id,
        ModelVersionRow.status == "retired",
        ModelVersionRow.activated_at.is_not(None),
    )
    if current is not None and current.activated_at is not None:
        query = query.where(ModelVersionRow.activated_at < current.activated_at)
    previous = session.scalars(query.order_by(ModelVersionRow.activated_at.desc())).first()
    if previous is None:
        raise ConflictError("There is no previously active version to roll back to.")
    _activate(session, detector, previous, f"rollback by {principal.username}")
    if current is not None:
        current.decision = {
            "action": "rollback",
            "reason": f"rolled back to version {previous.version}",
            "at": utcnow().isoformat(),
        }
    session.commit()
    return previous


def delete_version(
    resources: Resources, session: Session, principal: Principal, detector_id: str, version: int
) -> None:
    row = get_version(session, principal, detector_id, version)
    if row.status == "active":
        raise ConflictError("The active version cannot be deleted; activate another version or roll back first.")
    keys = [row.primary_blob_key, row.oodd_blob_key]
    session.delete(row)
    session.commit()
    for key in keys:
        if key:
            resources.blobs.delete(key)


def download(
    resources: Resources, session: Session, principal: Principal, detector_id: str, version: int, kind: str
) -> bytes:
    row = get_version(session, principal, detector_id, version)
    key = row.primary_blob_key if kind == "primary" else row.oodd_blob_key
    if key is None:
        raise NotFoundError(f"Version {version} has no {kind} model.")
    return resources.blobs.get(key)


def compare_metrics(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """b - a for every numeric metric both versions report."""
    out = {}
    for name in sorted(set(a) & set(b)):
        if isinstance(a[name], (int, float)) and isinstance(b[name], (int, float)) and not isinstance(a[name], bool):
            out[name] = float(b[name]) - float(a[name])
    return out


# --- edges fetch the active model ---------------------------------------------------


def _signed_url(resources: Resources, base_url: str, binary_id: str) -> str:
    path = f"/v1/model-binaries/{binary_id}"
    expires = int(time.time()) + resources.settings.model_url_ttl_s
    signature = sign(resources.settings.secret_key, f"{path}:{expires}")
    return f"{base_url.rstrip('/')}{path}?expires={expires}&signature={signature}"


def edge_model_info(
    resources: Resources, session: Session, principal: Principal, detector_id: str, base_url: str
) -> EdgeModelInfo:
    detector = get_detector(session, principal, detector_id)
    row = None
    if detector.active_model_version is not None:
        row = session.scalar(
            select(ModelVersionRow).where(
                ModelVersionRow.detector_id == detector.id, ModelVersionRow.version == detector.active_model_version
            )
        )
    if row is None:
        return EdgeModelInfo()  # no model yet: the edge keeps escalating
    base = resources.settings.public_url or base_url
    info = EdgeModelInfo(
        model_binary_id=f"{row.id}-primary",
        model_binary_url=_signed_url(resources, base, f"{row.id}-primary"),
        model_binary_sha256=row.primary_sha256,
        pipeline_config=row.primary_pipeline_config,
        predictor_metadata=row.primary_metadata,
    )
    if row.oodd_blob_key:
        info.oodd_model_binary_id = f"{row.id}-oodd"
        info.oodd_model_binary_url = _signed_url(resources, base, f"{row.id}-oodd")
        info.oodd_model_binary_sha256 = row.oodd_sha256
        info.oodd_pipeline_config = row.oodd_pipeline_config
        info.oodd_predictor_metadata = row.oodd_metadata
    return info


def signed_binary(resources: Resources, session: Session, binary_id: str, expires: int, signature: str) -> Binary:
    path = f"/v1/model-binaries/{binary_id}"
    if not verify_signature(resources.settings.secret_key, f"{path}:{expires}", signature):
        raise PermissionDeniedError("The download signature is not valid; fetch a new URL.")
    if expires < time.time():
        raise PermissionDeniedError("The download URL has expired; fetch a new one.")
    match = _BINARY_ID.match(binary_id)
    row = session.get(ModelVersionRow, match.group("model")) if match else None
    if row is None or match is None:
        raise NotFoundError("Model binary not found.")
    key, digest = (
        (row.primary_blob_key, row.primary_sha256)
        if match.group("kind") == "primary"
        else (row.oodd_blob_key, row.oodd_sha256)
    )
    if key is None or digest is None:
        raise NotFoundError("Model binary not found.")
    return Binary(resources.blobs.get(key), digest)
