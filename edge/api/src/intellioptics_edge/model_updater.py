"""Pulls new model versions from the cloud into the models directory the inference service reads.

Every ``refresh_rate`` seconds (edge-config ``global_config``, re-read each cycle) and for
each configured detector: ``GET /edge-api/v1/fetch-model-urls/{detector_id}``; when the
active binary id differs from ``model_id.txt`` of the newest local version, download,
check the sha256, and write a new version with
:func:`intellioptics_common.model_package.write_version` (staging directory, atomic
rename, last two kept). The inference service polls the directory and swaps the new
version in with no failed request.

Order matters: the OODD package is written before the primary one, because the
inference service serves a detector as soon as its primary appears; a primary whose
OODD is not there yet would be answered without the out-of-domain adjustment.

A failed or corrupt download changes nothing on disk (the hash is checked before the
rename) and is logged and counted; the next cycle tries again. So does a download that
fails :func:`intellioptics_common.model_check.check_model_bytes` (external data that
would read a file of this edge, operators outside the allow-list): model files are
data, never paths, even when the cloud sends them. A rollback in the cloud
registry is a different active binary id, so it reaches the edge the same way: as a new
local version holding the older bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
from pydantic import ValidationError

from intellioptics_common.errors import IntelliOpticsError, PackageError
from intellioptics_common.model_check import check_model_bytes
from intellioptics_common.model_package import (
    Kind,
    PipelineConfig,
    PredictorMetadata,
    read_latest,
    sha256_bytes,
    write_version,
)
from intellioptics_common.schemas import EdgeModelInfo

logger = logging.getLogger(__name__)


class UpdateFailed(Exception):
    """One detector's update could not be completed this cycle (internal)."""


@dataclass(frozen=True)
class KindUpdate:
    kind: Kind
    binary_id: str
    url: str
    sha256: str | None
    pipeline: Any
    metadata: Any


@dataclass
class UpdaterCounters:
    checks: int = 0
    updates: int = 0  # versions written (a detector's primary + OODD count as one)
    failures: int = 0
    last_error: str | None = None
    last_check_at: float | None = None
    installed: dict[str, dict[str, str]] = field(default_factory=dict)  # detector -> kind -> binary id


