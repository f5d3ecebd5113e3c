"""The edge's local database: one SQLite file and an image directory beside it.

One SQLite database under ``INTELLIOPTICS_EDGE_DATA_DIR`` (WAL mode, so readers never
wait for the writer) and one file per image beside it: a 300 KB blob costs SQLite about
4 ms (WAL write, then checkpoint copy), a file about 0.3 ms. It holds the answered image
queries (:mod:`intellioptics_edge.store`), the outbox (:mod:`intellioptics_edge.outbox_store`),
the hourly counters (``reporting.py``) and what the cloud last said about tokens and
detectors (``cloud_cache.py``); their tables are created here, and columns added since
the first release are added when missing (the hand-made migrations, ``_ADDED_COLUMNS``).

A full disk is a state, not only an error: :attr:`EdgeDatabase.disk_full` is set by the
first write that fails for lack of space and cleared by the next one that succeeds
(``/status`` and ``/metrics`` show it). Writes go image first, then the row; when the row
cannot be written the image is removed again, and image files no row names (a crash
between the two) are removed when the database is opened: no orphan files.

Calls block briefly (SQLite, files); async callers run them in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

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

# Below this, the data disk is reported full (an image and its rows need far less).
MIN_FREE_BYTES = 1024 * 1024
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,100}$")


def depth_name(image_query_id: str) -> str:
    """The file name of a query's depth map, beside its image."""
    return f"{image_query_id}-depth"


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
