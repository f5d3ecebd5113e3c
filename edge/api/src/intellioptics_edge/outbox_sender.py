"""Delivers the outbox (escalations and audits) to the cloud, at least once.

Why it is shaped this way:

- **State only in SQLite.** What is pending, its attempt count and its next attempt
  time live in the outbox table, so a restarted edge carries on where it stopped and a
  cloud outage of any length only makes the queue longer.
- **Idempotent by image query id.** Each item is sent as ``POST /v1/image-queries`` with
  the id the client already got (``image_query_id=iq_…``); the cloud answers a retry of
  a stored id with the stored query (200) and never makes a second one. A crash between
  the cloud's answer and ``mark_delivered`` therefore costs a duplicate request, not a
  duplicate query.
- **Exponential backoff with a cap and jitter** per item, so a cloud coming back is not
  hit by every edge at the same second, and one poisoned item does not block the others
  (items are taken oldest first among those due).
- **Refusals classified once** (:func:`classify`). What can end is retried with the
  backoff: 401/403 (a token can be fixed), 408, 429 (never sooner than its Retry-After),
  5xx, a 409 other than "id taken" (the detector is OFF in the cloud: it can be turned ON
  again), and a 404 while the item is younger than ``not_found_grace_s`` (a detector
  created at the cloud a moment ago may not be synced yet). What cannot succeed however
  often it is sent becomes a dead letter with its reason: 400/422 ``invalid_request``,
  410 ``gone``, 413 ``image_too_large``, 415 ``unsupported_media_type``, 409
  ``image_query_id_taken`` (by another account), ``detector_not_found`` after the grace,
  ``image_missing``. Dead letters stay until a person re-sends or discards them
  (``routes/outbox.py``); they are counted by reason on ``/status`` and ``/metrics``.
- **Concurrent delivery, order kept where it matters.** A pass takes up to
  ``batch_size`` due items and sends them ``concurrency`` at a time; items of one image
  query go one after the other, in order (a query's escalation before anything later
  about it). One HTTP round trip at a time capped the outbox at ~12 items/s.
- **A full disk stalls, visibly.** When marking an item fails for lack of space the pass
  stops and the sender waits with the backoff (not every second); the database's
  ``disk_full`` state is what ``/status`` shows, cleared by the next write that works.
  The cloud dedups the re-send by id.
- **Bounded, but not here.** ``outbox_max_items`` / ``outbox_max_bytes`` are enforced by
  :class:`~intellioptics_edge.background.Housekeeper`, which runs whether or not this
  sender does (an offline edge's outbox must stay bounded too); see ``outbox_store.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from intellioptics_common.schemas import MAX_METADATA_BYTES, EdgeResultReport
from intellioptics_edge.outbox_store import Outbox, OutboxSummary
from intellioptics_edge.store import OutboxItem, is_disk_full

logger = logging.getLogger(__name__)

# Statuses that will never succeed however often the item is sent, with the dead letter's reason.
PERMANENT_STATUSES = {
    400: "invalid_request",
    410: "gone",
    413: "image_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}
# Every reason a dead letter can have ("refused": parked by an edge of before the reasons).
DEAD_LETTER_REASONS = (
    *sorted(set(PERMANENT_STATUSES.values())),
    "image_query_id_taken",
    "detector_not_found",
    "image_missing",
    "refused",
)
# Keys the edge sets in the escalation's metadata (intellioptics_common EdgeEscalationMetadata).
_RESERVED_KEYS = ("edge_result", "escalation_reason", "is_from_edge")


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 1.0
    cap_s: float = 300.0

    def delay(self, attempts: int, jitter: float) -> float:
        """Delay before attempt ``attempts + 1``: base·2^attempts, capped, then scaled by
        ``jitter`` in [0.5, 1] ("equal jitter": never less than half the nominal delay)."""
        nominal = min(self.cap_s, self.base_s * (2 ** min(attempts, 40)))
        return nominal * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))


@dataclass(frozen=True)
class Delivery:
    """What one attempt came to (for logs and tests)."""

    seq: int
    image_query_id: str
    outcome: str  # delivered | retry | dead | stalled (the edge disk is full)
    detail: str = ""


@dataclass(frozen=True)
class Verdict:
    """What to do with a refusal: retry (not before ``not_before_s``), or park with ``reason``."""

    retry: bool
    reason: str = ""
    not_before_s: float = 0.0


def classify(status: int, code: str | None, age_s: float, not_found_grace_s: float, retry_after: str | None) -> Verdict:
    """The one table of what the cloud's refusals mean for an outbox item (see the module doc)."""
    if status in PERMANENT_STATUSES:
        return Verdict(False, PERMANENT_STATUSES[status])
    if status == 409 and code == "image_query_id_taken":
        return Verdict(False, "image_query_id_taken")
    if status == 404:
        return Verdict(True) if age_s < not_found_grace_s else Verdict(False, "detector_not_found")
    wait = float(retry_after) if retry_after and retry_after.isdigit() else 0.0
    return Verdict(True, not_before_s=min(wait, 3600.0))


