"""Claim a job, run it, repeat; stop cleanly on request.

SIGTERM sets ``stop_requested``: the worker claims nothing more, and a job in progress
stops at its next cancellation check without completing, so its lease runs out and
another worker retries it (a half-trained model is worth nothing; a retried job loses
only time).
"""

from __future__ import annotations

import logging
import threading

from intellioptics_worker.cloud import CloudClient
from intellioptics_worker.errors import CloudError
from intellioptics_worker.runner import JobOutcome, JobRunner

logger = logging.getLogger(__name__)

_MAX_ERROR_BACKOFF_S = 60.0


class Worker:
    def __init__(
        self,
        client: CloudClient,
        runner: JobRunner,
        *,
        poll_interval_s: float,
        stop_requested: threading.Event,
    ) -> None:
        self._client = client
        self._runner = runner
        self._poll_interval_s = poll_interval_s
        self._stop_requested = stop_requested

    def run_once(self) -> JobOutcome | None:
        """Claim and run one job; ``None`` when the queue is empty (or we are stopping)."""
        if self._stop_requested.is_set():
            return None
        job = self._client.claim_job()
        if job is None:
            return None
        return self._runner.run(job)

    def run_forever(self) -> None:
        backoff = self._poll_interval_s
        while not self._stop_requested.is_set():
            try:
                outcome = self.run_once()
            except CloudError as exc:
                logger.warning("cannot claim a job: %s; next try in %.0f s", exc, backoff)
                self._stop_requested.wait(backoff)
                backoff = min(backoff * 2, _MAX_ERROR_BACKOFF_S)
                continue
            backoff = self._poll_interval_s
            if outcome is None:
                self._stop_requested.wait(self._poll_interval_s)
        logger.info("worker stopped")
