"""Worker errors.

Hierarchy (on top of :mod:`intellioptics_common.errors`)::

    IntelliOpticsError
    └── WorkerError                     the job cannot be done; it is completed with an error
        ├── CloudError                  the cloud answered a 4xx, or kept failing after retries
        │   └── CloudUnavailableError   network errors / 5xx after every retry (transient)
        ├── DatasetError                too few usable labels, one class only, unreadable images
        ├── ModelError                  a model (new or active) cannot be loaded or run
        └── JobInterrupted              cooperative stop (not a failure)
            ├── JobCancelled            the job was cancelled in the cloud: report nothing more
            └── WorkerStopping          SIGTERM: leave the job to its lease so another worker retries it

A job that fails with a :class:`WorkerError` is completed with ``{"error": public_message}``;
an interrupted job is not completed at all.
"""

from __future__ import annotations

from intellioptics_common.errors import IntelliOpticsError


class WorkerError(IntelliOpticsError):
    code = "worker_error"


class CloudError(WorkerError):
    code = "cloud_error"

    def __init__(self, public_message: str, *, status_code: int | None = None, log_message: str | None = None) -> None:
        super().__init__(public_message, log_message=log_message)
        self.http_status = status_code


class CloudUnavailableError(CloudError):
    code = "cloud_unavailable"


class DatasetError(WorkerError):
    code = "dataset_error"


class ModelError(WorkerError):
    code = "model_error"


class JobInterrupted(WorkerError):
    code = "job_interrupted"


class JobCancelled(JobInterrupted):
    code = "job_cancelled"


class WorkerStopping(JobInterrupted):
    code = "worker_stopping"