def escalation_params(item: OutboxItem, edge_id: str | None) -> dict[str, str]:
    """The query string of the cloud's ``POST image-queries`` for one outbox item."""
    request = item.metadata or {}
    params: dict[str, str] = {"detector_id": item.detector_id, "image_query_id": item.image_query_id}
    for key in ("confidence_threshold", "patience_time"):
        if request.get(key) is not None:
            params[key] = str(request[key])
    if request.get("human_review"):
        params["human_review"] = str(request["human_review"])
    if request.get("inspection_id"):
        params["inspection_id"] = str(request["inspection_id"])
    params["metadata"] = _encode_metadata(item, request, edge_id)
    return params


def _encode_metadata(item: OutboxItem, request: dict[str, Any], edge_id: str | None) -> str:
    reserved: dict[str, Any] = {"is_from_edge": True, "escalation_reason": request.get("escalation_reason")}
    answer = item.edge_answer
    if answer is not None:
        report = EdgeResultReport(
            label=str(answer.get("label")),
            confidence=min(max(float(answer.get("confidence", 0.0)), 0.0), 1.0),
            raw_primary_confidence=answer.get("raw_primary_confidence"),
            oodd_in_domain_score=answer.get("oodd_in_domain_score"),
            primary_model_version=answer.get("primary_model_version"),
            oodd_model_version=answer.get("oodd_model_version"),
            edge_id=edge_id,
        )
        reserved["edge_result"] = report.model_dump(exclude_none=True)
    caller = request.get("metadata") if isinstance(request.get("metadata"), dict) else {}
    merged = {**{k: v for k, v in caller.items() if k not in _RESERVED_KEYS}, **reserved}
    raw = json.dumps(merged, separators=(",", ":")).encode()
    if len(raw) > MAX_METADATA_BYTES:
        # The caller's metadata (itself <= 1 KB) plus the edge's report can pass the
        # cloud's limit: the edge's own keys win, the escalation must still arrive.
        logger.warning("metadata of %s too large with the edge report: caller keys left out", item.image_query_id)
        raw = json.dumps({**reserved, "caller_metadata_omitted": True}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class OutboxSender:
    """One background task; :meth:`run_once` is one pass (tests call it directly)."""

    def __init__(
        self,
        outbox: Outbox,
        client: httpx.AsyncClient,
        token: str,
        *,
        policy: RetryPolicy,
        keep_finished_s: float,
        batch_size: int = 20,
        concurrency: int = 8,
        not_found_grace_s: float = 24 * 3600.0,
        edge_id: Callable[[], str | None] = lambda: None,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._outbox = outbox
        self._client = client
        self._token = token
        self._policy = policy
        self._keep_finished_s = keep_finished_s
        self._batch_size = batch_size
        self._concurrency = concurrency
        self._not_found_grace_s = not_found_grace_s
        self._stalls = 0  # passes in a row that a full disk stopped
        self._edge_id = edge_id
        self._jitter = jitter
        self._clock = clock
        self.last_error: str | None = None
        self.last_delivery_at: float | None = None

    async def run(self, interval_s: float) -> None:
        """Forever: a pass, then a pause when nothing was due (a full batch goes again at once);
        after a pass a full disk stopped, the backoff's pause instead."""
        while True:
            try:
                deliveries = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the sender must outlive any one bad pass
                logger.exception("outbox pass failed")
                deliveries = []
            if any(d.outcome == "stalled" for d in deliveries):
                self._stalls += 1
                await asyncio.sleep(max(interval_s, self._policy.delay(self._stalls - 1, self._jitter())))
            elif len(deliveries) < self._batch_size:
                self._stalls = 0
                await asyncio.sleep(interval_s)

    async def run_once(self) -> list[Delivery]:
        now = self._clock()
        if self._keep_finished_s > 0:
            await anyio.to_thread.run_sync(self._outbox.forget_finished, now - self._keep_finished_s)
        items = await anyio.to_thread.run_sync(lambda: self._outbox.pending(self._batch_size, now))
        by_query: dict[str, list[OutboxItem]] = {}
        for item in items:
            by_query.setdefault(item.image_query_id, []).append(item)
        slots = asyncio.Semaphore(self._concurrency)
        stop = asyncio.Event()  # the cloud is down or the disk is full: the rest would fail the same way

        async def send_in_order(group: list[OutboxItem]) -> list[Delivery]:
            done: list[Delivery] = []
            for item in group:
                async with slots:
                    if stop.is_set():
                        break  # not tried: its attempt count stays as it is
                    delivery = await self._deliver(item)
                done.append(delivery)
                if delivery.outcome == "stalled" or delivery.detail.startswith("unreachable"):
                    stop.set()
                if delivery.outcome != "delivered":
                    break  # what comes later about this query waits for it
            return done

        groups = await asyncio.gather(*(send_in_order(group) for group in by_query.values()))
        return [delivery for group in groups for delivery in group]

    async def _deliver(self, item: OutboxItem) -> Delivery:
        try:
            return await self._attempt(item)
        except (OSError, sqlite3.OperationalError) as exc:
            if not is_disk_full(exc):
                raise
            self.last_error = f"edge disk full: {exc}"
            logger.error(
                "outbox %s %s: cannot record the outcome, the edge disk is full", item.kind.value, item.image_query_id
            )
            return Delivery(item.seq, item.image_query_id, "stalled", self.last_error)

    async def _attempt(self, item: OutboxItem) -> Delivery:
        image = await anyio.to_thread.run_sync(self._outbox.image, item)
        if image is None:
            return await self._dead(item, "the image file is missing; nothing can be sent", "image_missing")
        try:
            response = await self._client.post(
                "/v1/image-queries",
                params=escalation_params(item, self._edge_id()),
                content=image,
                headers={"content-type": item.content_type, "x-api-token": self._token},
            )
        except httpx.HTTPError as exc:
            return await self._retry(item, f"unreachable: {type(exc).__name__}: {exc}")
        if response.status_code in (200, 201):
            await anyio.to_thread.run_sync(self._outbox.mark_delivered, item.seq)
            self.last_delivery_at = self._clock()
            self.last_error = None
            return Delivery(item.seq, item.image_query_id, "delivered")
        code, message = _error_detail(response)
        detail = f"HTTP {response.status_code}: {message}"
        verdict = classify(
            response.status_code,
            code,
            self._clock() - item.created_at,
            self._not_found_grace_s,
            response.headers.get("retry-after"),
        )
        if not verdict.retry:
            return await self._dead(item, detail, verdict.reason)
        return await self._retry(item, detail, verdict.not_before_s)

    async def _retry(self, item: OutboxItem, detail: str, not_before_s: float = 0.0) -> Delivery:
        retry_at = self._clock() + max(not_before_s, self._policy.delay(item.attempts, self._jitter()))
        await anyio.to_thread.run_sync(self._outbox.mark_failed, item.seq, detail, retry_at)
        self.last_error = detail
        logger.info("outbox %s %s: %s (attempt %d)", item.kind.value, item.image_query_id, detail, item.attempts + 1)
        return Delivery(item.seq, item.image_query_id, "retry", detail)

    async def _dead(self, item: OutboxItem, detail: str, reason: str) -> Delivery:
        await anyio.to_thread.run_sync(self._outbox.mark_dead, item.seq, detail, reason)
        self.last_error = detail
        logger.error(
            "outbox %s %s parked as a dead letter (%s): %s", item.kind.value, item.image_query_id, reason, detail
        )
        return Delivery(item.seq, item.image_query_id, "dead", detail)


def _error_detail(response: httpx.Response) -> tuple[str | None, str]:
    """(the error body's ``code``, its message) of a refusal."""
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:200]
    if isinstance(body, dict) and body.get("detail") is not None:
        code = body.get("code")
        return (code if isinstance(code, str) else None), str(body["detail"])[:500]
    return None, str(body)[:200]


def summary_as_dict(summary: OutboxSummary) -> dict[str, Any]:
    age = summary.oldest_pending_age_s
    return {
        "pending": {"escalation": summary.pending_escalations, "audit": summary.pending_audits},
        "pending_bytes": summary.pending_bytes,
        "oldest_pending_age_s": None if age is None else round(age, 1),
        "delivered": summary.delivered,
        "retries": summary.retries,
        "dead": summary.dead,
        "retrying": summary.retrying,
        "dead_letters": {"total": sum(summary.dead_letters.values()), "by_reason": summary.dead_letters},
        "resent": summary.resent,
        "discarded": summary.discarded,
        "dropped": {"audit": summary.dropped_audits, "escalation": summary.dropped_escalations},
    }
