"""The edge's background work toward the cloud, started and stopped by the app's lifespan:
the outbox sender, the model updater and the cloud reporter (see their modules).

They run only with a cloud and a device token (``INTELLIOPTICS_DEVICE_TOKEN``): the
edge's own identity, never a caller's token, because they act when no caller is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

from intellioptics_edge.edge_config import EdgeConfigManager
from intellioptics_edge.inference_client import InferenceClient
from intellioptics_edge.model_updater import ModelUpdater
from intellioptics_edge.outbox_sender import OutboxLimits, OutboxSender, RetryPolicy, summary_as_dict
from intellioptics_edge.reporting import CloudReporter, EdgeIdentity, HourlyCounters
from intellioptics_edge.settings import EdgeSettings
from intellioptics_edge.stats import EdgeStats
from intellioptics_edge.store import EdgeDatabase, Outbox

logger = logging.getLogger(__name__)


@dataclass
class Background:
    sender: OutboxSender | None = None
    updater: ModelUpdater | None = None
    reporter: CloudReporter | None = None
    hourly: HourlyCounters | None = None
    disabled_reason: str | None = None
    _clients: list[httpx.AsyncClient] = field(default_factory=list)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.reporter is not None:
            with contextlib.suppress(Exception):
                await self.reporter.flush()  # keep this hour's counts across the restart
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
    if settings.offline:
        return Background(hourly=hourly, disabled_reason="offline: no INTELLIOPTICS_CLOUD_URL")
    token = settings.device_token
    if not token:
        logger.warning("INTELLIOPTICS_DEVICE_TOKEN is not set: escalations stay in the outbox, no model updates")
        return Background(hourly=hourly, disabled_reason="no INTELLIOPTICS_DEVICE_TOKEN")
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
        limits=OutboxLimits(settings.outbox_max_items, settings.outbox_max_bytes, settings.outbox_keep_finished_s),
        batch_size=settings.outbox_batch_size,
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
        sender=sender, updater=updater, reporter=reporter, hourly=hourly, _clients=[client, downloads]
    )
    background._tasks = [
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
    }
