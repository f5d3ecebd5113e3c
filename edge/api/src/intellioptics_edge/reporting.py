"""The edge as the cloud sees it: registration, heartbeats, hourly per-detector counters.

- **Registration** once: ``POST /v1/edges/register``; the id is kept in
  ``<data dir>/edge_id`` so a restarted edge stays the same edge. A heartbeat answered
  404 (the edge was deleted in the cloud) registers again.
- **Heartbeat** every ``heartbeat_interval_s``: software version, the model versions the
  inference service serves per detector, and the outbox counters.
- **Hourly counters** (queries, edge answers, escalations, audits, forwarded to the
  cloud, refused, confident, and a 10-bin histogram of the edge's confidence) are
  counted in memory by :class:`~intellioptics_edge.stats.EdgeStats`, added to SQLite
  every few seconds by the housekeeper (``housekeeping_interval_s``, so a kill -9 loses
  no more than that), before every report and at shutdown, and sent with
  ``POST /v1/edge/report-metrics``. The cloud replaces an hour it already has, so the
  edge always sends the hour's full count and re-sending is harmless.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio
import httpx

from intellioptics_edge.database import EdgeDatabase
from intellioptics_edge.inference_client import InferenceClient
from intellioptics_edge.stats import EdgeStats, hour_key

logger = logging.getLogger(__name__)

_KEEP_HOURS = 7 * 24


def software_version() -> str:
    try:
        return metadata.version("intellioptics-edge")
    except metadata.PackageNotFoundError:
        return "0.0.0"


class HourlyCounters:
    """Hourly counters per detector in ``edge.sqlite3`` (table ``hourly_counters``)."""

    def __init__(self, database: EdgeDatabase) -> None:
        self._db = database

    def add(self, deltas: dict[tuple[str, str], dict[str, int]]) -> None:
        if not deltas:
            return
        with self._db.lock, self._db.transaction(durable=False) as connection:
            for (detector_id, hour), delta in deltas.items():
                row = connection.execute(
                    "SELECT counters FROM hourly_counters WHERE detector_id = ? AND hour = ?", (detector_id, hour)
                ).fetchone()
                counters: dict[str, int] = json.loads(row[0]) if row else {}
                for name, value in delta.items():
                    counters[name] = counters.get(name, 0) + value
                connection.execute(
                    "INSERT INTO hourly_counters (detector_id, hour, counters, reported) VALUES (?, ?, ?, 0)"
                    " ON CONFLICT (detector_id, hour) DO UPDATE SET counters = excluded.counters, reported = 0",
                    (detector_id, hour, json.dumps(counters)),
                )

    def unreported(self, limit: int = 10_000) -> list[tuple[str, str, dict[str, int]]]:
        with self._db.lock:
            rows = self._db.connection.execute(
                "SELECT detector_id, hour, counters FROM hourly_counters WHERE reported = 0 ORDER BY hour LIMIT ?",
                (limit,),
            ).fetchall()
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    def mark_reported(self, keys: list[tuple[str, str]]) -> None:
        cutoff = (datetime.now(UTC) - timedelta(hours=_KEEP_HOURS)).isoformat()
        with self._db.lock, self._db.transaction(durable=False) as connection:
            connection.executemany("UPDATE hourly_counters SET reported = 1 WHERE detector_id = ? AND hour = ?", keys)
            connection.execute("DELETE FROM hourly_counters WHERE hour < ? AND reported = 1", (cutoff,))

    def all(self) -> list[tuple[str, str, dict[str, int]]]:
        with self._db.lock:
            rows = self._db.connection.execute(
                "SELECT detector_id, hour, counters FROM hourly_counters ORDER BY hour, detector_id"
            ).fetchall()
        return [(r[0], r[1], json.loads(r[2])) for r in rows]


class EdgeIdentity:
    """The edge id the cloud gave at registration, kept in a file (atomic write)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self.edge_id: str | None = self._read()

    def _read(self) -> str | None:
        try:
            text = self._path.read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def save(self, edge_id: str) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".edge_id.", dir=self._path.parent)
        with os.fdopen(fd, "w") as handle:
            handle.write(edge_id + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self._path)
        self.edge_id = edge_id


