"""The outbox table: what must reach the cloud, and what could not (dead letters).

Rows live in the edge database (:mod:`intellioptics_edge.database`, same connection and
lock). An item is *pending* until delivered; *retrying* once it has failed at least once;
a *dead letter* when the cloud refused it for a reason that cannot end (its reason is
kept, see :mod:`intellioptics_edge.outbox_sender`). A dead letter stays, with its image,
until a person re-sends it (it becomes pending again) or discards it with a reason
(``/edge-api/v1/outbox/dead-letters``); nothing leaves the outbox unseen.

The bound (``outbox_max_items`` / ``outbox_max_bytes``) drops the oldest *audits* only:
an audit is a sample of a confident answer. Escalations are never dropped: while they
alone fill the outbox it is *full* (:attr:`Outbox.full`) and the edge refuses work that
would add one (503 + Retry-After, see ``service.py``) until the sender makes room.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

from intellioptics_edge.database import PARKED, PENDING, DiskFull, EdgeDatabase, bump_counter


class OutboxKind(str, Enum):
    ESCALATION = "escalation"
    AUDIT = "audit"


@dataclass(frozen=True)
class OutboxEntry:
    """One thing to queue with an answered query (see :meth:`QueryStore.save`)."""

    kind: OutboxKind
    edge_answer: dict[str, Any] | None
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class OutboxItem:
    seq: int
    kind: OutboxKind
    image_query_id: str
    detector_id: str
    image_ref: str  # name of the image file (the image query id); see Outbox.image
    content_type: str
    edge_answer: dict[str, Any] | None
    metadata: dict[str, Any] | None
    created_at: float
    attempts: int
    depth_ref: str | None = None  # name of the depth map's file (the bytes as sent), None: no depth


def insert_outbox(
    connection: sqlite3.Connection,
    *,
    kind: OutboxKind,
    image_query_id: str,
    detector_id: str,
    content_type: str,
    edge_answer: dict[str, Any] | None,
    metadata: dict[str, Any] | None,
    now: float,
    image_bytes: int = 0,
    depth_ref: str | None = None,
) -> int:
    """``image_bytes``: what the item holds on disk, image and depth map together (the outbox's bound)."""
    cursor = connection.execute(
        "INSERT INTO outbox (kind, image_query_id, detector_id, image_ref, content_type, edge_answer, metadata,"
        " created_at, next_attempt_at, image_bytes, depth_ref) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            OutboxKind(kind).value,
            image_query_id,
            detector_id,
            image_query_id,
            content_type,
            None if edge_answer is None else json.dumps(edge_answer),
            None if metadata is None else json.dumps(metadata),
            now,
            now,
            image_bytes,
            depth_ref,
        ),
    )
    return int(cursor.lastrowid or 0)


class DeadLetter(NamedTuple):
    """A parked outbox item (the first three fields are what a log line needs)."""

    image_query_id: str
    kind: str
    last_error: str | None
    seq: int
    detector_id: str
    reason: str
    created_at: float
    dead_at: float
    attempts: int


@dataclass(frozen=True)
class OutboxSummary:
    pending_escalations: int
    pending_audits: int
    pending_bytes: int
    oldest_pending_age_s: float | None
    # Since the database was created (persisted, so they survive restarts):
    delivered: int
    retries: int
    dead: int
    dropped_audits: int
    dropped_escalations: int  # only from before escalations stopped being dropped
    resent: int = 0
    discarded: int = 0
    # Now: pending items tried at least once, and parked dead letters by reason.
    retrying: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)


_ITEM_COLUMNS = (
    "seq, kind, image_query_id, detector_id, image_ref, content_type, edge_answer, metadata, created_at, attempts,"
    " depth_ref"
)
_DEAD_COLUMNS = "image_query_id, kind, last_error, seq, detector_id, COALESCE(dead_reason, 'refused'), created_at, dead_at, attempts"


def _item(r: tuple) -> OutboxItem:
    return OutboxItem(
        seq=r[0],
        kind=OutboxKind(r[1]),
        image_query_id=r[2],
        detector_id=r[3],
        image_ref=r[4],
        content_type=r[5],
        edge_answer=None if r[6] is None else json.loads(r[6]),
        metadata=None if r[7] is None else json.loads(r[7]),
        created_at=r[8],
        attempts=r[9],
        depth_ref=r[10],
    )


