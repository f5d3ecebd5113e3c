"""Who may ask this edge: ``x-api-token`` checked against the cloud or a local list.

Cloud answers are cached for ``token_cache_ttl_s``; while the cloud is unreachable a
token it accepted before keeps working (the edge must keep answering through an
outage), but a token never seen cannot be checked and is refused with 503. Refused
tokens are counted per client address; too many within a window answer 429.

Acceptances are also kept in SQLite (:class:`~intellioptics_edge.cloud_cache.VerifiedTokens`,
by digest, with their expiry), so "accepted before" holds across a restart of the edge:
one restarted during an outage still serves its known callers. Refusals stay in memory.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

import anyio

from intellioptics_common.errors import AuthenticationError
from intellioptics_common.ratelimit import FailedAuthLimiter
from intellioptics_common.schemas import Group, Me
from intellioptics_edge.cloud import CloudClient, CloudUnreachable
from intellioptics_edge.cloud_cache import VerifiedTokens
from intellioptics_edge.errors import CloudUnavailableError

LOCAL_IDENTITY = Me(email="edge@localhost", username="edge", group=Group(id=0, name="edge"), is_superuser=False)
_REFUSED_TTL_S = 10.0
_MAX_CACHED = 1000


@dataclass(frozen=True)
class _Cached:
    expires_at: float
    identity: Me | None  # None: the cloud refused this token


class TokenVerifier:
    def __init__(
        self,
        local_tokens: frozenset[str],
        cloud: CloudClient | None,
        ttl_s: float,
        limiter: FailedAuthLimiter | None = None,
        remembered: VerifiedTokens | None = None,
    ) -> None:
        self._local = tuple(local_tokens)
        self._cloud = cloud
        self._ttl_s = ttl_s
        self._cache: dict[str, _Cached] = {}
        self._limiter = limiter or FailedAuthLimiter(0, 1.0)
        self._remembered = remembered

    def is_local(self, token: str) -> bool:
        encoded = token.encode()
        # Constant-time comparison against every entry: no timing hint about near misses.
        return any(hmac.compare_digest(encoded, known.encode()) for known in self._local)

    async def verify(self, token: str | None, client: str | None = None) -> Me:
        """The caller's identity; raises 401 for a missing or refused token, and 429 when
        ``client`` (its address) sent too many refused tokens lately."""
        if client is None:
            return await self._verify(token)
        self._limiter.check(client)
        try:
            return await self._verify(token)
        except AuthenticationError:
            if token:  # a missing token is a mistake, a wrong one may be a guess
                self._limiter.record_failure(client)
            raise

    async def _verify(self, token: str | None) -> Me:
        if not token:
            raise AuthenticationError("Missing x-api-token header: send your IntelliOptics API token in x-api-token.")
        if self.is_local(token):
            return LOCAL_IDENTITY
        if self._cloud is None:
            raise AuthenticationError(
                "The x-api-token is not accepted by this edge (offline mode: it checks tokens against "
                "INTELLIOPTICS_EDGE_TOKENS / INTELLIOPTICS_EDGE_TOKENS_FILE)."
            )
        now = time.monotonic()
        cached = self._cache.get(token)
        if cached is None:
            cached = await self._recall(token, now)
        if cached is not None and cached.expires_at > now:
            return self._accept_or_refuse(cached.identity)
        try:
            identity = await self._cloud.whoami(token)
        except CloudUnreachable as exc:
            if cached is not None and cached.identity is not None:
                return cached.identity
            raise CloudUnavailableError(
                "This edge cannot check the x-api-token: the cloud is unreachable and the token was not seen before.",
                log_message=str(exc),
            ) from exc
        ttl = self._ttl_s if identity is not None else min(self._ttl_s, _REFUSED_TTL_S)
        self._keep(token, _Cached(now + ttl, identity))
        if self._remembered is not None:
            if identity is not None:
                await anyio.to_thread.run_sync(self._remembered.remember, token, identity, time.time() + ttl)
            elif cached is not None and cached.identity is not None:
                await anyio.to_thread.run_sync(self._remembered.forget, token)  # accepted before, revoked since
        return self._accept_or_refuse(identity)

    async def _recall(self, token: str, now: float) -> _Cached | None:
        """An acceptance kept in SQLite (by an earlier run of the edge), as a cache entry."""
        if self._remembered is None:
            return None
        remembered = await anyio.to_thread.run_sync(self._remembered.get, token)
        if remembered is None:
            return None
        cached = _Cached(now + (remembered.expires_at - time.time()), remembered.identity)
        self._keep(token, cached)
        return cached

    def _keep(self, token: str, cached: _Cached) -> None:
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[token] = cached

    @staticmethod
    def _accept_or_refuse(identity: Me | None) -> Me:
        if identity is None:
            raise AuthenticationError("The x-api-token was refused by the cloud: check the token.")
        return identity