class CloudReporter:
    def __init__(
        self,
        client: httpx.AsyncClient,
        token: str,
        *,
        identity: EdgeIdentity,
        name: str,
        stats: EdgeStats,
        hourly: HourlyCounters,
        inference: InferenceClient,
        detector_ids: Callable[[], list[str]],
        outbox_counters: Callable[[], Awaitable[dict[str, float]]],
    ) -> None:
        self._client = client
        self._token = token
        self._identity = identity
        self._name = name
        self._stats = stats
        self._hourly = hourly
        self._inference = inference
        self._detector_ids = detector_ids
        self._outbox_counters = outbox_counters
        self.last_error: str | None = None
        self.last_heartbeat_at: float | None = None
        self.last_report_at: float | None = None

    @property
    def edge_id(self) -> str | None:
        return self._identity.edge_id

    async def run(self, heartbeat_s: float, report_s: float) -> None:
        loop = asyncio.get_running_loop()
        next_report = loop.time() + report_s
        while True:
            try:
                await self.heartbeat()
                if loop.time() >= next_report:
                    next_report = loop.time() + report_s
                    await self.report_hourly()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the cloud may be down for hours: keep trying
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.info("cloud reporting failed (will retry): %s", self.last_error)
            await asyncio.sleep(heartbeat_s)

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return await self._client.post(path, json=body, headers={"x-api-token": self._token})

    async def ensure_registered(self) -> str:
        if self._identity.edge_id is not None:
            return self._identity.edge_id
        response = await self._post(
            "/v1/edges/register",
            {"name": self._name, "software_version": software_version(), "detector_ids": self._detector_ids()},
        )
        if response.status_code != 201:
            raise RuntimeError(f"edge registration answered HTTP {response.status_code}: {response.text[:200]}")
        edge_id = str(response.json()["id"])
        await anyio.to_thread.run_sync(self._identity.save, edge_id)
        logger.info("registered with the cloud as edge %s", edge_id)
        return edge_id

    async def heartbeat(self) -> None:
        edge_id = await self.ensure_registered()
        states = await self._inference.model_states()
        detectors = []
        for detector_id, state in sorted((states[1] if states else {}).items()):
            primary, oodd = state.serving_versions
            detectors.append({"detector_id": detector_id, "primary_version": primary, "oodd_version": oodd})
        body = {
            "software_version": software_version(),
            "detectors": detectors,
            "counters": await self._outbox_counters(),
        }
        response = await self._post(f"/v1/edges/{edge_id}/heartbeat", body)
        if response.status_code == 404:
            logger.warning("the cloud no longer knows edge %s: registering again", edge_id)
            self._identity.edge_id = None
            edge_id = await self.ensure_registered()
            response = await self._post(f"/v1/edges/{edge_id}/heartbeat", body)
        if response.status_code != 200:
            raise RuntimeError(f"heartbeat answered HTTP {response.status_code}: {response.text[:200]}")
        self.last_heartbeat_at = asyncio.get_running_loop().time()
        self.last_error = None

    async def flush(self) -> None:
        """Move the in-memory hourly counts to SQLite, so that the report sends them all."""
        await anyio.to_thread.run_sync(self._hourly.add, self._stats.take_hourly())

    async def report_hourly(self) -> int:
        await self.flush()
        edge_id = await self.ensure_registered()
        rows = await anyio.to_thread.run_sync(self._hourly.unreported)
        if not rows:
            return 0
        entries = [{"detector_id": d, "hour": h, "counters": c} for d, h, c in rows]
        response = await self._post("/v1/edge/report-metrics", {"edge_id": edge_id, "entries": entries})
        if response.status_code != 202:
            raise RuntimeError(f"report-metrics answered HTTP {response.status_code}: {response.text[:200]}")
        # The current hour keeps counting: it is sent again (in full) next time.
        current = hour_key(datetime.now(UTC))
        done = [(d, h) for d, h, _ in rows if h != current]
        await anyio.to_thread.run_sync(self._hourly.mark_reported, done)
        self.last_report_at = asyncio.get_running_loop().time()
        return len(entries)
