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
- **Batched and concurrent, order kept where it matters.** A pass takes up to
  ``batch_size`` due items and sends them as ``POST /v1/image-queries/batch`` requests
  of up to ``items_per_request`` (one transaction at the cloud for all of them),
  ``concurrency`` requests at a time. Only the oldest item of an image query goes in a
  pass; a later one about the same query (an audit after its escalation) waits for the
  next pass, so it never overtakes. A cloud without the batch route (404/405) is sent
  one item per request from then on. One request per item, one at a time, capped the
  outbox at ~12 items/s (docs/reliability.md has the figures now).
- **Depth travels as it came.** An item of a query sent with a depth map carries the
  map's bytes as the camera sent them (16-bit PNG or float32 ``.npy``, already checked
  by the edge): a multipart ``depth`` part beside ``image``, or ``depth`` (base64) in a
  batch item. Not re-encoded as a 16-bit PNG: whole millimetres would round away the
  0.5-1.5 mm dents the depth models are trained to find, and the edge's hot path would
  pay an encode per escalation. Should the depth file be gone (a disk fault) the image is
  sent alone and the loss logged: a person can still label it.
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
from intellioptics_edge.cloud import depth_parts
from intellioptics_edge.database import is_disk_full
from intellioptics_edge.outbox_store import Outbox, OutboxItem, OutboxSummary

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
# A batch request's images stay under this (the cloud refuses bodies over 64 MiB of base64).
MAX_REQUEST_BYTES = 24 * 1024 * 1024
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