class Outbox:
    """Durable queue of what must reach the cloud (delivery is the outbox sender's job).

    ``image_ref`` names an image file of the store (read it with :meth:`image`); the file
    stays until the row is delivered (or discarded) and the answered query has aged out.
    ``depth_ref``, when set, names the query's depth map beside it (:meth:`depth`), kept
    the same way and delivered with the image.
    """

    def __init__(self, database: EdgeDatabase) -> None:
        self._db = database
        # Set by enforce_limits (the housekeeper, every few seconds): escalations alone fill the outbox.
        self.full = False

    @property
    def disk_full(self) -> DiskFull | None:
        """Since when the edge database's disk has been full (None: it is not)."""
        return self._db.disk_full

    def check_disk(self) -> DiskFull | None:
        return self._db.check_free_space()

    def enqueue(
        self,
        *,
        kind: OutboxKind,
        image_query_id: str,
        detector_id: str,
        image: bytes | None = None,
        content_type: str = "image/jpeg",
        edge_answer: dict | None = None,
        metadata: dict | None = None,
    ) -> int:
        """Add one item, fsynced before returning; ``image`` is written unless None (already stored)."""
        with self._db.lock:
            if image is not None:
                self._db.write_image(image_query_id, image, durable=True)
            try:
                with self._db.transaction(durable=True) as connection:
                    return insert_outbox(
                        connection,
                        kind=kind,
                        image_query_id=image_query_id,
                        detector_id=detector_id,
                        content_type=content_type,
                        edge_answer=edge_answer,
                        metadata=metadata,
                        now=time.time(),
                        image_bytes=len(image or b""),
                    )
            except BaseException:
                if image is not None:
                    self._db.delete_image(image_query_id)  # no row, no file
                raise

    def pending(self, limit: int = 50, now: float | None = None) -> list[OutboxItem]:
        """Undelivered items whose next attempt is due, oldest first."""
        with self._db.lock:
            rows = self._db.connection.execute(
                f"SELECT {_ITEM_COLUMNS} FROM outbox WHERE {PENDING} AND next_attempt_at <= ? ORDER BY seq LIMIT ?",
                (time.time() if now is None else now, limit),
            ).fetchall()
        return [_item(r) for r in rows]

    def image(self, item: OutboxItem) -> bytes | None:
        return self._db.read_image(item.image_ref)

    def depth(self, item: OutboxItem) -> bytes | None:
        """The item's depth map as sent (None: it has none, or its file is gone)."""
        return None if item.depth_ref is None else self._db.read_image(item.depth_ref)

    def mark_delivered(self, *seqs: int) -> None:
        """Delivered, in one transaction however many (a batch of the sender)."""
        if not seqs:
            return
        with self._db.lock, self._db.transaction(durable=False) as connection:
            now = time.time()
            connection.executemany("UPDATE outbox SET delivered_at = ? WHERE seq = ?", [(now, seq) for seq in seqs])
            bump_counter(connection, "delivered", len(seqs))

    def mark_failed(self, seq: int, error: str, retry_at: float) -> None:
        with self._db.lock, self._db.transaction(durable=False) as connection:
            connection.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE seq = ?",
                (error[:2000], retry_at, seq),
            )
            bump_counter(connection, "retries")

    def mark_dead(self, seq: int, error: str, reason: str = "refused") -> None:
        """Park an item the cloud will not accept (a dead letter): kept, not retried, until a person acts."""
        with self._db.lock, self._db.transaction(durable=False) as connection:
            connection.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, dead_at = ?, dead_reason = ? WHERE seq = ?",
                (error[:2000], time.time(), reason, seq),
            )
            bump_counter(connection, "dead")

    def dead_letters(self, limit: int = 50, offset: int = 0, reason: str | None = None) -> list[DeadLetter]:
        """Parked items, the most recently queued first (optionally of one reason)."""
        where, args = (f"{PARKED} AND COALESCE(dead_reason, 'refused') = ?", [reason]) if reason else (PARKED, [])
        with self._db.lock:
            rows = self._db.connection.execute(
                f"SELECT {_DEAD_COLUMNS} FROM outbox WHERE {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return [DeadLetter(*r) for r in rows]

    def resend(self, seqs: list[int] | None = None, reason: str | None = None) -> int:
        """Make dead letters pending again, due now, with a fresh backoff: the ``seqs`` given,
        else every one (of ``reason`` when given). Returns how many."""
        where, args = PARKED, list[int | str]()
        if seqs is not None:
            where += f" AND seq IN ({','.join('?' * len(seqs))})"
            args.extend(seqs)
        if reason is not None:
            where += " AND COALESCE(dead_reason, 'refused') = ?"
            args.append(reason)
        with self._db.lock, self._db.transaction(durable=False) as connection:
            cursor = connection.execute(
                "UPDATE outbox SET dead_at = NULL, dead_reason = NULL, attempts = 0, next_attempt_at = ?"
                f" WHERE {where}",
                [time.time(), *args],
            )
            if cursor.rowcount:
                bump_counter(connection, "resent", cursor.rowcount)
            return cursor.rowcount

    def discard(self, seq: int, reason: str) -> bool:
        """Give up on one dead letter, saying why (kept as a discarded row until it ages out)."""
        with self._db.lock, self._db.transaction(durable=False) as connection:
            cursor = connection.execute(
                f"UPDATE outbox SET discarded_at = ?, discard_reason = ? WHERE seq = ? AND {PARKED}",
                (time.time(), reason[:500], seq),
            )
            if cursor.rowcount:
                bump_counter(connection, "discarded")
            return cursor.rowcount == 1

    def enforce_limits(self, *, max_items: int, max_bytes: int) -> dict[str, int]:
        """Drop the oldest pending audits until within both limits; escalations are never
        dropped: when they alone pass a limit, :attr:`full` is set (cleared once under it).
        Returns how many of each kind were dropped (the caller logs them)."""
        dropped = {kind.value: 0 for kind in OutboxKind}
        with self._db.lock:
            connection = self._db.connection
            count, size = connection.execute(
                f"SELECT COUNT(*), COALESCE(SUM(image_bytes), 0) FROM outbox WHERE {PENDING}"
            ).fetchone()
            doomed: list[int] = []
            if count > max_items or size > max_bytes:
                rows = connection.execute(
                    f"SELECT seq, image_bytes FROM outbox WHERE {PENDING} AND kind = ? ORDER BY seq",
                    (OutboxKind.AUDIT.value,),
                ).fetchall()
                for seq, image_bytes in rows:
                    if count <= max_items and size <= max_bytes:
                        break
                    doomed.append(seq)
                    count, size = count - 1, size - image_bytes
            # Full: the escalations alone leave no room for one more (audits can still be dropped).
            escalations, escalation_bytes = connection.execute(
                f"SELECT COUNT(*), COALESCE(SUM(image_bytes), 0) FROM outbox WHERE {PENDING} AND kind = ?",
                (OutboxKind.ESCALATION.value,),
            ).fetchone()
            self.full = escalations >= max_items or escalation_bytes >= max_bytes
            if doomed:
                dropped[OutboxKind.AUDIT.value] = len(doomed)
                with self._db.transaction(durable=False):
                    connection.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq in doomed])
                    bump_counter(connection, "dropped_audit", len(doomed))
        return dropped

    def forget_finished(self, older_than: float) -> int:
        """Delete delivered and discarded rows finished before ``older_than`` (their counters
        stay). Dead letters are kept however old: only a person ends them."""
        with self._db.lock:
            cursor = self._db.connection.execute(
                "DELETE FROM outbox WHERE (delivered_at IS NOT NULL AND delivered_at < ?)"
                " OR (discarded_at IS NOT NULL AND discarded_at < ?)",
                (older_than, older_than),
            )
            return cursor.rowcount

    def summary(self, now: float | None = None) -> OutboxSummary:
        """Everything the status page and /metrics show about the outbox."""
        now = time.time() if now is None else now
        with self._db.lock:
            connection = self._db.connection
            oldest, size, retrying = connection.execute(
                "SELECT MIN(created_at), COALESCE(SUM(image_bytes), 0), COALESCE(SUM(attempts > 0), 0)"
                f" FROM outbox WHERE {PENDING}"
            ).fetchone()
            counters = dict(connection.execute("SELECT name, value FROM outbox_counters").fetchall())
            by_reason = connection.execute(
                f"SELECT COALESCE(dead_reason, 'refused'), COUNT(*) FROM outbox WHERE {PARKED} GROUP BY 1"
            ).fetchall()
        pending = self.counts()
        return OutboxSummary(
            pending_escalations=pending[OutboxKind.ESCALATION.value],
            pending_audits=pending[OutboxKind.AUDIT.value],
            pending_bytes=int(size),
            oldest_pending_age_s=None if oldest is None else max(0.0, now - oldest),
            delivered=int(counters.get("delivered", 0)),
            retries=int(counters.get("retries", 0)),
            dead=int(counters.get("dead", 0)),
            dropped_audits=int(counters.get("dropped_audit", 0)),
            dropped_escalations=int(counters.get("dropped_escalation", 0)),
            retrying=int(retrying),
            dead_letters={str(r[0]): int(r[1]) for r in by_reason},
            resent=int(counters.get("resent", 0)),
            discarded=int(counters.get("discarded", 0)),
        )

    def counts(self) -> dict[str, int]:
        """Pending items per kind (for the status page)."""
        with self._db.lock:
            rows = self._db.connection.execute(
                f"SELECT kind, COUNT(*) FROM outbox WHERE {PENDING} GROUP BY kind"
            ).fetchall()
        counts = {kind.value: 0 for kind in OutboxKind}
        counts.update({row[0]: int(row[1]) for row in rows})
        return counts
