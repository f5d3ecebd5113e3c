"""The edge's local store: image queries it answered (with their image) and the outbox.

One SQLite database under ``INTELLIOPTICS_EDGE_DATA_DIR`` (WAL mode, so readers never
wait for the writer) and one file per image beside it: a 300 KB blob costs SQLite about
4 ms (WAL write, then checkpoint copy), a file about 0.3 ms. Answered queries are
written with ``synchronous=NORMAL`` and no fsync (they survive a crash of the process;
a power cut may lose the last moments), while every outbox enqueue fsyncs its image and
commits with ``synchronous=FULL``: an escalation, once acknowledged, is never lost.
Retention is bounded by count and age; the image of a pending outbox row is kept until
the row is delivered.

The same database holds the hourly counters (``reporting.py``) and what the cloud last
said about tokens and detectors (``cloud_cache.py``); their tables are created here.

Calls block briefly (SQLite, files); async callers run them in a worker thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS image_queries (
    id TEXT PRIMARY KEY,
    detector_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    done_processing INTEGER NOT NULL,
    inspection_id TEXT,
    content_type TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS image_queries_created ON image_queries (created_at);
CREATE INDEX IF NOT EXISTS image_queries_detector ON image_queries (detector_id, created_at);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('escalation', 'audit')),
    image_query_id TEXT NOT NULL,
    detector_id TEXT NOT NULL,
    image_ref TEXT NOT NULL,
    content_type TEXT NOT NULL,
    edge_answer TEXT,
    metadata TEXT,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    delivered_at REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (delivered_at, next_attempt_at);
CREATE TABLE IF NOT EXISTS outbox_counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS hourly_counters (
    detector_id TEXT NOT NULL,
    hour TEXT NOT NULL,
    counters TEXT NOT NULL,
    reported INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (detector_id, hour)
);
CREATE TABLE IF NOT EXISTS verified_tokens (
    token_sha256 TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    verified_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS known_detectors (
    detector_id TEXT PRIMARY KEY,
    detector TEXT NOT NULL,
    fetched_at REAL NOT NULL
);
"""
# Columns added after the first release: (name, declaration), added when missing.
_ADDED_COLUMNS = (
    ("outbox", "dead_at", "REAL"),
    ("outbox", "image_bytes", "INTEGER NOT NULL DEFAULT 0"),
    ("image_queries", "explanation", "TEXT"),  # JSON of intellioptics_common.explanation.Explanation
)

_PRUNE_EVERY = 200
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,100}$")


class OutboxKind(str, Enum):
    ESCALATION = "escalation"
    AUDIT = "audit"


@dataclass(frozen=True)
class StoredQuery:
    id: str
    detector_id: str
    created_at: float
    done_processing: bool
    body: str  # the ImageQuery JSON as answered


@dataclass(frozen=True)
class StoredImage:
    content_type: str
    data: bytes


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
    dropped_escalations: int


def _bump(connection: sqlite3.Connection, name: str, by: int = 1) -> None:
    connection.execute(
        "INSERT INTO outbox_counters (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        (name, by),
    )


