"""``python -m intellioptics_worker [--once]``: the retraining worker."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from intellioptics_worker.cloud import CloudClient
from intellioptics_worker.errors import CloudError
from intellioptics_worker.loop import Worker
from intellioptics_worker.runner import JobRunner
from intellioptics_worker.settings import WorkerSettings, get_settings
from intellioptics_worker.training import Trainer

logger = logging.getLogger("intellioptics_worker")


def main(argv: list[str] | None = None, trainer_factory: Callable[[WorkerSettings], Trainer] | None = None) -> int:
    """``trainer_factory`` replaces the training library (tests run worker processes with a
    tiny trainer where the trainer is not what they test)."""
    parser = argparse.ArgumentParser(prog="python -m intellioptics_worker", description=__doc__)
    parser.add_argument(
        "--once",
        action="store_true",
        help="run at most one job, then exit (0: done, cancelled or no job; 1: job failed; 3: cloud unreachable)",
    )
    args = parser.parse_args(argv)

    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"
    )
    if not settings.worker_token:
        print("error: set INTELLIOPTICS_WORKER_TOKEN to an admin or worker token of the cloud API", file=sys.stderr)
        return 2

    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %d: stopping after the current step", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    if trainer_factory is None:
        from intellioptics_worker.library import LibraryTrainer

        trainer_factory = LibraryTrainer

    with CloudClient(
        settings.cloud_url,
        settings.worker_token,
        timeout_s=settings.request_timeout_s,
        retries=settings.request_retries,
    ) as client:
        runner = JobRunner(client, trainer_factory(settings), settings, stop)
        worker = Worker(client, runner, poll_interval_s=settings.poll_interval_s, stop_requested=stop)
        logger.info("worker %s polling %s", settings.worker_id, settings.cloud_url)
        if args.once:
            try:
                outcome = worker.run_once()
            except CloudError as exc:
                logger.error("cannot claim a job: %s", exc)
                return 3
            if outcome is None:
                logger.info("no queued training job")
                return 0
            return 1 if outcome.status == "failed" else 0
        worker.run_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
