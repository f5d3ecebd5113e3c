"""The failed-token limiter and client-address rule on their own (a fake clock)."""

from __future__ import annotations

import pytest

from intellioptics_common.ratelimit import FailedAuthLimiter, TooManyFailedAttemptsError, client_address


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_blocks_after_max_failures_and_releases_after_the_window() -> None:
    clock = Clock()
    limiter = FailedAuthLimiter(3, 10.0, clock=clock)
    for _ in range(3):
        limiter.check("a")
        limiter.record_failure("a")
    with pytest.raises(TooManyFailedAttemptsError) as blocked:
        limiter.check("a")
    assert blocked.value.retry_after_s == 10 and blocked.value.status_code == 429
    limiter.check("b")  # others are not affected
    clock.now += 10.5
    limiter.check("a")


def test_disabled_limiter_never_blocks_and_memory_is_bounded() -> None:
    off = FailedAuthLimiter(0, 10.0)
    for _ in range(100):
        off.record_failure("a")
    off.check("a")
    limiter = FailedAuthLimiter(1, 60.0, max_clients=100)
    for i in range(1000):
        limiter.record_failure(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._failures) <= 100


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.5", None, "203.0.113.5"),
        ("203.0.113.5", "10.0.0.1", "203.0.113.5"),  # an untrusted peer cannot name another client
        ("127.0.0.1", "198.51.100.1, 203.0.113.9", "203.0.113.9"),  # the proxy's last hop counts
        ("127.0.0.1", "not-an-ip", "127.0.0.1"),
        ("127.0.0.1", None, "127.0.0.1"),
    ],
)
def test_client_address(peer: str, forwarded: str | None, expected: str) -> None:
    assert client_address(peer, forwarded, ("127.0.0.0/8", "::1/128")) == expected
