"""The image queries this edge answered, with their image, for ``GET image-queries/{id}[/image]``.

Rows live in the edge database (:mod:`intellioptics_edge.database`). Answered queries are
written with ``synchronous=NORMAL`` and no fsync (they survive a crash of the process; a
power cut may lose the last moments), while a query saved with an outbox entry fsyncs its
image and commits with ``synchronous=FULL``: an escalation, once acknowledged, is never
lost. Retention is bounded by count and age; the image of a pending outbox row is kept
until the row is delivered, and that of a dead letter until it is re-sent and delivered
or discarded (so a person can still re-send it). A query's depth map, when it came with
one, is a second file beside its image (:func:`~intellioptics_edge.database.depth_name`),
written only when the query goes to the outbox (the cloud is the only reader) and kept
and removed with its image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from intellioptics_edge.database import PARKED, PENDING, EdgeDatabase, depth_name
from intellioptics_edge.outbox_store import OutboxEntry, insert_outbox

_PRUNE_EVERY = 200


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
