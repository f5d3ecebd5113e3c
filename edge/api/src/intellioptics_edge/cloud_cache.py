"""What the edge last learnt from the cloud about its callers and detectors, kept in SQLite.

Without it an edge restarted during a cloud outage would know nothing the cloud told it,
and answer 503 to every cloud-checked token until the cloud is back. Two tables of
``edge.sqlite3``:

- ``verified_tokens``: the sha256 of a token the cloud accepted (never the token itself:
  the data directory may be copied off the box), the identity it gave (with the
  token's account and role, which the edge authorises by) and when that acceptance
  expires (wall clock; ``token_cache_ttl_s`` after the check). A refusal is never
  written, and it deletes the row of a token accepted before; a row without account
  and role (an older edge's) counts as absent.
- ``known_detectors``: the cloud's last ``Detector`` answer per id; a 404 deletes it.

Calls block briefly (SQLite); async callers run them in a worker thread.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from pydantic import ValidationError

from intellioptics_common.schemas import Detector, Me
from intellioptics_edge.database import EdgeDatabase

_MAX_TOKENS = 1000


def token_digest(token: str) -> str:
    # Tokens are long random strings: a plain sha256 cannot be reversed by guessing.
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class RememberedToken:
    identity: Me
    expires_at: float  # time.time() after which the cloud must be asked again


class VerifiedTokens:
    """Tokens the cloud accepted, by digest; the most recently checked ``_MAX_TOKENS`` kept."""

    def __init__(self, database: EdgeDatabase) -> None:
        self._db = database

    def get(self, token: str) -> RememberedToken | None:
        with self._db.lock:
            row = self._db.connection.execute(
                "SELECT identity, expires_at FROM verified_tokens WHERE token_sha256 = ?", (token_digest(token),)
            ).fetchone()
        if row is None:
            return None
        try:
            identity = Me.model_validate_json(row[0])
        except ValidationError:  # written by another version: as good as absent
            return None
        if identity.account_id is None or identity.role is None:
            return None  # kept by a version that did not record whose token it is: ask again
        return RememberedToken(identity, row[1])

    def remember(self, token: str, identity: Me, expires_at: float) -> None:
        with self._db.lock, self._db.transaction(durable=False) as connection:
            connection.execute(
                "INSERT INTO verified_tokens (token_sha256, identity, verified_at, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (token_sha256) DO UPDATE SET identity = excluded.identity,"
                " verified_at = excluded.verified_at, expires_at = excluded.expires_at",
                (token_digest(token), identity.model_dump_json(), time.time(), expires_at),
            )
            connection.execute(
                "DELETE FROM verified_tokens WHERE token_sha256 IN"
                " (SELECT token_sha256 FROM verified_tokens ORDER BY verified_at DESC LIMIT -1 OFFSET ?)",
                (_MAX_TOKENS,),
            )

    def forget(self, token: str) -> None:
        with self._db.lock:
            self._db.connection.execute("DELETE FROM verified_tokens WHERE token_sha256 = ?", (token_digest(token),))


class KnownDetectors:
    """The cloud's last metadata per detector id."""

    def __init__(self, database: EdgeDatabase) -> None:
        self._db = database

    def get(self, detector_id: str) -> Detector | None:
        with self._db.lock:
            row = self._db.connection.execute(
                "SELECT detector FROM known_detectors WHERE detector_id = ?", (detector_id,)
            ).fetchone()
        if row is None:
            return None
        try:
            return Detector.model_validate_json(row[0])
        except ValidationError:  # written by another version: as good as absent
            return None

    def remember(self, detector: Detector) -> None:
        with self._db.lock:
            self._db.connection.execute(
                "INSERT INTO known_detectors (detector_id, detector, fetched_at) VALUES (?, ?, ?)"
                " ON CONFLICT (detector_id) DO UPDATE SET detector = excluded.detector, fetched_at = excluded.fetched_at",
                (detector.id, detector.model_dump_json(), time.time()),
            )

    def forget(self, detector_id: str) -> None:
        with self._db.lock:
            self._db.connection.execute("DELETE FROM known_detectors WHERE detector_id = ?", (detector_id,))
