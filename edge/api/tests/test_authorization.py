"""Whose edge this is, and what each role may do on it (the app with a fake cloud).

The route-by-route matrix against a real cloud is tests/reliability/test_edge_tenancy.py;
here: the account binding, the persisted account and role across restarts, the failed-token
limiter with an injected clock, and the vouching headers the edge sends to the cloud.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

import anyio
import httpx
import pytest

from intellioptics_common.errors import AuthenticationError, PermissionDeniedError
from intellioptics_common.ratelimit import (
    CALLER_HEADER,
    VOUCHER_HEADER,
    FailedAuthLimiter,
    TooManyFailedAttemptsError,
)
from intellioptics_common.roles import Permission
from intellioptics_edge.auth import EdgeOwnership, TokenVerifier
from intellioptics_edge.cloud import CloudClient

from .conftest import ACCOUNT_ID, DET_BINARY, TOKEN, MakeEdge, base_config, jpeg

DEVICE_A = "device_a_0123456789abcdefghijkl"
ADMIN_A = "admin_a_0123456789abcdefghijklm"
REVIEWER_A = "reviewer_a_0123456789abcdefghij"
ADMIN_B = "admin_b_0123456789abcdefghijklm"
DEVICE_B = "device_b_0123456789abcdefghijkl"
OTHER_ACCOUNT = ACCOUNT_ID + 1
IDENTITIES = {
    DEVICE_A: ("device", ACCOUNT_ID),
    ADMIN_A: ("admin", ACCOUNT_ID),
    REVIEWER_A: ("reviewer", ACCOUNT_ID),
    ADMIN_B: ("admin", OTHER_ACCOUNT),
    DEVICE_B: ("device", OTHER_ACCOUNT),
}


def me(token: str) -> dict:
    role, account = IDENTITIES[token]
    group = {"id": account, "name": f"acct-{account}"}
    return {
        "email": "x@y.z",
        "username": role,
        "group": group,
        "is_superuser": False,
        "role": role,
        "account_id": account,
    }


@dataclass
class RoleCloud:
    """/v1/me per token, like the real cloud's; records what the edge sent."""

    down: bool = False
    limited: bool = False
    lookups: list[dict[str, str]] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("down", request=request)
        token = request.headers.get("x-api-token", "")
        if request.url.path == "/device-api/v1/me":
            self.lookups.append({k: v for k, v in request.headers.items() if k.startswith("x-")})
            if self.limited:
                return httpx.Response(429, headers={"retry-after": "17"}, json={"detail": "slow", "code": "x"})
            if token in IDENTITIES:
                return httpx.Response(200, json=me(token))
            return httpx.Response(401, json={"detail": "bad token", "code": "unauthenticated"})
        return httpx.Response(404, json={"detail": "no", "code": "not_found"})


