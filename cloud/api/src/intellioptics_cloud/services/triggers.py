"""Automatic training jobs: after N new labels, and on a schedule.

"New" means labelled after the detector's last model version *and* after its last
training job, whichever is later: a job that failed (say, too few labels of one class)
is not re-created at every following label, only after N more. UNCLEAR answers are not
counted: they add nothing to train on. At most one queued or running job per detector.
A detector whose ``retrain_every_n_labels`` is null gets no automatic jobs at all.

The schedule (``INTELLIOPTICS_RETRAIN_SCHEDULE_S``, 0 = off) creates a job for every
detector with at least one new label since then, so labels that never reach N still
get into a model. It runs in each API replica; two replicas ticking at the same moment
could both create a job for one detector, which costs one redundant training run, not
a wrong model.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from intellioptics_cloud.models import DetectorRow, LabelRow, ModelVersionRow, TrainingJobRow
from intellioptics_cloud.services.training import enqueue_job, has_open_job
from intellioptics_cloud.workqueue import WorkQueue

logger = logging.getLogger(__name__)


def _since(session: Session, detector_id: str) -> datetime | None:
    last_model = session.scalar(
        select(func.max(ModelVersionRow.created_at)).where(ModelVersionRow.detector_id == detector_id)
    )
    last_job = session.scalar(
        select(func.max(TrainingJobRow.created_at)).where(TrainingJobRow.detector_id == detector_id)
    )
    moments = [m for m in (last_model, last_job) if m is not None]
    return max(moments) if moments else None


def new_labels(session: Session, detector_id: str) -> int:
    """Labels (not UNCLEAR) added since the detector's last model version or training job."""
    query = (
        select(func.count())
        .select_from(LabelRow)
        .where(LabelRow.detector_id == detector_id, LabelRow.label != "UNCLEAR")
    )
    since = _since(session, detector_id)
    if since is not None:
        query = query.where(LabelRow.created_at > since)
    return int(session.scalar(query) or 0)


def after_label(session: Session, queue: WorkQueue, detector: DetectorRow) -> TrainingJobRow | None:
    """Call after a label is flushed (same transaction): queue a job once N new labels are in."""
    every = detector.retrain_every_n_labels
    if every is None or has_open_job(session, detector.id) or new_labels(session, detector.id) < every:
        return None
    logger.info("detector %s: %d new labels, queueing a training job", detector.id, every)
    return enqueue_job(session, queue, detector, trainer="auto", trigger="labels")


def scheduled_jobs(session: Session, queue: WorkQueue) -> list[str]:
    """One scheduled tick: a job for each detector with new labels, no open job and
    automatic retraining on."""
    created = []
    automatic = select(DetectorRow).where(DetectorRow.retrain_every_n_labels.is_not(None))
    for detector in session.scalars(automatic.order_by(DetectorRow.id)):
        if not has_open_job(session, detector.id) and new_labels(session, detector.id) > 0:
            created.append(enqueue_job(session, queue, detector, trainer="auto", trigger="schedule").id)
    session.commit()
    return created


class RetrainScheduler:
    """A daemon thread that runs :func:`scheduled_jobs` every ``interval_s`` (first tick
    after one interval, so a restart does not trigger a burst of jobs)."""

    def __init__(self, sessions: sessionmaker[Session], queue: WorkQueue, interval_s: float) -> None:
        self._sessions = sessions
        self._queue = queue
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retrain-scheduler", daemon=True)

    def start(self) -> None:
        if self._interval_s > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def tick(self) -> list[str]:
        with self._sessions() as session:
            return scheduled_jobs(session, self._queue)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                created = self.tick()
            except Exception:  # a database hiccup must not end the schedule
                logger.exception("scheduled retraining tick failed")
                continue
            if created:
                logger.info("scheduled retraining: %d job(s) queued", len(created))
