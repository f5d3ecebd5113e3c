"""Who may ask this edge: ``x-api-token`` checked against the cloud or a local list, and
whether that caller may do what it asks here.

**Authentication.** Cloud answers are cached for ``token_cache_ttl_s``; while the cloud
is unreachable a token it accepted before keeps working (the edge must keep answering
through an outage), but a token never seen cannot be checked and is refused with 503.
Refused tokens are counted per client address, here before the cloud is asked: too many
within a window answer 429 without a cloud call. When the edge asks the cloud about a
caller's token it says on whose behalf (the caller's address, vouched for by the edge's
device token), so the cloud counts a guesser's failures against the guesser, never
against the edge (``intellioptics_common.ratelimit``).

Acceptances are also kept in SQLite (:class:`~intellioptics_edge.cloud_cache.VerifiedTokens`,
by digest, with the identity, account and role, and their expiry), so "accepted before"
holds across a restart of the edge: one restarted during an outage still serves its
known callers. Refusals stay in memory.

**Authorisation.** The edge belongs to one cloud account: its device token's (or, for
an edge without one, ``INTELLIOPTICS_EDGE_ACCOUNT_ID``). A cloud-checked token of
another account is refused with 403, and so is a role the shared table
(:mod:`intellioptics_common.roles`) does not allow the permission a route needs. Tokens
of the local list (``INTELLIOPTICS_EDGE_TOKENS``) are the edge operator's own: they may
do everything on this edge.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from intellioptics_common.errors import AuthenticationError, PermissionDeniedError
from intellioptics_common.ratelimit import FailedAuthLimiter
from intellioptics_common.roles import Permission, Role, role_allows, roles_with
from intellioptics_common.schemas import Group, Me
from intellioptics_edge.cloud import CloudClient, CloudUnreachable
from intellioptics_edge.cloud_cache import VerifiedTokens
from intellioptics_edge.errors import CloudUnavailableError, EdgeNotBoundError

LOCAL_IDENTITY = Me(email="edge@localhost", username="edge", group=Group(id=0, name="edge"), is_superuser=False)
_REFUSED_TTL_S = 10.0
_MAX_CACHED = 1000


@dataclass(frozen=True)
class _Cached:
    expires_at: float
    identity: Me | None  # None: the cloud refused this token


@dataclass(frozen=True)
class EdgeOwnership:
    """Whose edge this is: the device token's account, or a pinned account id."""

    device_token: str | None = None
    account_id: int | None = None


class TokenVerifier:
    def __init__(
        self,
        local_tokens: frozenset[str],
        cloud: CloudClient | None,
        ttl_s: float,
        limiter: FailedAuthLimiter | None = None,
        remembered: VerifiedTokens | None = None,
        ownership: EdgeOwnership | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._local = tuple(local_tokens)
        self._cloud = cloud
        self._ttl_s = ttl_s
        self._cache: dict[str, _Cached] = {}
        self._limiter = limiter or FailedAuthLimiter(0, 1.0)
        self._remembered = remembered
        self._ownership = ownership or EdgeOwnership()
        self._clock = clock

    def is_local(self, token: str) -> bool:
        encoded = token.encode()
        # Constant-time comparison against every entry: no timing hint about near misses.
        return any(hmac.compare_digest(encoded, known.encode()) for known in self._local)

    async def verify(self, token: str | None, client: str | None = None) -> Me:
        """The caller's identity; raises 401 for a missing or refused token, and 429 when
        ``client`` (its address) sent too many refused tokens lately."""
        if client is None:
            return await self._verify(token, None)
        self._limiter.check(client)
        try:
            return await self._verify(token, client)
        except AuthenticationError:
            if token:  # a missing token is a mistake, a wrong one may be a guess
                self._limiter.record_failure(client)
            raise

    async def authorize(self, token: str | None, client: str | None, permission: Permission) -> Me:
        """The caller's identity when it may do ``permission`` on this edge: 401/429 as
        :meth:`verify`, 403 for another account's token or a role without it, 503 when
        the edge cannot tell which account it serves."""
        identity = await self.verify(token, client)
        if identity is LOCAL_IDENTITY:
            return identity
        owner = await self.owner_account()
        if identity.account_id != owner:
            raise PermissionDeniedError(
                "The x-api-token belongs to another account than this edge's: use a token of the account "
                "the edge is registered to (the account of its INTELLIOPTICS_DEVICE_TOKEN)."
            )
        role = Role(identity.role) if identity.role is not None else None
        if role is None or not role_allows(role, permission):
            allowed = ", ".join(roles_with(permission))
            raise PermissionDeniedError(
                f"A {role.value if role else 'token without a role'} token may not do this on the edge "
                f"(needs '{permission.value}': a token of role {allowed})."
            )
        return identity

    async def owner_account(self) -> int:
        """The account this edge serves, from its device token's identity (checked like any
        token: cached, kept across restarts, still known while the cloud is down)."""
        pinned = self._ownership.account_id
        device_token = self._ownership.device_token
        if device_token is None or self._cloud is None:
            if pinned is None:
                raise EdgeNotBoundError(
                    "This edge does not know which account it belongs to, so it serves only its local tokens: "
                    "set INTELLIOPTICS_DEVICE_TOKEN (or INTELLIOPTICS_EDGE_ACCOUNT_ID)."
                )
            return pinned
        try:
            identity = await self._verify(device_token, None)
        except AuthenticationError:
            raise EdgeNotBoundError(
                "The cloud refuses this edge's INTELLIOPTICS_DEVICE_TOKEN, so the edge cannot tell which account "
                "it serves; issue the edge a new device token."
            ) from None
        if identity.account_id is None:
            raise EdgeNotBoundError("The cloud did not report the account of this edge's device token.")
        if pinned is not None and pinned != identity.account_id:
            raise EdgeNotBoundError(
                f"INTELLIOPTICS_EDGE_ACCOUNT_ID is {pinned} but the device token belongs to account "
                f"{identity.account_id}: fix one of them."
            )
        return identity.account_id

    async def _verify(self, token: str | None, client: str | None) -> Me:
        if not token:
            raise AuthenticationError("Missing x-api-token header: send your IntelliOptics API token in x-api-token.")
        if self.is_local(token):
            return LOCAL_IDENTITY
        if self._cloud is None:
            raise AuthenticationError(
                "The x-api-token is not accepted by this edge (offline mode: it checks tokens against "
                "INTELLIOPTICS_EDGE_TOKENS / INTELLIOPTICS_EDGE_TOKENS_FILE)."
            )
        now = self._clock()
        cached = self._cache.get(token)
        if cached is None:
            cached = await self._recall(token, now)
        if cached is not None and cached.expires_at > now:
            return self._accept_or_refuse(cached.identity)
        try:
            identity = await self._cloud.whoami(token, **self._on_behalf_of(token, client))
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

    def _on_behalf_of(self, token: str, client: str | None) -> dict[str, str]:
        """Vouching headers for a caller's token: the cloud then counts a refusal against
        ``client``, not against this edge (only with a device token to vouch with)."""
        device_token = self._ownership.device_token
        if client is None or device_token is None or token == device_token:
            return {}
        return {"caller": client, "edge_token": device_token}

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