class ModelUpdater:
    def __init__(
        self,
        client: httpx.AsyncClient,
        token: str,
        models_dir: Path,
        *,
        detector_ids: Callable[[], Sequence[str]],
        refresh_rate: Callable[[], float],
    ) -> None:
        self._client = client
        self._token = token
        self._models_dir = Path(models_dir)
        self._detector_ids = detector_ids
        self._refresh_rate = refresh_rate
        self.counters = UpdaterCounters()

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep polling whatever one cycle did
                logger.exception("model update cycle failed")
            await asyncio.sleep(self._refresh_rate())

    async def run_once(self) -> list[str]:
        """One cycle over the configured detectors; returns those that got a new version."""
        updated = []
        for detector_id in list(self._detector_ids()):
            self.counters.checks += 1
            try:
                if await self.update_detector(detector_id):
                    updated.append(detector_id)
            except UpdateFailed as exc:
                self.counters.failures += 1
                self.counters.last_error = f"{detector_id}: {exc}"
                logger.warning("model update of %s failed, nothing changed: %s", detector_id, exc)
        self.counters.last_check_at = time.time()
        return updated

    async def update_detector(self, detector_id: str) -> bool:
        info = await self._fetch_info(detector_id)
        wanted = _wanted(info)
        if not wanted:
            return False  # no active model in the cloud yet
        if "primary" not in {w.kind for w in wanted}:
            raise UpdateFailed("the cloud lists an OODD model but no primary model")
        current = await anyio.to_thread.run_sync(self._local_ids, detector_id)
        changed = [w for w in wanted if current.get(w.kind) != w.binary_id]
        if not changed:
            return False
        # Download and check everything first: a half-applied update would pair a new
        # primary with an old OODD (or the reverse) for a whole cycle.
        payloads = [(w, await self._download(w)) for w in changed]
        for update, data in sorted(payloads, key=lambda p: 0 if p[0].kind == "oodd" else 1):
            await anyio.to_thread.run_sync(partial(self._write, detector_id, update, data))
        self.counters.updates += 1
        self.counters.installed[detector_id] = {w.kind: w.binary_id for w in wanted}
        logger.info("installed %s for %s", ", ".join(f"{u.kind} {u.binary_id}" for u, _ in payloads), detector_id)
        return True

    async def _fetch_info(self, detector_id: str) -> EdgeModelInfo:
        try:
            response = await self._client.get(
                f"/edge-api/v1/fetch-model-urls/{detector_id}", headers={"x-api-token": self._token}
            )
        except httpx.HTTPError as exc:
            raise UpdateFailed(f"cloud unreachable: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise UpdateFailed(f"fetch-model-urls answered HTTP {response.status_code}: {response.text[:200]}")
        try:
            return EdgeModelInfo.model_validate_json(response.content)
        except ValidationError as exc:
            raise UpdateFailed("fetch-model-urls answer is not an EdgeModelInfo") from exc

    def _local_ids(self, detector_id: str) -> dict[str, str]:
        ids = {}
        for kind in ("primary", "oodd"):
            try:
                package = read_latest(self._models_dir, detector_id, kind)  # type: ignore[arg-type]
            except PackageError as exc:
                # A damaged local version is replaced by a download, not trusted.
                logger.warning("local %s model of %s unreadable (%s): downloading again", kind, detector_id, exc)
                package = None
            if package is not None:
                ids[kind] = package.model_id
        return ids

    async def _download(self, update: KindUpdate) -> bytes:
        try:
            response = await self._client.get(update.url)
        except httpx.HTTPError as exc:
            raise UpdateFailed(f"download of {update.binary_id} failed: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise UpdateFailed(f"download of {update.binary_id} answered HTTP {response.status_code}")
        data = response.content
        if update.sha256 is not None and sha256_bytes(data) != update.sha256.lower():
            raise UpdateFailed(f"download of {update.binary_id} does not match its sha256; refused")
        try:
            await anyio.to_thread.run_sync(check_model_bytes, data, f"{update.kind} {update.binary_id}")
        except IntelliOpticsError as exc:
            raise UpdateFailed(f"download of {update.binary_id} refused: {exc.public_message}") from exc
        return data

    def _write(self, detector_id: str, update: KindUpdate, data: bytes) -> None:
        try:
            pipeline = PipelineConfig.from_dict(update.pipeline)
            metadata = _metadata(detector_id, update)
            write_version(
                self._models_dir,
                detector_id,
                update.kind,
                model_bytes=data,
                pipeline=pipeline,
                metadata=metadata,
                model_id=update.binary_id,
                expected_sha256=update.sha256,
            )
        except PackageError as exc:
            raise UpdateFailed(f"{update.kind} package refused: {exc}") from exc


def _wanted(info: EdgeModelInfo) -> list[KindUpdate]:
    wanted = []
    if info.model_binary_id and info.model_binary_url:
        wanted.append(
            KindUpdate(
                "primary",
                info.model_binary_id,
                info.model_binary_url,
                info.model_binary_sha256,
                info.pipeline_config,
                info.predictor_metadata,
            )
        )
    if info.oodd_model_binary_id and info.oodd_model_binary_url:
        wanted.append(
            KindUpdate(
                "oodd",
                info.oodd_model_binary_id,
                info.oodd_model_binary_url,
                info.oodd_model_binary_sha256,
                info.oodd_pipeline_config,
                info.oodd_predictor_metadata,
            )
        )
    return wanted


def _metadata(detector_id: str, update: KindUpdate) -> PredictorMetadata:
    """The cloud's predictor metadata when it is complete; otherwise a minimal one, so
    a registry entry with sparse metadata does not keep a good model off the edge."""
    data = update.metadata if isinstance(update.metadata, dict) else {}
    known = {name: data[name] for name in PredictorMetadata.__dataclass_fields__ if name in data}
    known.update(detector_id=detector_id, kind=update.kind)
    known.setdefault("trainer", "unknown")
    known.setdefault("backbone_id", "unknown")
    known.setdefault("training_set_size", 0)
    try:
        return PredictorMetadata(**known)
    except TypeError as exc:
        raise PackageError(f"predictor metadata is invalid: {exc}") from exc