class EdgeDatabase:
    """Owns the connection and the image directory; QueryStore and Outbox share them."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.images_dir = path.parent / "images"
        self.images_dir.mkdir(exist_ok=True)
        # One connection and a lock: SQLite has one writer anyway, and this avoids
        # SQLITE_BUSY between threads of the same process.
        self.connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.lock = threading.Lock()
        with self.lock:
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=NORMAL")
            self.connection.executescript(_SCHEMA)
            for table, column, declaration in _ADDED_COLUMNS:
                present = {row[1] for row in self.connection.execute(f"PRAGMA table_info({table})")}
                if column not in present:
                    self.connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def image_path(self, name: str) -> Path:
        if not _SAFE_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid image name")
        return self.images_dir / name

    def write_image(self, name: str, data: bytes, *, durable: bool) -> None:
        path = self.image_path(name)
        try:
            with path.open("wb") as handle:
                handle.write(data)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
        except OSError:
            path.unlink(missing_ok=True)  # disk full: no half-written image left behind
            raise
        if durable:
            descriptor = os.open(self.images_dir, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

    def read_image(self, name: str) -> bytes | None:
        try:
            return self.image_path(name).read_bytes()
        except (FileNotFoundError, ValueError):
            return None

    def delete_image(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            self.image_path(name).unlink()

    @contextlib.contextmanager
    def transaction(self, *, durable: bool):
        """BEGIN IMMEDIATE … COMMIT (with a full fsync when ``durable``); caller holds ``lock``."""
        connection = self.connection
        if durable:
            connection.execute("PRAGMA synchronous=FULL")
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        finally:
            if durable:
                connection.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        with self.lock:
            self.connection.close()


def _insert_outbox(
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
) -> int:
    cursor = connection.execute(
        "INSERT INTO outbox (kind, image_query_id, detector_id, image_ref, content_type, edge_answer, metadata,"
        " created_at, next_attempt_at, image_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        ),
    )
    return int(cursor.lastrowid or 0)


class QueryStore:
    """Image queries answered by this edge, for ``GET image-queries/{id}[/image]``."""

    def __init__(self, database: EdgeDatabase, *, max_queries: int, max_age_s: float) -> None:
        self._db = database
        self._max_queries = max_queries
        self._max_age_s = max_age_s
        self._writes = 0

    def save(
        self,
        *,
        image_query_id: str,
        detector_id: str,
        done_processing: bool,
        body: str,
        image: bytes,
        content_type: str,
        inspection_id: str | None = None,
        outbox: list[OutboxEntry] | None = None,
        explanation: str | None = None,
    ) -> bool:
        """Store a query and its image (and why it got its answer), with its outbox rows in
        the same transaction.

        Returns False when the id is already taken (``image_query_id`` given twice).
        """
        durable = bool(outbox)
        now = time.time()
        with self._db.lock:
            taken = self._db.connection.execute("SELECT 1 FROM image_queries WHERE id = ?", (image_query_id,))
            if taken.fetchone() is not None:
                return False
            self._db.write_image(image_query_id, image, durable=durable)
            with self._db.transaction(durable=durable) as connection:
                connection.execute(
                    "INSERT INTO image_queries (id, detector_id, created_at, done_processing, inspection_id,"
                    " content_type, body, explanation) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        image_query_id,
                        detector_id,
                        now,
                        int(done_processing),
                        inspection_id,
                        content_type,
                        body,
                        explanation,
                    ),
                )
                for entry in outbox or ():
                    _insert_outbox(
                        connection,
                        kind=entry.kind,
                        image_query_id=image_query_id,
                        detector_id=detector_id,
                        content_type=content_type,
                        edge_answer=entry.edge_answer,
                        metadata=entry.metadata,
                        now=now,
                        image_bytes=len(image),
                    )
            self._writes += 1
            if self._writes % _PRUNE_EVERY == 0:
                self._prune_locked(now)
        return True

    def get(self, image_query_id: str) -> StoredQuery | None:
        with self._db.lock:
            row = self._db.connection.execute(
                "SELECT id, detector_id, created_at, done_processing, body FROM image_queries WHERE id = ?",
                (image_query_id,),
            ).fetchone()
        if row is None:
            return None
        return StoredQuery(id=row[0], detector_id=row[1], created_at=row[2], done_processing=bool(row[3]), body=row[4])

    def explanation(self, image_query_id: str) -> tuple[bool, str | None]:
        """(query stored here, its explanation JSON if one was recorded)."""
        with self._db.lock:
            row = self._db.connection.execute(
                "SELECT explanation FROM image_queries WHERE id = ?", (image_query_id,)
            ).fetchone()
        return (False, None) if row is None else (True, row[0])

    def finish(self, image_query_id: str, body: str) -> None:
        """Replace an escalated query's answer with the final one (the cloud's human answer)."""
        with self._db.lock:
            self._db.connection.execute(
                "UPDATE image_queries SET body = ?, done_processing = 1 WHERE id = ?", (body, image_query_id)
            )

    def image(self, image_query_id: str) -> StoredImage | None:
        with self._db.lock:
            row = self._db.connection.execute(
                "SELECT content_type FROM image_queries WHERE id = ?", (image_query_id,)
            ).fetchone()
        if row is None:
            return None
        data = self._db.read_image(image_query_id)
        return None if data is None else StoredImage(content_type=row[0], data=data)

    def list(self, *, detector_id: str | None, offset: int, limit: int) -> tuple[int, list[StoredQuery]]:
        where, args = ("WHERE detector_id = ?", [detector_id]) if detector_id else ("", [])
        with self._db.lock:
            connection = self._db.connection
            total = connection.execute(f"SELECT COUNT(*) FROM image_queries {where}", args).fetchone()[0]
            rows = connection.execute(
                "SELECT id, detector_id, created_at, done_processing, body FROM image_queries "
                f"{where} ORDER BY created_at DESC LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return total, [StoredQuery(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]

    def count(self) -> int:
        with self._db.lock:
            return int(self._db.connection.execute("SELECT COUNT(*) FROM image_queries").fetchone()[0])

    def prune(self) -> None:
        with self._db.lock:
            self._prune_locked(time.time())

    def _prune_locked(self, now: float) -> None:
        connection = self._db.connection
        pending = {
            row[0]
            for row in connection.execute("SELECT image_ref FROM outbox WHERE delivered_at IS NULL AND dead_at IS NULL")
        }
        expired = connection.execute(
            "SELECT id FROM image_queries WHERE created_at < ? OR id NOT IN "
            "(SELECT id FROM image_queries ORDER BY created_at DESC LIMIT ?)",
            (now - self._max_age_s, self._max_queries),
        ).fetchall()
        doomed = [row[0] for row in expired if row[0] not in pending]
        if not doomed:
            return
        with self._db.transaction(durable=False):
            connection.executemany("DELETE FROM image_queries WHERE id = ?", [(name,) for name in doomed])
        for name in doomed:
            self._db.delete_image(name)


class Outbox:
    """Durable queue of what must reach the cloud (delivery is the cloud sync's job).

    ``image_ref`` names an image file of the store (read it with :meth:`image`); the file
    stays until the row is delivered and the answered query has aged out.
    """

    def __init__(self, database: EdgeDatabase) -> None:
        self._db = database

    def enqueue(
        self,
        *,
        kind: OutboxKind,
        image_query_id: str,
        detector_id: str,
        image: bytes | None = None,
        content_type: str = "image/jpeg",
        edge_answer: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        """Add one item, fsynced before returning; ``image`` is written unless None (already stored)."""
        with self._db.lock:
            if image is not None:
                self._db.write_image(image_query_id, image, durable=True)
            with self._db.transaction(durable=True) as connection:
                return _insert_outbox(
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

    def pending(self, limit: int = 50, now: float | None = None) -> list[OutboxItem]:
        """Undelivered items whose next attempt is due, oldest first."""
        with self._db.lock:
            rows = self._db.connection.execute(
                "SELECT seq, kind, image_query_id, detector_id, image_ref, content_type, edge_answer, metadata,"
                " created_at, attempts FROM outbox WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= ?"
                " ORDER BY seq LIMIT ?",
                (time.time() if now is None else now, limit),
            ).fetchall()
        return [
            OutboxItem(
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
            )
            for r in rows
        ]

    def image(self, item: OutboxItem) -> bytes | None:
        return self._db.read_image(item.image_ref)

    def mark_delivered(self, seq: int) -> None:
        with self._db.lock, self._db.transaction(durable=False) as connection:
            connection.execute("UPDATE outbox SET delivered_at = ? WHERE seq = ?", (time.time(), seq))
            _bump(connection, "delivered")

    def mark_failed(self, seq: int, error: str, retry_at: float) -> None:
        with self._db.lock, self._db.transaction(durable=False) as connection:
            connection.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE seq = ?",
                (error[:2000], retry_at, seq),
            )
            _bump(connection, "retries")

    def mark_dead(self, seq: int, error: str) -> None:
        """Park an item the cloud will never accept (a dead letter): kept for inspection, not retried."""
        with self._db.lock, self._db.transaction(durable=False) as connection:
            connection.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, dead_at = ? WHERE seq = ?",
                (error[:2000], time.time(), seq),
            )
            _bump(connection, "dead")

    def enforce_limits(self, *, max_items: int, max_bytes: int) -> dict[str, int]:
        """Drop pending items until within both limits: oldest audits first, then oldest
        escalations. Returns how many of each kind were dropped (the caller logs them)."""
        dropped = {kind.value: 0 for kind in OutboxKind}
        with self._db.lock:
            connection = self._db.connection
            count, size = connection.execute(
                "SELECT COUNT(*), COALESCE(SUM(image_bytes), 0) FROM outbox WHERE delivered_at IS NULL AND dead_at IS NULL"
            ).fetchone()
            if count <= max_items and size <= max_bytes:
                return dropped
            doomed: list[int] = []
            for kind in (OutboxKind.AUDIT, OutboxKind.ESCALATION):
                rows = connection.execute(
                    "SELECT seq, image_bytes FROM outbox WHERE delivered_at IS NULL AND dead_at IS NULL AND kind = ?"
                    " ORDER BY seq",
                    (kind.value,),
                ).fetchall()
                for seq, image_bytes in rows:
                    if count <= max_items and size <= max_bytes:
                        break
                    doomed.append(seq)
                    count, size = count - 1, size - image_bytes
                    dropped[kind.value] += 1
            with self._db.transaction(durable=False):
                connection.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq in doomed])
                for kind, number in dropped.items():
                    if number:
                        _bump(connection, f"dropped_{kind}", number)
        return dropped

    def forget_finished(self, older_than: float) -> int:
        """Delete delivered and dead rows finished before ``older_than`` (their counters stay)."""
        with self._db.lock:
            cursor = self._db.connection.execute(
                "DELETE FROM outbox WHERE (delivered_at IS NOT NULL AND delivered_at < ?)"
                " OR (dead_at IS NOT NULL AND dead_at < ?)",
                (older_than, older_than),
            )
            return cursor.rowcount

    def summary(self, now: float | None = None) -> OutboxSummary:
        """Everything the status page and /metrics show about the outbox."""
        now = time.time() if now is None else now
        with self._db.lock:
            connection = self._db.connection
            oldest, size = connection.execute(
                "SELECT MIN(created_at), COALESCE(SUM(image_bytes), 0) FROM outbox"
                " WHERE delivered_at IS NULL AND dead_at IS NULL"
            ).fetchone()
            counters = dict(connection.execute("SELECT name, value FROM outbox_counters").fetchall())
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
        )

    def dead_letters(self, limit: int = 50) -> list[tuple[str, str, str | None]]:
        """(image_query_id, kind, last_error) of parked items, newest first."""
        with self._db.lock:
            rows = self._db.connection.execute(
                "SELECT image_query_id, kind, last_error FROM outbox WHERE dead_at IS NOT NULL"
                " ORDER BY dead_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    def counts(self) -> dict[str, int]:
        """Pending items per kind (for the status page)."""
        with self._db.lock:
            rows = self._db.connection.execute(
                "SELECT kind, COUNT(*) FROM outbox WHERE delivered_at IS NULL AND dead_at IS NULL GROUP BY kind"
            ).fetchall()
        counts = {kind.value: 0 for kind in OutboxKind}
        counts.update({row[0]: int(row[1]) for row in rows})
        return counts