def _scores(probabilities: object) -> dict[str, float] | None:
    """The per-class scores for the reviewer, rounded to what a person reads (and to keep
    the metadata small); none for more classes than a panel shows."""
    if not isinstance(probabilities, dict) or not probabilities or len(probabilities) > 50:
        return None
    return {str(name): round(float(value), 4) for name, value in probabilities.items()}


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
            probabilities=_scores(answer.get("probabilities")),
        )
        reserved["edge_result"] = report.model_dump(exclude_none=True)
    metadata = request.get("metadata")
    caller = metadata if isinstance(metadata, dict) else {}
    merged = {**{k: v for k, v in caller.items() if k not in _RESERVED_KEYS}, **reserved}
    raw = json.dumps(merged, separators=(",", ":")).encode()
    if len(raw) > MAX_METADATA_BYTES and "probabilities" in reserved.get("edge_result", {}):
        # The per-class scores are a courtesy to reviewers: they go first, not the caller's keys.
        reserved["edge_result"] = {k: v for k, v in reserved["edge_result"].items() if k != "probabilities"}
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
        items_per_request: int = 1,
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
        self._items_per_request = items_per_request
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
        oldest: dict[str, OutboxItem] = {}
        for item in items:
            oldest.setdefault(item.image_query_id, item)  # later items of a query wait for the next pass
        due = list(oldest.values())
        size = self._items_per_request
        chunks = [due[i : i + size] for i in range(0, len(due), size)]
        slots = asyncio.Semaphore(self._concurrency)
        stop = asyncio.Event()  # the cloud is down or the disk is full: the rest would fail the same way

        async def send(chunk: list[OutboxItem]) -> list[Delivery]:
            async with slots:
                if stop.is_set():
                    return []  # not tried: their attempt counts stay as they are
                deliveries = await self._deliver(chunk)
            if any(d.outcome == "stalled" or d.detail.startswith("unreachable") for d in deliveries):
                stop.set()
            return deliveries

        sent = await asyncio.gather(*(send(chunk) for chunk in chunks))
        return [delivery for deliveries in sent for delivery in deliveries]

    async def _deliver(self, chunk: list[OutboxItem]) -> list[Delivery]:
        try:
            if len(chunk) == 1 or self._items_per_request == 1:
                return [await self._attempt(item) for item in chunk]
            return await self._attempt_batch(chunk)
        except (OSError, sqlite3.OperationalError) as exc:
            if not is_disk_full(exc):
                raise
            self.last_error = f"edge disk full: {exc}"
            logger.error("outbox: cannot record what the cloud answered, the edge disk is full")
            return [Delivery(item.seq, item.image_query_id, "stalled", self.last_error) for item in chunk]

    def _files(self, item: OutboxItem) -> tuple[bytes | None, bytes | None]:
        """The item's image and depth map (None: it has none, or its file is gone)."""
        image, depth = self._outbox.image(item), self._outbox.depth(item)
        if image is not None and item.depth_ref is not None and depth is None:
            logger.error("outbox %s: the depth file is missing; the image goes alone", item.image_query_id)
        return image, depth

    async def _attempt_batch(self, chunk: list[OutboxItem]) -> list[Delivery]:
        files = await anyio.to_thread.run_sync(lambda: [self._files(item) for item in chunk])
        deliveries = []
        sendable: list[tuple[OutboxItem, bytes, bytes | None]] = []
        for item, (image, depth) in zip(chunk, files, strict=True):
            if image is None:
                deliveries.append(
                    await self._dead(item, "the image file is missing; nothing can be sent", "image_missing")
                )
            else:
                sendable.append((item, image, depth))
        size = sum(len(image) + len(depth or b"") for _, image, depth in sendable)
        if size > MAX_REQUEST_BYTES and len(sendable) > 1:
            half = len(sendable) // 2
            for part in (sendable[:half], sendable[half:]):
                deliveries += await self._attempt_batch([item for item, _, _ in part])
            return deliveries
        if not sendable:
            return deliveries
        edge_id = self._edge_id()
        body = {"items": [_batch_item(item, image, depth, edge_id) for item, image, depth in sendable]}
        try:
            response = await self._client.post(
                "/v1/image-queries/batch", json=body, headers={"x-api-token": self._token}
            )
        except httpx.HTTPError as exc:
            return deliveries + [
                await self._retry(item, f"unreachable: {type(exc).__name__}: {exc}") for item, _, _ in sendable
            ]
        if response.status_code in (404, 405):
            logger.warning("the cloud has no batch route (HTTP %d): one item per request", response.status_code)
            self._items_per_request = 1
            return deliveries + [await self._attempt(item) for item, _, _ in sendable]
        if response.status_code != 200:
            code, message = _error_detail(response)
            for item, _, _ in sendable:
                deliveries.append(
                    await self._refused(item, response.status_code, code, message, response.headers.get("retry-after"))
                )
            return deliveries
        answers = {r.get("image_query_id"): r for r in response.json().get("results", []) if isinstance(r, dict)}
        delivered = []
        for item, _, _ in sendable:
            answer = answers.get(item.image_query_id)
            if answer is None:
                deliveries.append(await self._retry(item, "the cloud's batch answer left this item out"))
            elif answer.get("status") in (200, 201):
                delivered.append(item)
            else:
                status = int(answer.get("status") or 500)
                message = str(answer.get("detail") or "")[:500]
                deliveries.append(await self._refused(item, status, answer.get("code"), message, None))
        if delivered:
            await anyio.to_thread.run_sync(lambda: self._outbox.mark_delivered(*(item.seq for item in delivered)))
            self.last_delivery_at = self._clock()
            self.last_error = None
        return deliveries + [Delivery(item.seq, item.image_query_id, "delivered") for item in delivered]

    async def _attempt(self, item: OutboxItem) -> Delivery:
        image, depth = await anyio.to_thread.run_sync(self._files, item)
        if image is None:
            return await self._dead(item, "the image file is missing; nothing can be sent", "image_missing")
        params = escalation_params(item, self._edge_id())
        try:
            if depth is None:
                response = await self._client.post(
                    "/v1/image-queries",
                    params=params,
                    content=image,
                    headers={"content-type": item.content_type, "x-api-token": self._token},
                )
            else:  # the multipart body the cloud takes as the edge does (intellioptics_common.rgbd)
                response = await self._client.post(
                    "/v1/image-queries",
                    params=params,
                    files=depth_parts(image, item.content_type, depth),
                    headers={"x-api-token": self._token},
                )
        except httpx.HTTPError as exc:
            return await self._retry(item, f"unreachable: {type(exc).__name__}: {exc}")
        if response.status_code in (200, 201):
            await anyio.to_thread.run_sync(self._outbox.mark_delivered, item.seq)
            self.last_delivery_at = self._clock()
            self.last_error = None
            return Delivery(item.seq, item.image_query_id, "delivered")
        code, message = _error_detail(response)
        return await self._refused(item, response.status_code, code, message, response.headers.get("retry-after"))

    async def _refused(
        self, item: OutboxItem, status: int, code: str | None, message: str, retry_after: str | None
    ) -> Delivery:
        detail = f"HTTP {status}: {message}"
        verdict = classify(status, code, self._clock() - item.created_at, self._not_found_grace_s, retry_after)
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


def _batch_item(item: OutboxItem, image: bytes, depth: bytes | None, edge_id: str | None) -> dict[str, str]:
    entry = {
        **escalation_params(item, edge_id),
        "content_type": item.content_type,
        "image": base64.b64encode(image).decode(),
    }
    if depth is not None:
        entry["depth"] = base64.b64encode(depth).decode()
    return entry


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
