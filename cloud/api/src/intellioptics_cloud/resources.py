"""Everything a request needs beyond its session, made once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from intellioptics_cloud.blobs import BlobStore
from intellioptics_cloud.inference import ModelRunner
from intellioptics_cloud.settings import CloudSettings
from intellioptics_cloud.workqueue import WorkQueue
from intellioptics_common.imaging import ImageLimits


@dataclass(frozen=True)
class Resources:
    settings: CloudSettings
    engine: Engine
    sessions: sessionmaker[Session]
    blobs: BlobStore
    queue: WorkQueue
    runner: ModelRunner
    limits: ImageLimits
