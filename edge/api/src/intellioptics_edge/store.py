"""The edge's local store: image queries it answered (with their image) and the outbox.

One SQLite database under ``INTELLIOPTICS_EDGE_DATA_DIR`` (WAL mode, so readers never
wait for the writer) and one file per image beside it: a 300 KB blob costs SQLite about
4 ms (WAL write, then checkpoint copy), a file about 0.3 ms. Answered queries are
written with ``synchronous=NORMAL`` and no fsync (they survive a crash of the process;
a power cut may lose the last moments), while every outbox enqueue fsyncs its image and
commits with ``synchronous=FULL``: an escalation, once acknowledged, is never lost.
Retention is bounded by count and age; the image of a pending outbox row is kept until
the row is delivered, and that of a dead letter until it is re-sent and delivered or
discarded (so a person can still re-send it). A query's depth map, when it came with
one, is a second file beside its image (:func:`depth_name`), written only when the query
goes to the outbox (the cloud is the only reader) and kept and removed with its image.

A full disk is a state, not only an error: :attr:`EdgeDatabase.disk_full` is set by the
first write that fails for lack of space and cleared by the next one that succeeds
(``/status`` and ``/metrics`` show it). Writes go image first, then the row; when the row
cannot be written the image is removed again, and image files no row names (a crash
between the two) are removed when the database is opened: no orphan files.

The same database holds the hourly counters (``reporting.py``) and what the cloud last
said about tokens and detectors (``cloud_cache.py``); their tables are created here.

Calls block briefly (SQLite, files); async callers run them in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
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
    ("outbox", "dead_reason", "TEXT"),
    ("outbox", "discarded_at", "REAL"),
    ("outbox", "discard_reason", "TEXT"),
    ("image_queries", "explanation", "TEXT"),  # JSON of intellioptics_common.explanation.Explanation
    ("outbox", "depth_ref", "TEXT"),  # name of the depth file (depth_name); NULL: the query has none
)
# An item still to deliver; a dead letter (parked until a person re-sends or discards it).
PENDING = "delivered_at IS NULL AND dead_at IS NULL"
PARKED = "dead_at IS NOT NULL AND discarded_at IS NULL"

_PRUNE_EVERY = 200
# Below this, the data disk is reported full (an image and its rows need far less).
MIN_FREE_BYTES = 1024 * 1024
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,100}$")


def depth_name(image_query_id: str) -> str:
    """The file name of a query's depth map, beside its image."""
    return f"{image_query_id}-depth"


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
    depth_ref: str | None = None  # name of the depth map's file (the bytes as sent), None: no depth


@dataclass(frozen=True)
class DiskFull:
    since: float
    detail: str


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT from a file write, or SQLite's "database or disk is full"."""
    if isinstance(exc, sqlite3.OperationalError):
        return "full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def bump_counter(connection: sqlite3.Connection, name: str, by: int = 1) -> None:
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
        self.disk_full: DiskFull | None = None
        with self.lock:
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=NORMAL")
            self.connection.executescript(_SCHEMA)
            for table, column, declaration in _ADDED_COLUMNS:
                present = {row[1] for row in self.connection.execute(f"PRAGMA table_info({table})")}
                if column not in present:
                    self.connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            self._remove_orphan_images()

    def _remove_orphan_images(self) -> None:
        """Image files no row names: left by a crash between the image and its row.
        Runs before the edge serves, so no write is in flight."""
        named = {row[0] for row in self.connection.execute("SELECT id FROM image_queries")}
        named |= {row[0] for row in self.connection.execute("SELECT image_ref FROM outbox")}
        named |= {row[0] for row in self.connection.execute("SELECT depth_ref FROM outbox WHERE depth_ref IS NOT NULL")}
        for path in self.images_dir.iterdir():
            if path.name not in named:
                path.unlink(missing_ok=True)

    def _note_write(self, exc: BaseException | None) -> None:
        """Keep :attr:`disk_full` current: set by a write that found no space, cleared by
        one that worked once there is room again (a write can fit in SQLite's WAL while an
        image cannot: that alone must not clear it)."""
        if exc is None:
            if self.disk_full is not None and self._free_bytes() >= MIN_FREE_BYTES:
                self.disk_full = None
        elif is_disk_full(exc) and self.disk_full is None:
            self.disk_full = DiskFull(time.time(), f"{type(exc).__name__}: {exc}")

    def check_free_space(self) -> DiskFull | None:
        """Set or clear :attr:`disk_full` from the free space (the housekeeper, every few
        seconds): a full disk shows before a write fails, and its end shows with no write."""
        free = self._free_bytes()
        if free < MIN_FREE_BYTES and self.disk_full is None:
            self.disk_full = DiskFull(time.time(), f"{free} bytes free in {self.images_dir.parent}")
        elif free >= MIN_FREE_BYTES:
            self.disk_full = None
        return self.disk_full

    def _free_bytes(self) -> int:
        try:
            return shutil.disk_usage(self.images_dir).free
        except OSError:
            return 0

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
        except OSError as exc:
            path.unlink(missing_ok=True)  # disk full: no half-written image left behind
            self._note_write(exc)
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
                connection.execute("COMMIT")
            except BaseException as exc:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                self._note_write(exc)
                raise
            self._note_write(None)
        finally:
            if durable:
                connection.execute("PRAGMA synchronous=NORMAL")

    @contextlib.contextmanager
    def image_removed_on_error(self, *names: str):
        """Around the write of the row that names the files ``names``: no row, no file."""
        try:
            yield
        except BaseException:
            for name in names:
                self.delete_image(name)
            raise

    def close(self) -> None:
        with self.lock:
            self.connection.close()


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
        depth: bytes | None = None,
    ) -> bool:
        """Store a query and its image (and why it got its answer), with its outbox rows in
        the same transaction. ``depth`` (the depth map as sent) is kept for the outbox rows:
        a query with none to deliver does not keep it.

        Returns False when the id is already taken (``image_query_id`` given twice).
        """
        durable = bool(outbox)
        kept_depth = depth if outbox else None  # only the outbox (the cloud) reads it
        depth_ref = None if kept_depth is None else depth_name(image_query_id)
        size = len(image) + len(kept_depth or b"")
        now = time.time()
        with self._db.lock:
            taken = self._db.connection.execute("SELECT 1 FROM image_queries WHERE id = ?", (image_query_id,))
            if taken.fetchone() is not None:
                return False
            self._db.write_image(image_query_id, image, durable=durable)
            files = (image_query_id, depth_ref) if depth_ref else (image_query_id,)
            with self._db.image_removed_on_error(*files):
                if kept_depth is not None and depth_ref is not None:
                    self._db.write_image(depth_ref, kept_depth, durable=True)
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
                        insert_outbox(
                            connection,
                            kind=entry.kind,
                            image_query_id=image_query_id,
                            detector_id=detector_id,
                            content_type=content_type,
                            edge_answer=entry.edge_answer,
                            metadata=entry.metadata,
                            now=now,
                            image_bytes=size,
                            depth_ref=depth_ref,
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
            row[0] for row in connection.execute(f"SELECT image_ref FROM outbox WHERE ({PENDING}) OR ({PARKED})")
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
            self._db.delete_image(depth_name(name))
