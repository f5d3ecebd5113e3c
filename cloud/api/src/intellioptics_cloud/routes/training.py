"""Training jobs: people create and watch them; workers claim, report and complete them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from intellioptics_cloud.deps import Admin, Reader, ResourcesDep, SessionDep, Worker
from intellioptics_cloud.models import TrainingJobRow
from intellioptics_cloud.schemas import JobStatus, TrainingComplete, TrainingJob, TrainingJobCreate, TrainingProgress
from intellioptics_cloud.services import training
from intellioptics_cloud.services.detectors import get_detector

router = APIRouter(tags=["training"])


def job_out(row: TrainingJobRow) -> TrainingJob:
    return TrainingJob(
        id=row.id,
        detector_id=row.detector_id,
        status=row.status,
        trigger=row.trigger,
        trainer=row.trainer,
        progress=row.progress,
        eta_s=row.eta_s,
        message=row.message,
        epochs=row.epochs,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=row.error,
        model_version=row.model_version,
        attempts=row.attempts,
    )


@router.post("/detectors/{detector_id}/training-jobs", response_model=TrainingJob, status_code=status.HTTP_201_CREATED)
def create_job(
    detector_id: str,
    principal: Admin,
    session: SessionDep,
    resources: ResourcesDep,
    body: TrainingJobCreate | None = None,
) -> TrainingJob:
    detector = get_detector(session, principal, detector_id)
    job = training.enqueue_job(session, resources.queue, detector, (body or TrainingJobCreate()).trainer, "manual")
    session.commit()
    return job_out(job)


@router.get("/training-jobs", response_model=list[TrainingJob])
def list_jobs(
    principal: Reader,
    session: SessionDep,
    detector_id: Annotated[str | None, Query(max_length=64)] = None,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
) -> list[TrainingJob]:
    return [job_out(r) for r in training.list_jobs(session, principal, detector_id, status_filter)]


@router.post("/training-jobs/claim", response_model=TrainingJob, responses={204: {"description": "No job waiting"}})
def claim(principal: Worker, session: SessionDep, resources: ResourcesDep) -> TrainingJob | Response:
    settings = resources.settings
    job = training.claim(session, principal, resources.queue, settings.training_lease_s, settings.training_max_attempts)
    if job is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return job_out(job)


@router.get("/training-jobs/{job_id}", response_model=TrainingJob)
def get_job(job_id: str, principal: Reader, session: SessionDep) -> TrainingJob:
    return job_out(training.get_job(session, principal, job_id))


@router.post("/training-jobs/{job_id}/cancel", response_model=TrainingJob)
def cancel(job_id: str, principal: Admin, session: SessionDep) -> TrainingJob:
    return job_out(training.cancel(session, principal, job_id))


@router.post("/training-jobs/{job_id}/progress", response_model=TrainingJob)
def progress(
    job_id: str, body: TrainingProgress, principal: Worker, session: SessionDep, resources: ResourcesDep
) -> TrainingJob:
    epoch = body.epoch.model_dump() if body.epoch else None
    row = training.progress(
        session, principal, job_id, resources.settings.training_lease_s, body.progress, body.eta_s, body.message, epoch
    )
    return job_out(row)


@router.post("/training-jobs/{job_id}/complete", response_model=TrainingJob)
def complete(job_id: str, body: TrainingComplete, principal: Worker, session: SessionDep) -> TrainingJob:
    return job_out(training.complete(session, principal, job_id, body.model_version, body.error))
