"""The worker's one typed Settings (``INTELLIOPTICS_*`` environment variables)."""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path

from pydantic import Field

from intellioptics_common.settings import BaseServiceSettings


def _default_worker_id() -> str:
    # Host and pid: two workers on one machine must not share an identity in the cloud's logs.
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerSettings(BaseServiceSettings):
    cloud_url: str = "http://127.0.0.1:8000"
    worker_token: str | None = Field(default=None, description="admin or worker role token for the cloud API")
    worker_id: str = Field(default_factory=_default_worker_id)
    work_dir: Path | None = Field(default=None, description="scratch space; a temporary directory when unset")
    poll_interval_s: float = Field(default=2.0, gt=0, description="sleep between claims when the queue is empty")
    heartbeat_s: float = Field(
        default=10.0, gt=0, description="progress is re-posted at least this often: renews the lease, reads cancel"
    )
    request_timeout_s: float = Field(default=60.0, gt=0)
    request_retries: int = Field(default=4, ge=0, description="retries of one cloud call on network errors and 5xx")
    cv_folds: int = Field(
        default=3, ge=2, le=10, description="cross-fitting folds (capped by the smallest class's label count)"
    )
    min_per_class: int = Field(default=3, ge=2, description="fewer labels than this in any class: the job fails")
    min_detection_images: int = Field(
        default=8, ge=6, description="COUNT / BOUNDING_BOX: fewer boxed labels than this and the job fails"
    )
    min_detection_objects: int = Field(default=4, ge=1, description="COUNT / BOUNDING_BOX: boxed objects in all")
    detection_epochs: int = Field(default=30, ge=1, le=500, description="COUNT / BOUNDING_BOX head epochs per fold")
    min_good_images: int = Field(
        default=10,
        ge=4,
        description="auto trainer, BINARY: with this many NO labels and too few YES ones, an anomaly model is trained",
    )
    seed: int = 0

    def secret_fields(self) -> dict[str, str | None]:
        return {"worker_token": self.worker_token}


@lru_cache
def get_settings() -> WorkerSettings:
    return WorkerSettings()
