"""What the edge knows about a detector: from the cloud when configured, else edge-config.

Cloud answers are cached per detector and refreshed in the background once older than
``detector_cache_ttl_s`` (the stale value keeps serving meanwhile), so a slow cloud
never sits on the answer path after the first query. The last cloud answer is also kept
in SQLite (:class:`~intellioptics_edge.cloud_cache.KnownDetectors`): an edge restarted
while the cloud is unreachable serves it, as it would have served its cached copy had it
not restarted. With no cloud, or for a detector the cloud never described, the metadata
in ``edge-config.yaml`` is used.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio

from intellioptics_common.confidence import BINARY_CLASS_NAMES
from intellioptics_common.schemas import Detector, DetectorMode
from intellioptics_edge.cloud import CloudClient, CloudUnreachable
from intellioptics_edge.cloud_cache import KnownDetectors
from intellioptics_edge.edge_config import DetectorEntry, EdgeConfigManager
from intellioptics_edge.errors import DetectorNotFoundError

logger = logging.getLogger(__name__)
_STARTED_AT = datetime.now(UTC)


@dataclass(frozen=True)
class DetectorInfo:
    id: str
    name: str
    query: str
    mode: DetectorMode
    class_names: tuple[str, ...]
    confidence_threshold: float
    patience_time: float
    source: str  # "edge-config" or "cloud"

    @classmethod
    def from_entry(cls, entry: DetectorEntry) -> DetectorInfo:
        mode = DetectorMode(entry.mode)
        names = tuple(entry.class_names) if entry.class_names else BINARY_CLASS_NAMES
        return cls(
            id=entry.detector_id,
            name=entry.name or entry.detector_id,
            query=entry.query or "",
            mode=mode,
            class_names=names,
            confidence_threshold=entry.confidence_threshold,
            patience_time=entry.patience_time,
            source="edge-config",
        )

    @classmethod
    def from_cloud(cls, detector: Detector) -> DetectorInfo:
        mode = DetectorMode(detector.mode)
        names: tuple[str, ...] = BINARY_CLASS_NAMES
        configured = (detector.mode_configuration or {}).get("class_names")
        if mode is DetectorMode.MULTI_CLASS and isinstance(configured, list):
            names = tuple(str(name) for name in configured)
        return cls(
            id=detector.id,
            name=detector.name,
            query=detector.query,
            mode=mode,
            class_names=names,
            confidence_threshold=detector.confidence_threshold,
            patience_time=detector.patience_time,
            source="cloud",
        )

    def to_wire(self) -> Detector:
        """The Groundlight ``Detector`` the SDK's ``get_detector`` reads (offline mode)."""
        configuration = {"class_names": list(self.class_names)} if self.mode is DetectorMode.MULTI_CLASS else None
        return Detector(
            id=self.id,
            created_at=_STARTED_AT,
            name=self.name,
            query=self.query,
            group_name="edge",
            confidence_threshold=self.confidence_threshold,
            patience_time=self.patience_time,
            metadata=None,
            mode=self.mode,
            mode_configuration=configuration,
        )


@dataclass(frozen=True)
class _Cached:
    fetched_at: float
    info: DetectorInfo | None  # None: the cloud does not know it


class DetectorDirectory:
    def __init__(
        self,
        config: EdgeConfigManager,
        cloud: CloudClient | None,
        ttl_s: float,
        device_token: str | None,
        known: KnownDetectors | None = None,
    ) -> None:
        self._config = config
        self._cloud = cloud
        self._ttl_s = ttl_s
        self._device_token = device_token
        self._known = known
        self._cache: dict[str, _Cached] = {}
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, detector_id: str, token: str) -> DetectorInfo:
        entry = self._config.current().entry(detector_id)
        local = DetectorInfo.from_entry(entry) if entry is not None else None
        if self._cloud is None:
            if local is None:
                raise DetectorNotFoundError(
                    f"Detector {detector_id} is not configured on this edge (edge-config.yaml lists no such detector), "
                    "and this edge runs offline."
                )
            return local
        cached = self._cache.get(detector_id)
        if cached is None:
            try:
                cached = await self._fetch(detector_id, token)
            except CloudUnreachable as exc:
                cached = await self._recall(detector_id)
                source = "edge-config" if cached is None else "its last cloud metadata"
                logger.warning("detector %s: cloud unreachable (%s); using %s", detector_id, exc, source)
        elif time.monotonic() - cached.fetched_at > self._ttl_s:
            self._refresh_in_background(detector_id, token)
        if cached is not None and cached.info is not None:
            return cached.info
        if local is not None:
            return local
        raise DetectorNotFoundError(f"Detector {detector_id} is not known to this edge or to its cloud.")

    def local(self, detector_id: str) -> DetectorInfo | None:
        entry = self._config.current().entry(detector_id)
        return DetectorInfo.from_entry(entry) if entry is not None else None

    async def _fetch(self, detector_id: str, token: str) -> _Cached:
        assert self._cloud is not None
        detector = await self._cloud.get_detector(detector_id, self._device_token or token)
        cached = _Cached(time.monotonic(), DetectorInfo.from_cloud(detector) if detector is not None else None)
        self._cache[detector_id] = cached
        if self._known is not None:
            if detector is not None:
                await anyio.to_thread.run_sync(self._known.remember, detector)
            else:
                await anyio.to_thread.run_sync(self._known.forget, detector_id)
        return cached

    async def _recall(self, detector_id: str) -> _Cached | None:
        """The metadata an earlier run got from the cloud, cached as stale: the next query
        refreshes it in the background instead of waiting on the cloud again."""
        if self._known is None:
            return None
        detector = await anyio.to_thread.run_sync(self._known.get, detector_id)
        if detector is None:
            return None
        cached = _Cached(float("-inf"), DetectorInfo.from_cloud(detector))
        self._cache[detector_id] = cached
        return cached

    def _refresh_in_background(self, detector_id: str, token: str) -> None:
        if detector_id in self._refreshing:
            return
        self._refreshing.add(detector_id)

        async def refresh() -> None:
            try:
                await self._fetch(detector_id, token)
            except CloudUnreachable as exc:
                logger.info("detector %s refresh failed, keeping the cached copy: %s", detector_id, exc)
            finally:
                self._refreshing.discard(detector_id)

        task = asyncio.get_running_loop().create_task(refresh())
        self._tasks.add(task)  # keep a reference until done (asyncio holds tasks weakly)
        task.add_done_callback(self._tasks.discard)
