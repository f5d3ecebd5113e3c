"""Failed-authentication limiter shared by the cloud API and the edge API.

A token is 40 random characters, so guessing one is hopeless; the limiter is there so
that a misconfigured camera or a scanner hammering the auth path with bad tokens is
slowed down and visible (429 with ``Retry-After``) instead of costing a database or
cloud round trip per attempt. It is in-process on purpose: each replica counts its own
clients, which is enough to make brute force pointless and needs no shared store.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from ipaddress import ip_address, ip_network

from intellioptics_common.errors import RateLimitedError

# Peers whose X-Forwarded-For is believed: the gateway (nginx) on the same host or pod network.
DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8", "::1/128")

# An edge checking a caller's token at the cloud says on whose behalf: the caller's address
# in CALLER_HEADER, believed only with a valid edge (device or admin) token in VOUCHER_HEADER.
# The cloud then counts a refusal against that caller (and the token tried), never against
# the edge's own address, so a guesser at an edge cannot lock the edge out of its cloud.
CALLER_HEADER = "x-intellioptics-caller"
VOUCHER_HEADER = "x-intellioptics-edge-token"


class TooManyFailedAttemptsError(RateLimitedError):
    """429 after too many refused tokens from one client; the handler sets Retry-After."""

    code = "too_many_failed_attempts"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            f"Too many requests with an invalid API token from this address; retry in {retry_after_s} s.",
        )
        self.retry_after_s = retry_after_s


class FailedAuthLimiter:
    """At most ``max_failures`` refused tokens per client within ``window_s`` seconds.

    Once over the limit the client is refused (before its token is even checked) until
    its oldest counted failure leaves the window. Successes do not reset the count: a
    client cannot interleave one good token to keep guessing.
    """

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._max_clients = max_clients
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()  # the cloud's sync routes run in a thread pool

    @property
    def enabled(self) -> bool:
        return self.max_failures > 0

    def check(self, client: str) -> None:
        """Raise :class:`TooManyFailedAttemptsError` when ``client`` is over the limit."""
        if not self.enabled:
            return
        with self._lock:
            failures = self._prune(client)
            if failures is not None and len(failures) >= self.max_failures:
                wait = failures[0] + self.window_s - self._clock()
                raise TooManyFailedAttemptsError(max(1, math.ceil(wait)))

    def record_failure(self, client: str) -> None:
        if not self.enabled:
            return
        with self._lock:
            failures = self._prune(client)
            if failures is None:
                if len(self._failures) >= self._max_clients:
                    self._forget_oldest()
                failures = self._failures[client] = deque()
            failures.append(self._clock())
            while len(failures) > self.max_failures:
                failures.popleft()

    def _prune(self, client: str) -> deque[float] | None:
        failures = self._failures.get(client)
        if failures is None:
            return None
        horizon = self._clock() - self.window_s
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return None
        return failures

    def _forget_oldest(self) -> None:
        # Bounded memory under a spray of source addresses: drop the stalest tenth.
        by_age = sorted(self._failures, key=lambda c: self._failures[c][-1])
        for client in by_age[: max(1, len(by_age) // 10)]:
            del self._failures[client]


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: Iterable[str]) -> str:
    """The client's IP: the peer, or, when the peer is a trusted proxy, the address that
    proxy appended last to X-Forwarded-For (earlier entries are the client's own claim)."""
    peer = peer or "unknown"
    if not forwarded_for:
        return peer
    try:
        peer_ip = ip_address(peer)
    except ValueError:
        return peer
    if not any(peer_ip in ip_network(network, strict=False) for network in trusted_proxies):
        return peer
    last = forwarded_for.split(",")[-1].strip()
    try:
        return str(ip_address(last))
    except ValueError:
        return peer


def is_trusted_peer(peer: str | None, trusted_proxies: Iterable[str]) -> bool:
    """Whether ``peer`` (an IP) is one of the proxies whose X-Forwarded-* headers are believed."""
    try:
        peer_ip = ip_address(peer or "")
    except ValueError:
        return False
    return any(peer_ip in ip_network(network, strict=False) for network in trusted_proxies)
