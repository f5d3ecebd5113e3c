"""Training jobs: created by people (or every N labels), run by workers.

The job row is the truth; the work queue only carries "job X is queued" to one worker.
A claimed job holds a lease that the worker's progress reports renew; a job whose lease
ran out (its worker died) goes back to the queue, up to ``max_attempts`` times.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from intellioptics_cloud.auth import Principal
from intellioptics_cloud.db import rows_changed
from intellioptics_cloud.models import DetectorRow, TrainingJobRow, utcnow
from intellioptics_cloud.workqueue import WorkQueue
from intellioptics_common.errors import ConflictError, InvalidInputError, NotFoundError
from intellioptics_common.ids import new_id

OPEN_STATUSES = ("queued", "running")


def topic(account_id: int) -> str:
    return f"training-{account_id}"


def has_open_job(session: Session, detector_id: str) -> bool:
    return (
        session.scalar(
            select(TrainingJobRow.id).where(
                TrainingJobRow.detector_id == detector_id, TrainingJobRow.status.in_(OPEN_STATUSES)
            )
        )
        is not None
    )


def enqueue_job(
    session: Session, queue: WorkQueue, detector: DetectorRow, trainer: str, trigger: str
) -> TrainingJobRow:
    job = TrainingJobRow(
        id=new_id("tj"),
        account_id=detector.account_id,
        detector_id=detector.id,
        status="queued",
        trigger=trigger,
        trainer=trainer,
        progress=0.0,
        epochs=[],
        attempts=0,
        created_at=utcnow(),
    )
    session.add(job)
    queue.send(topic(detector.account_id), {"job_id": job.id}, session)
    return job


def get_job(session: Session, principal: Principal, job_id: str) -> TrainingJobRow:
    job = session.get(TrainingJobRow, job_id)
    if job is None or job.account_id != principal.account_id:
        raise NotFoundError(f"Training job {job_id} not found.")
    return job


def list_jobs(
    session: Session, principal: Principal, detector_id: str | None, status: str | None
) -> list[TrainingJobRow]:
    query = select(TrainingJobRow).where(TrainingJobRow.account_id == principal.account_id)
    if detector_id:
        query = query.where(TrainingJobRow.detector_id == detector_id)
    if status:
        query = query.where(TrainingJobRow.status == status)
    return list(session.scalars(query.order_by(TrainingJobRow.created_at.desc()).limit(500)))


def cancel(session: Session, principal: Principal, job_id: str) -> TrainingJobRow:
    job = get_job(session, principal, job_id)
    if job.status not in OPEN_STATUSES:
        raise ConflictError(f"Training job {job_id} is {job.status}; only queued or running jobs can be cancelled.")
    job.status = "cancelled"
    job.finished_at = utcnow()
    job.lease_expires_at = None
    session.commit()
    return job


def _requeue_expired(session: Session, queue: WorkQueue, account_id: int, max_attempts: int) -> None:
    now = utcnow()
    expired = session.scalars(
        select(TrainingJobRow).where(
            TrainingJobRow.account_id == account_id,
            TrainingJobRow.status == "running",
            TrainingJobRow.lease_expires_at < now,
        )
    ).all()
    for job in expired:
        retry = job.attempts < max_attempts
        values: dict[str, Any] = {"status": "queued", "claimed_by": None, "lease_expires_at": None}
        if not retry:
            values = {
                "status": "failed",
                "error": "The worker stopped reporting and no attempts are left.",
                "finished_at": now,
            }
        changed = rows_changed(
            session,
            update(TrainingJobRow)
            .where(
                TrainingJobRow.id == job.id, TrainingJobRow.status == "running", TrainingJobRow.lease_expires_at < now
            )
            .values(**values)
            .execution_options(synchronize_session=False),
        )
        if changed == 1 and retry:
            queue.send(topic(account_id), {"job_id": job.id}, session)
    session.commit()


def claim(
    session: Session, principal: Principal, queue: WorkQueue, lease_s: float, max_attempts: int
) -> TrainingJobRow | None:
    _requeue_expired(session, queue, principal.account_id, max_attempts)
    for _ in range(20):
        with queue.receive(topic(principal.account_id), lock_s=30) as message:
            if message is None:
                return None
            job_id = str(message.body.get("job_id", ""))
            now = utcnow()
            taken = rows_changed(
                session,
                update(TrainingJobRow)
                .where(TrainingJobRow.id == job_id, TrainingJobRow.status == "queued")
                .values(
                    status="running",
                    claimed_by=principal.token_id,
                    lease_expires_at=now + timedelta(seconds=lease_s),
                    attempts=TrainingJobRow.attempts + 1,
                    started_at=now,
                    message="claimed by a worker",
                )
                .execution_options(synchronize_session=False),
            )
            session.commit()
            if taken == 1:
                job = session.get(TrainingJobRow, job_id)
                session.refresh(job)
                return job
            # Cancelled or already taken: the message is stale; completing it drops it.
    return None


def _running(session: Session, principal: Principal, job_id: str) -> TrainingJobRow:
    job = get_job(session, principal, job_id)
    if job.status != "running":
        raise ConflictError(f"Training job {job_id} is {job.status}, not running; stop working on it.")
    return job


def progress(
    session: Session,
    principal: Principal,
    job_id: str,
    lease_s: float,
    value: float,
    eta_s: float | None,
    message: str | None,
    epoch: dict[str, Any] | None,
) -> TrainingJobRow:
    job = _running(session, principal, job_id)
    job.progress = value
    job.eta_s = eta_s
    if message is not None:
        job.message = message
    if epoch is not None:
        job.epochs = [e for e in job.epochs if e.get("epoch") != epoch["epoch"]] + [epoch]
    job.lease_expires_at = utcnow() + timedelta(seconds=lease_s)
    session.commit()
    return job


def complete(
    session: Session, principal: Principal, job_id: str, model_version: int | None, error: str | None
) -> TrainingJobRow:
    job = _running(session, principal, job_id)
    if (model_version is None) == (error is None):
        raise InvalidInputError("Send exactly one of model_version (success) or error (failure).")
    job.status = "failed" if error else "succeeded"
    job.error = error
    job.model_version = model_version
    job.finished_at = utcnow()
    job.lease_expires_at = None
    if not error:
        job.progress = 1.0
        job.eta_s = 0.0
    session.commit()
    return job