def put_config(edge, token: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    return edge.client.put("/edge-config", json=base_config(), headers={"x-api-token": token})


def test_only_the_device_tokens_account_is_served(make_edge: MakeEdge) -> None:
    cloud = RoleCloud()
    edge = make_edge(cloud=cloud.handle, device_token=DEVICE_A, edge_account_id=None)
    assert edge.submit(DET_BINARY, jpeg(255), token=ADMIN_A).status_code == 201
    for token in (ADMIN_B, DEVICE_B):
        refused = edge.submit(DET_BINARY, jpeg(255), token=token)
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        assert "another account" in refused.json()["detail"]
        assert put_config(edge, token).status_code == 403
    reviewer = edge.submit(DET_BINARY, jpeg(255), token=REVIEWER_A)
    assert reviewer.status_code == 403 and "needs 'submit'" in reviewer.json()["detail"]
    assert put_config(edge, REVIEWER_A).status_code == 403
    assert put_config(edge, DEVICE_A).status_code == 403
    assert put_config(edge, ADMIN_A).status_code == 200
    assert put_config(edge, TOKEN).status_code == 200  # the edge's local tokens are its operator's


def test_an_edge_that_cannot_tell_its_account_serves_only_local_tokens(make_edge: MakeEdge) -> None:
    edge = make_edge(cloud=RoleCloud().handle, edge_account_id=None)
    refused = edge.submit(DET_BINARY, jpeg(255), token=ADMIN_A)
    assert refused.status_code == 503 and refused.json()["code"] == "edge_not_bound"
    assert "INTELLIOPTICS_DEVICE_TOKEN" in refused.json()["detail"]
    assert edge.submit(DET_BINARY, jpeg(255)).status_code == 201
    mismatch = make_edge(cloud=RoleCloud().handle, device_token=DEVICE_A, edge_account_id=OTHER_ACCOUNT)
    answer = mismatch.submit(DET_BINARY, jpeg(255), token=ADMIN_A)
    assert answer.status_code == 503 and "INTELLIOPTICS_EDGE_ACCOUNT_ID" in answer.json()["detail"]


def test_account_and_role_survive_a_restart_during_an_outage(make_edge: MakeEdge) -> None:
    cloud = RoleCloud()
    first = make_edge(cloud=cloud.handle, device_token=DEVICE_A, edge_account_id=None)
    for token in (ADMIN_A, REVIEWER_A, ADMIN_B):
        assert first.client.get("/device-api/v1/me", headers={"x-api-token": token}).status_code in (200, 403)
    first.stop()
    cloud.down = True
    restarted = make_edge(cloud=cloud.handle, device_token=DEVICE_A, edge_account_id=None)
    assert put_config(restarted, ADMIN_A).status_code == 200
    assert put_config(restarted, REVIEWER_A).status_code == 403  # still a reviewer
    assert put_config(restarted, ADMIN_B).status_code == 403  # still another account's
    assert restarted.client.get("/device-api/v1/me", headers={"x-api-token": REVIEWER_A}).json()["role"] == "reviewer"


def test_a_cached_row_without_account_and_role_is_asked_again(make_edge: MakeEdge) -> None:
    cloud = RoleCloud()
    first = make_edge(cloud=cloud.handle, device_token=DEVICE_A, edge_account_id=None)
    assert put_config(first, ADMIN_A).status_code == 200
    first.stop()
    database = first.settings.database_path
    with sqlite3.connect(database) as connection:  # as an older edge wrote it
        legacy = '{"email":"a@b.c","username":"a","group":{"id":1,"name":"a"},"is_superuser":false}'
        connection.execute("UPDATE verified_tokens SET identity = ?", (legacy,))
    cloud.down = True
    restarted = make_edge(cloud=cloud.handle, device_token=DEVICE_A, edge_account_id=None)
    answer = put_config(restarted, ADMIN_A)
    assert answer.status_code == 503 and answer.json()["code"] == "cloud_unavailable"


def test_the_edge_vouches_for_its_callers_and_passes_on_a_cloud_429(make_edge: MakeEdge) -> None:
    cloud = RoleCloud()
    edge = make_edge(cloud=cloud.handle, device_token=DEVICE_A, edge_account_id=None)
    headers = {"x-api-token": "guess_0123456789abcdefghijkl", "x-forwarded-for": "203.0.113.5"}
    assert edge.client.get("/device-api/v1/me", headers=headers).status_code == 401
    assert edge.client.get("/device-api/v1/me", headers={"x-api-token": ADMIN_A}).status_code == 200
    guess = next(lookup for lookup in cloud.lookups if lookup["x-api-token"].startswith("guess"))
    assert guess[CALLER_HEADER] == "203.0.113.5" and guess[VOUCHER_HEADER] == DEVICE_A
    own = next(lookup for lookup in cloud.lookups if lookup["x-api-token"] == DEVICE_A)
    assert CALLER_HEADER not in own and VOUCHER_HEADER not in own  # the edge's own lookup is its own
    cloud.limited = True
    headers["x-api-token"] = "guess_another_0123456789abcdef"
    limited = edge.client.get("/device-api/v1/me", headers=headers)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "17"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_edge_limits_failed_tokens_per_caller_before_it_asks_the_cloud() -> None:
    clock = Clock()
    cloud = RoleCloud()

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(cloud.handle), base_url="http://cloud.test") as http:
            verifier = TokenVerifier(
                frozenset(),
                CloudClient(http),
                ttl_s=300,
                limiter=FailedAuthLimiter(3, 60.0, clock=clock),
                ownership=EdgeOwnership(device_token=DEVICE_A),
                clock=clock,
            )
            for attempt in range(3):
                with pytest.raises(AuthenticationError):
                    await verifier.authorize(f"guess_{attempt}_0123456789abcdef", "203.0.113.5", Permission.READ)
            asked = len(cloud.lookups)
            with pytest.raises(TooManyFailedAttemptsError):
                await verifier.authorize("guess_4_0123456789abcdef", "203.0.113.5", Permission.READ)
            with pytest.raises(TooManyFailedAttemptsError):  # even a valid token, from that address
                await verifier.authorize(ADMIN_A, "203.0.113.5", Permission.READ)
            assert len(cloud.lookups) == asked  # blocked before the cloud was asked
            assert (await verifier.authorize(ADMIN_A, "198.51.100.7", Permission.SUBMIT)).role == "admin"
            with pytest.raises(PermissionDeniedError):
                await verifier.authorize(ADMIN_B, "198.51.100.7", Permission.READ)
            clock.now += 61  # the window passes: no sleeping
            assert (await verifier.authorize(ADMIN_A, "203.0.113.5", Permission.READ)).account_id == ACCOUNT_ID

    anyio.run(scenario)
