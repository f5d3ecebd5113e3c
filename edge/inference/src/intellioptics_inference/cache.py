"""LRU cache of loaded detectors with single-flight background loads and hot swap.

Why this shape:

- Loads (sha256, session creation, warm-up) take from milliseconds to seconds, so they
  run on a small thread pool and never on the event loop or a request's thread.
- One load per detector at a time: every request for a loading detector waits on the
  same future, up to ``load_timeout_s``, then gets a 503 that says why.
- A hot swap is a reference assignment: requests already running keep the old model
  object until they finish; the next lookup gets the new one. No request fails.
- A refused package is remembered by the disk state that produced it, so a corrupt
  version is not re-verified on every request or poll; a new version clears it.
- Eviction only forgets the reference: a request holding the model finishes normally.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from intellioptics_common.errors import IntelliOpticsError
from intellioptics_common.model_package import kind_dir
from intellioptics_common.runtime import DetectorModel, DiskState
from intellioptics_inference.errors import DetectorLoadingError, DetectorNotFoundError, ModelUnusableError
from intellioptics_inference.loader import LoadReport, disk_state
from intellioptics_inference.metrics import InferenceMetrics

logger = logging.getLogger(__name__)

Loader = Callable[[str], LoadReport]


@dataclass(frozen=True)
class Failure:
    disk_state: DiskState
    error: IntelliOpticsError


@dataclass(frozen=True)
class CacheEntryView:
    detector_id: str
    primary_version: int
    oodd_version: int | None
    primary_model_id: str
    oodd_model_id: str | None
    fused: bool
    size_bytes: int
    load_s: float


class DetectorCache:
    def __init__(
        self,
        models_dir: Path,
        loader: Loader,
        metrics: InferenceMetrics,
        *,
        capacity: int,
        max_bytes: int,
        load_timeout_s: float,
        load_workers: int = 1,
    ) -> None:
        self._models_dir = Path(models_dir)
        self._loader = loader
        self._metrics = metrics
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._load_timeout_s = load_timeout_s
        self._executor = concurrent.futures.ThreadPoolExecutor(load_workers, thread_name_prefix="model-load")
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, DetectorModel] = OrderedDict()
        self._loading: dict[str, concurrent.futures.Future[DetectorModel]] = {}
        self._failures: dict[str, Failure] = {}  # nothing usable: cold loads fail fast
        self._refused: dict[str, tuple[DiskState, tuple[str, ...]]] = {}  # newer version refused: no swap retry
        self._dir_stamps: dict[str, tuple[int, int]] = {}

    # --- request path -------------------------------------------------------------

    async def get(self, detector_id: str) -> DetectorModel:
        """The loaded model, loading it first (bounded wait) when needed."""
        with self._lock:
            model = self._entries.get(detector_id)
            if model is not None:
                self._entries.move_to_end(detector_id)
        if model is not None:
            self._metrics.cache_hits.labels(detector_id).inc()
            return model
        future = self.start_load(detector_id)  # raises first for ids with nothing on disk: no series for them
        self._metrics.cache_misses.labels(detector_id).inc()
        waiter = asyncio.wrap_future(future)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), self._load_timeout_s)
        except TimeoutError:
            # The load goes on; make sure its outcome is consumed so asyncio stays quiet.
            waiter.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise DetectorLoadingError(
                f"The model of detector {detector_id} is still loading after {self._load_timeout_s:g} s; retry shortly."
            ) from None

    def start_load(self, detector_id: str, *, refresh: bool = False) -> concurrent.futures.Future[DetectorModel]:
        """Start (or join) the one load of ``detector_id``; raises at once when there is
        nothing to load or the same disk state was already refused."""
        with self._lock:
            running = self._loading.get(detector_id)
            if running is not None:
                return running
            loaded = self._entries.get(detector_id)
            if loaded is not None and not refresh:
                # Loaded between the caller's cache lookup and now: nothing to do.
                done: concurrent.futures.Future[DetectorModel] = concurrent.futures.Future()
                done.set_result(loaded)
                return done
            state = disk_state(self._models_dir, detector_id)
            if state.primary is None:
                raise DetectorNotFoundError(f"No model is installed for detector {detector_id} on this edge.")
            failure = self._failures.get(detector_id)
            if failure is not None and failure.disk_state == state and detector_id not in self._entries:
                raise failure.error
            future = self._executor.submit(self._load, detector_id)
            self._loading[detector_id] = future
            return future

    def check_for_new_version(self, model: DetectorModel) -> None:
        """Cheap per-request check: a rename into a kind directory changes its mtime.

        Called on a worker thread, not the event loop: a ``stat`` releases the GIL, and
        getting it back on a busy loop thread can cost a whole switch interval."""
        detector_id = model.detector_id
        stamps = self._stamps(detector_id)
        if self._dir_stamps.get(detector_id) == stamps:
            return
        self._dir_stamps[detector_id] = stamps
        self.refresh(detector_id, model)

    def _stamps(self, detector_id: str) -> tuple[int, int]:
        out = []
        for kind in ("primary", "oodd"):
            try:
                out.append(os.stat(kind_dir(self._models_dir, detector_id, kind)).st_mtime_ns)
            except OSError:
                out.append(0)
        return out[0], out[1]

    # --- loading --------------------------------------------------------------------

    def _load(self, detector_id: str) -> DetectorModel:
        state = disk_state(self._models_dir, detector_id)
        try:
            report = self._loader(detector_id)
        except IntelliOpticsError as exc:
            self._metrics.load_failures.labels(detector_id).inc()
            logger.warning("load of %s refused: %s", detector_id, exc)
            with self._lock:
                self._failures[detector_id] = Failure(state, exc)
                self._loading.pop(detector_id, None)
            raise
        except Exception as exc:
            # Not remembered as a refusal: it may be transient (memory, a race with pruning).
            with self._lock:
                self._loading.pop(detector_id, None)
            logger.exception("load of %s failed unexpectedly", detector_id)
            raise ModelUnusableError(
                f"The model of detector {detector_id} could not be loaded ({type(exc).__name__}); see the service log."
            ) from exc
        model = report.model
        if report.refused:
            self._metrics.load_failures.labels(detector_id).inc()
        primary_version = model.versions[0]
        self._metrics.load_seconds.labels(detector_id, str(primary_version)).observe(model.load_s)
        with self._lock:
            current = self._entries.get(detector_id)
            self._failures.pop(detector_id, None)
            if report.refused:
                self._refused[detector_id] = (state, report.refused)
            else:
                self._refused.pop(detector_id, None)
            if current is not None and current.versions == model.versions:
                # The newest version on disk was refused and the older one is what we
                # already serve: keep the warm object.
                self._loading.pop(detector_id, None)
                return current
            self._entries[detector_id] = model
            self._entries.move_to_end(detector_id)
            evicted = self._evict_locked(keep=detector_id)
            self._loading.pop(detector_id, None)
            self._update_gauges_locked()
        logger.info(
            "%s %s primary v%s oodd v%s (%s) in %.3f s",
            "swapped in" if current is not None else "loaded",
            detector_id,
            model.versions[0],
            model.versions[1],
            "fused" if model.fused else "separate",
            model.load_s,
        )
        if current is not None:
            self._metrics.swaps.labels(detector_id, str(primary_version)).inc()
        for gone in evicted:
            self._metrics.cache_evictions.labels(gone).inc()
            logger.info("evicted %s from the model cache", gone)
        return model

    def _evict_locked(self, keep: str) -> list[str]:
        evicted: list[str] = []
        while len(self._entries) > 1 and (
            len(self._entries) > self._capacity or self._total_bytes_locked() > self._max_bytes
        ):
            oldest = next(iter(self._entries))
            if oldest == keep:
                break
            del self._entries[oldest]
            self._dir_stamps.pop(oldest, None)
            evicted.append(oldest)
        return evicted

    def _total_bytes_locked(self) -> int:
        return sum(model.size_bytes for model in self._entries.values())

    def _update_gauges_locked(self) -> None:
        self._metrics.loaded.set(len(self._entries))
        self._metrics.loaded_bytes.set(self._total_bytes_locked())

    # --- hot swap ------------------------------------------------------------------

    def refresh(self, detector_id: str, model: DetectorModel | None = None) -> None:
        """Start a background reload when the disk has moved past what is loaded."""
        if model is None:
            with self._lock:
                model = self._entries.get(detector_id)
            if model is None:
                return
        state = disk_state(self._models_dir, detector_id)
        if state.primary is None:
            self.evict(detector_id, reason="its model directory is gone")
            return
        if state == model.disk_state:
            return
        with self._lock:
            failure = self._failures.get(detector_id)
            refused = self._refused.get(detector_id)
            if (failure is not None and failure.disk_state == state) or (refused is not None and refused[0] == state):
                return
        try:
            self.start_load(detector_id, refresh=True)
        except IntelliOpticsError as exc:
            logger.warning("could not start reload of %s: %s", detector_id, exc)

    def poll(self) -> None:
        """Look at every loaded detector once (the watcher calls this every few seconds)."""
        with self._lock:
            loaded = list(self._entries.items())
        for detector_id, model in loaded:
            try:
                self.refresh(detector_id, model)
            except Exception:  # one odd directory must not stop the watcher
                logger.exception("polling %s failed", detector_id)

    def evict(self, detector_id: str, reason: str) -> bool:
        with self._lock:
            gone = self._entries.pop(detector_id, None) is not None
            self._dir_stamps.pop(detector_id, None)
            self._update_gauges_locked()
        if gone:
            self._metrics.cache_evictions.labels(detector_id).inc()
            logger.info("evicted %s: %s", detector_id, reason)
        return gone

    # --- views -----------------------------------------------------------------------

    def loaded(self, detector_id: str) -> DetectorModel | None:
        with self._lock:
            return self._entries.get(detector_id)

    def is_loading(self, detector_id: str) -> bool:
        with self._lock:
            return detector_id in self._loading

    def failure(self, detector_id: str) -> IntelliOpticsError | None:
        with self._lock:
            failure = self._failures.get(detector_id)
        return failure.error if failure is not None else None

    def refused_versions(self, detector_id: str) -> tuple[str, ...]:
        """Why versions newer than the loaded one were refused (empty when none were)."""
        with self._lock:
            refused = self._refused.get(detector_id)
        return refused[1] if refused is not None else ()

    def snapshot(self) -> list[CacheEntryView]:
        """Loaded detectors, least recently used first."""
        with self._lock:
            models = list(self._entries.values())
        return [
            CacheEntryView(
                detector_id=m.detector_id,
                primary_version=m.primary.version,
                oodd_version=None if m.oodd is None else m.oodd.version,
                primary_model_id=m.primary.model_id,
                oodd_model_id=None if m.oodd is None else m.oodd.model_id,
                fused=m.fused,
                size_bytes=m.size_bytes,
                load_s=m.load_s,
            )
            for m in models
        ]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
