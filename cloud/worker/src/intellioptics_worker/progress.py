"""Progress, ETA and per-epoch metrics of one job, posted to the cloud from a side thread.

The training loop only updates numbers in memory (cheap, never blocks on the network);
the thread posts them at least every ``heartbeat_s`` (which renews the job's lease even
when one training step is long) and at once when an epoch ends. The cloud's answer
says whether the job was cancelled; the training loop learns it through :meth:`check`,
which the training library calls as its ``cancel_check``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from intellioptics_worker.cloud import CloudClient, EpochReport
from intellioptics_worker.errors import CloudError, JobCancelled, WorkerStopping

logger = logging.getLogger(__name__)


class ProgressReporter:
    def __init__(
        self,
        client: CloudClient,
        job_id: str,
        *,
        heartbeat_s: float,
        stop_requested: threading.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._job_id = job_id
        self._heartbeat_s = heartbeat_s
        self._stop_requested = stop_requested
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._post_lock = threading.Lock()  # posts leave in the order of their snapshots
        self._progress = 0.0
        self._message = "starting"
        self._epochs: deque[EpochReport] = deque()
        self._wake = threading.Event()
        self._done = threading.Event()
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress-{job_id}", daemon=True)

    def __enter__(self) -> ProgressReporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._done.set()
        self._wake.set()
        self._thread.join(timeout=30)

    # --- called by the job ----------------------------------------------------------

    def update(self, progress: float, message: str | None = None) -> None:
        with self._lock:
            self._progress = max(self._progress, min(progress, 1.0))  # never goes backwards on screen
            if message is not None:
                self._message = message

    def epoch(self, report: EpochReport) -> None:
        with self._lock:
            self._epochs.append(report)
        self._wake.set()

    def flush(self) -> None:
        """Post now, from the caller's thread (phase changes)."""
        self._post()

    def check(self) -> bool:
        """Raise when the job must stop; returns False so it also fits ``cancel_check``."""
        if self._cancelled.is_set():
            raise JobCancelled(f"job {self._job_id} was cancelled")
        if self._stop_requested.is_set():
            raise WorkerStopping("the worker is stopping; the job goes back to the queue when its lease expires")
        return False

    def should_stop(self) -> bool:
        """The non-raising form, for libraries that poll a boolean ``cancel_check``."""
        return self._cancelled.is_set() or self._stop_requested.is_set()

    def eta_s(self) -> float | None:
        with self._lock:
            progress = self._progress
        elapsed = self._clock() - self._started
        if progress < 0.02 or elapsed <= 0:
            return None
        return elapsed * (1.0 - progress) / progress

    # --- the side thread ------------------------------------------------------------

    def _run(self) -> None:
        while not self._done.is_set():
            self._wake.wait(self._heartbeat_s)
            self._wake.clear()
            if self._done.is_set():
                break
            self._post()

    def _post(self) -> None:
        with self._post_lock:
            self._post_locked()

    def _post_locked(self) -> None:
        if self._cancelled.is_set():
            return
        with self._lock:
            progress, message = self._progress, self._message
            epochs = list(self._epochs)
            self._epochs.clear()
        eta = self.eta_s()
        try:
            # One post per finished epoch (the API takes one at a time), the last one with the news.
            for report in epochs[:-1]:
                self._client.report_progress(self._job_id, progress, eta, message, report)
            self._client.report_progress(self._job_id, progress, eta, message, epochs[-1] if epochs else None)
        except JobCancelled:
            logger.info("job %s was cancelled in the cloud; stopping it", self._job_id)
            self._cancelled.set()
        except CloudError as exc:
            # The job goes on: a missed progress post only costs the lease if it lasts.
            logger.warning("progress of job %s not posted: %s", self._job_id, exc)
