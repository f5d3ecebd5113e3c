"""The edge's background work, started and stopped by the app's lifespan.

Toward the cloud: the outbox sender, the model updater and the cloud reporter (see their
modules). They run only with a cloud and a device token (``INTELLIOPTICS_DEVICE_TOKEN``):
the edge's own identity, never a caller's token, because they act when no caller is there.

Local upkeep, in every mode: the :class:`Housekeeper` keeps the outbox within its limits
and moves the hourly counters to SQLite. It must not depend on the sender, because an
edge that is offline or has no device token is exactly the one whose outbox only grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from intellioptics_edge.database import EdgeDatabase
from intellioptics_edge.edge_config import EdgeConfigManager
from intellioptics_edge.inference_client import InferenceClient
from intellioptics_edge.model_updater import ModelUpdater
from intellioptics_edge.outbox_sender import OutboxSender, RetryPolicy, summary_as_dict
from intellioptics_edge.outbox_store import Outbox, OutboxKind
from intellioptics_edge.reporting import CloudReporter, EdgeIdentity, HourlyCounters
from intellioptics_edge.settings import EdgeSettings
from intellioptics_edge.stats import EdgeStats

logger = logging.getLogger(__name__)


class Housekeeper:
    """Every ``interval_s``: the data disk's free space, hourly counters to SQLite, then the outbox bound.

    The bound is the outbox's stated policy (:meth:`Outbox.enforce_limits`): the oldest
    audits are dropped (counted on ``/status`` and ``/metrics``, logged at ERROR);
    escalations never are: the outbox is then *full* and new escalations are refused. Flushing the counters here
    rather than only at each cloud report means a kill -9 loses at most one interval of
    counts, and an offline edge keeps them at all.
    """

    def __init__(
        self, outbox: Outbox, stats: EdgeStats, hourly: HourlyCounters, *, max_items: int, max_bytes: int
    ) -> None:
        self._outbox = outbox
        self._stats = stats
        self._hourly = hourly
        self._max_items = max_items
        self._max_bytes = max_bytes

    async def run(self, interval_s: float) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a full disk now must not end the upkeep for good
                logger.exception("housekeeping pass failed")
            await asyncio.sleep(interval_s)

    async def run_once(self) -> dict[str, int]:
        """One pass; returns how many items of each kind were dropped."""
        disk_was_full = self._outbox.disk_full is not None
        disk_full = await anyio.to_thread.run_sync(self._outbox.check_disk)
        if disk_full is not None and not disk_was_full:
            logger.error("the edge data disk is full (%s): answers are not stored, the outbox stalls", disk_full.detail)
        elif disk_full is None and disk_was_full:
            logger.warning("the edge data disk has room again")
        await self.flush()
        was_full = self._outbox.full
        dropped = await anyio.to_thread.run_sync(
            lambda: self._outbox.enforce_limits(max_items=self._max_items, max_bytes=self._max_bytes)
        )
        if dropped[OutboxKind.AUDIT.value]:
            logger.error(
                "outbox over its bound (max %d items / %d bytes): dropped the %d oldest audits",
                self._max_items,
                self._max_bytes,
                dropped[OutboxKind.AUDIT.value],
            )
        if self._outbox.full and not was_full:
            logger.error("outbox full of escalations: new escalations are refused (503) until it drains")
        return dropped

    async def flush(self) -> None:
        """Move the in-memory hourly counts to SQLite."""
        await anyio.to_thread.run_sync(self._hourly.add, self._stats.take_hourly())


@dataclass
class Background:
    housekeeper: Housekeeper
    sender: OutboxSender | None = None
    updater: ModelUpdater | None = None
    reporter: CloudReporter | None = None
    disabled_reason: str | None = None
    _clients: list[httpx.AsyncClient] = field(default_factory=list)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.housekeeper.flush()  # keep this hour's counts across the restart
        for client in self._clients:
            await client.aclose()

    def status(self) -> dict[str, Any]:
        updater = self.updater.counters if self.updater else None
        return {
            "enabled": self.disabled_reason is None,
            "disabled_reason": self.disabled_reason,
            "sender_last_error": self.sender.last_error if self.sender else None,
            "edge_id": self.reporter.edge_id if self.reporter else None,
            "reporter_last_error": self.reporter.last_error if self.reporter else None,
            "model_updates": None
            if updater is None
            else {
                "checks": updater.checks,
                "updates": updater.updates,
                "failures": updater.failures,
                "last_error": updater.last_error,
                "installed": updater.installed,
            },
        }


def start_background(
    settings: EdgeSettings,
    *,
    database: EdgeDatabase,
    outbox: Outbox,
    config: EdgeConfigManager,
    inference: InferenceClient,
    stats: EdgeStats,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Background:
    hourly = HourlyCounters(database)
    housekeeper = Housekeeper(
        outbox, stats, hourly, max_items=settings.outbox_max_items, max_bytes=settings.outbox_max_bytes
    )
    upkeep = asyncio.create_task(housekeeper.run(settings.housekeeping_interval_s), name="housekeeping")
    if settings.offline:
        reason = "offline: no INTELLIOPTICS_CLOUD_URL"
        return Background(housekeeper, disabled_reason=reason, _tasks=[upkeep])
    token = settings.device_token
    if not token:
        logger.warning("INTELLIOPTICS_DEVICE_TOKEN is not set: escalations stay in the outbox, no model updates")
        return Background(housekeeper, disabled_reason="no INTELLIOPTICS_DEVICE_TOKEN", _tasks=[upkeep])
    client = httpx.AsyncClient(
        base_url=settings.cloud_base,
        timeout=httpx.Timeout(settings.outbox_request_timeout_s, connect=settings.cloud_connect_timeout_s),
        transport=transport,
    )
    identity = EdgeIdentity(settings.edge_id_path)
    reporter = CloudReporter(
        client,
        token,
        identity=identity,
        name=settings.edge_name,
        stats=stats,
        hourly=hourly,
        inference=inference,
        detector_ids=lambda: [d.detector_id for d in config.current().detectors],
        outbox_counters=lambda: outbox_counters(outbox),
    )
    sender = OutboxSender(
        outbox,
        client,
        token,
        policy=RetryPolicy(settings.outbox_backoff_base_s, settings.outbox_backoff_cap_s),
        keep_finished_s=settings.outbox_keep_finished_s,
        batch_size=settings.outbox_batch_size,
        concurrency=settings.outbox_concurrency,
        items_per_request=settings.outbox_items_per_request,
        not_found_grace_s=settings.outbox_not_found_grace_s,
        edge_id=lambda: identity.edge_id,
    )
    try:
        # The inference service reports an absent directory as unreadable: make it exist.
        settings.models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        logger.error("models directory %s cannot be created: %s", settings.models_dir, exc)
    downloads = httpx.AsyncClient(
        base_url=settings.cloud_base,
        timeout=httpx.Timeout(settings.model_download_timeout_s, connect=settings.cloud_connect_timeout_s),
        transport=transport,
    )
    updater = ModelUpdater(
        downloads,
        token,
        settings.models_dir,
        detector_ids=lambda: [d.detector_id for d in config.current().detectors],
        refresh_rate=lambda: config.current().global_config.refresh_rate,
    )
    background = Background(
        housekeeper, sender=sender, updater=updater, reporter=reporter, _clients=[client, downloads]
    )
    background._tasks = [
        upkeep,
        asyncio.create_task(sender.run(settings.outbox_poll_interval_s), name="outbox-sender"),
        asyncio.create_task(updater.run(), name="model-updater"),
        asyncio.create_task(
            reporter.run(settings.heartbeat_interval_s, settings.metrics_report_interval_s), name="cloud-reporter"
        ),
    ]
    return background


async def outbox_counters(outbox: Outbox) -> dict[str, float]:
    """The outbox numbers as flat counters (heartbeat body, /metrics labels)."""
    summary = summary_as_dict(await asyncio.to_thread(outbox.summary))
    return {
        "outbox_pending_escalations": summary["pending"]["escalation"],
        "outbox_pending_audits": summary["pending"]["audit"],
        "outbox_delivered": summary["delivered"],
        "outbox_retries": summary["retries"],
        "outbox_dead": summary["dead"],
        "outbox_dropped_audits": summary["dropped"]["audit"],
        "outbox_dropped_escalations": summary["dropped"]["escalation"],
        "outbox_pending_bytes": summary["pending_bytes"],
        "outbox_oldest_pending_age_s": summary["oldest_pending_age_s"] or 0.0,
        "outbox_retrying": summary["retrying"],
        "outbox_dead_letters": summary["dead_letters"]["total"],
        "outbox_resent": summary["resent"],
        "outbox_discarded": summary["discarded"],
        "outbox_full": float(outbox.full),
        "edge_disk_full": float(outbox.disk_full is not None),
    }
