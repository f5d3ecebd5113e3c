"""Tenancy on the edge: every edge route, with a second account's tokens and with each
role of the edge's own account, against a real cloud and a real edge (issue 11, finding 1).

The edge belongs to the account of its device token. The route list comes from the edge
app itself and every route must appear in ``POLICY``: a new route fails
``test_every_edge_route_has_a_stated_policy`` until someone states who may call it.
Requests go to the edge API itself (not through nginx), so that an answer is the edge's
and never the cloud's behind a gateway fallback.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from groundlight import Groundlight, GroundlightClientError
from groundlight_openapi_client.exceptions import ForbiddenException

from intellioptics_edge.app import create_app
from intellioptics_edge.settings import EdgeSettings
from tests.reliability.helpers import CloudServer, EdgeProcesses, cloud_server, edge_processes, jpeg

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROLES = ("admin", "reviewer", "device", "worker")
ALL = frozenset(ROLES)
SUBMIT = frozenset({"admin", "device"})
EDGE = frozenset({"admin", "device"})
ADMIN = frozenset({"admin"})
PUBLIC = None  # no token needed: probes, metrics, the status page

# (method, path) -> the roles of the edge's own account allowed to call it. Written from the
# product's rules (docs/api.md), mirroring the cloud's: every role reads, admins and devices
# submit and use gl.edge, only admins change edge-config.
_SDK: dict[tuple[str, str], frozenset[str] | None] = {
    ("GET", "/me"): ALL,
    ("GET", "/api-tokens/by-snippet/{snippet}"): ALL,
    ("GET", "/detectors/{detector_id}"): ALL,
    ("POST", "/image-queries"): SUBMIT,
    ("GET", "/image-queries"): ALL,
    ("GET", "/image-queries/{image_query_id}"): ALL,
    ("GET", "/image-queries/{image_query_id}/image"): ALL,
    ("GET", "/image-queries/{image_query_id}/overlay"): ALL,
    ("GET", "/image-queries/{image_query_id}/explanation"): ALL,
    ("POST", "/image-queries/batch"): SUBMIT,
    ("POST", "/image-queries/multi"): SUBMIT,
    ("POST", "/image-queries/rgbd"): SUBMIT,
}
POLICY: dict[tuple[str, str], frozenset[str] | None] = {
    **{
        (method, prefix + path): allowed
        for (method, path), allowed in _SDK.items()
        for prefix in ("/v1", "/device-api/v1")
    },
    ("GET", "/edge-config"): EDGE,
    ("PUT", "/edge-config"): ADMIN,
    ("GET", "/edge-detector-readiness"): EDGE,
    ("GET", "/edge-info"): EDGE,
    ("GET", "/streams"): EDGE,
    ("GET", "/edge-outbox/dead-letters"): ADMIN,
    ("POST", "/edge-outbox/dead-letters/resend"): ADMIN,
    ("POST", "/edge-outbox/dead-letters/{seq}/resend"): ADMIN,
    ("POST", "/edge-outbox/dead-letters/{seq}/discard"): ADMIN,
    ("GET", "/health/live"): PUBLIC,
    ("GET", "/health/ready"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/status"): PUBLIC,
    ("GET", "/status.json"): PUBLIC,
}


def edge_routes() -> set[tuple[str, str]]:
    """Every (method, path) the edge app answers, from its OpenAPI (no route is hidden)."""
    app = create_app(EdgeSettings(edge_data_dir=Path("/nonexistent"), environment="test"))
    return {(method.upper(), path) for path, operations in app.openapi()["paths"].items() for method in operations}


def test_every_edge_route_has_a_stated_policy() -> None:
    routes = edge_routes()
    missing = sorted(routes - set(POLICY))
    assert not missing, f"edge routes with no auth expectation in {__name__}: {missing}"
    stale = sorted(set(POLICY) - routes)
    assert not stale, f"POLICY names routes the edge no longer has: {stale}"


@dataclass
class World:
    cloud: CloudServer
    edge: EdgeProcesses
    detector_id: str
    image_query_id: str
    tokens_a: dict[str, str]
    tokens_b: dict[str, str]
    config: dict[str, Any]


def _ok(response: httpx.Response, expected: int = 200) -> Any:
    assert response.status_code == expected, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("edge-tenancy")
    with cloud_server(base / "cloud", INTELLIOPTICS_AUTH_MAX_FAILURES="0") as cloud, cloud.client() as admin:
        tokens_a = {"admin": cloud.token}
        for role in ("reviewer", "device", "worker"):
            tokens_a[role] = _ok(admin.post("/v1/tokens", json={"name": f"a-{role}", "role": role}), 201)["token"]
        edge_token = _ok(admin.post("/v1/tokens", json={"name": "edge-a", "role": "device"}), 201)["token"]
        detector = _ok(
            admin.post("/v1/detectors", json={"name": "tenancy-" + uuid.uuid4().hex[:6], "query": "q?"}), 201
        )
        account = _ok(admin.post("/v1/accounts", json={"name": "account-b"}), 201)
        tokens_b = {"admin": account["admin_token"]}
        with cloud.client(tokens_b["admin"]) as admin_b:
            for role in ("reviewer", "device", "worker"):
                tokens_b[role] = _ok(admin_b.post("/v1/tokens", json={"name": f"b-{role}", "role": role}), 201)["token"]
        extra = {"INTELLIOPTICS_AUTH_MAX_FAILURES": "0"}
        with edge_processes(
            base / "edge",
            [detector["id"]],
            cloud_url=cloud.url,
            device_token=edge_token,
            extra_env=extra,
            gateway_to_cloud=True,
        ) as edge:
            headers = {"x-api-token": tokens_a["device"], "content-type": "image/jpeg"}
            submitted = httpx.post(
                f"{edge.edge_api_url}/device-api/v1/image-queries",
                params={"detector_id": detector["id"]},
                content=jpeg(250),
                headers=headers,
                timeout=30,
            )
            iq = _ok(submitted, 201)
            assert iq["result"]["from_edge"] is True
            config = _ok(httpx.get(f"{edge.edge_api_url}/edge-config", headers={"x-api-token": edge.token}))
            yield World(cloud, edge, detector["id"], iq["id"], tokens_a, tokens_b, config)


def _call(world: World, method: str, template: str, token: str | None) -> httpx.Response:
    values = {
        "detector_id": world.detector_id,
        "image_query_id": world.image_query_id,
        "snippet": (token or "x" * 20)[:20],
        "seq": "1",
    }
    path = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)
    kwargs: dict[str, Any] = {}
    headers = {} if token is None else {"x-api-token": token}
    if (method, template) == ("PUT", "/edge-config"):
        kwargs["json"] = world.config  # the edge's own config: a permitted PUT changes nothing
    elif method == "POST":
        kwargs["params"] = {"detector_id": world.detector_id}
        kwargs["content"] = jpeg(250)
        headers["content-type"] = "image/jpeg"
    return httpx.request(method, world.edge.edge_api_url + path, headers=headers, timeout=30, **kwargs)


def _protected() -> list[tuple[str, str, frozenset[str]]]:
    return [(m, p, allowed) for (m, p), allowed in sorted(POLICY.items()) if allowed is not PUBLIC]


def test_another_accounts_tokens_get_403_on_every_edge_route(world: World) -> None:
    failures: list[str] = []
    tried = 0
    for method, template, _ in _protected():
        for role, token in world.tokens_b.items():
            response = _call(world, method, template, token)
            tried += 1
            where = f"{role}@B {method} {template} -> {response.status_code} {response.text[:160]}"
            if response.status_code != 403 or response.json().get("code") != "forbidden":
                failures.append(f"{where}: expected 403 forbidden")
            elif "another account" not in response.json()["detail"]:
                failures.append(f"{where}: the message does not say why")
            sent = str(response.request.url)
            if any(m in response.text and m not in sent for m in (world.image_query_id, world.detector_id)):
                failures.append(f"{where}: leaks account A's ids")
    assert not failures, "\n".join(failures)
    assert tried == 4 * len(_protected()) >= 72, tried
    # Nothing of that changed the edge: A's query still there, the config unchanged.
    with httpx.Client(base_url=world.edge.edge_api_url, headers={"x-api-token": world.tokens_a["admin"]}) as admin:
        assert _ok(admin.get(f"/device-api/v1/image-queries/{world.image_query_id}"))["id"] == world.image_query_id
        assert _ok(admin.get("/edge-config")) == world.config


def test_each_role_of_the_edges_account_is_held_to_its_policy(world: World) -> None:
    failures: list[str] = []
    for method, template, allowed in _protected():
        for role in ROLES:
            response = _call(world, method, template, world.tokens_a[role])
            where = f"{role}@A {method} {template} -> {response.status_code} {response.text[:160]}"
            if response.status_code >= 500:
                failures.append(where)
            elif role in allowed and response.status_code in (401, 403):
                failures.append(f"{where}: expected access")
            elif role not in allowed and (response.status_code != 403 or "may not do this" not in response.text):
                failures.append(f"{where}: expected 403 naming the permission")
    assert not failures, "\n".join(failures)


def test_unknown_and_missing_tokens_get_401_on_every_edge_route(world: World) -> None:
    failures = []
    for method, template, _ in _protected():
        for token in (None, "io_unknowntoken_" + uuid.uuid4().hex):
            response = _call(world, method, template, token)
            if response.status_code != 401 or response.json().get("code") != "unauthenticated":
                failures.append(f"{method} {template} token={token is not None} -> {response.status_code}")
    assert not failures, "\n".join(failures)


def test_public_routes_need_no_token(world: World) -> None:
    for (method, path), allowed in POLICY.items():
        if allowed is PUBLIC:
            response = httpx.request(method, world.edge.edge_api_url + path, timeout=30)
            assert response.status_code == 200, (path, response.status_code)


def test_the_sdk_through_the_gateway_sees_the_same_rules(world: World) -> None:
    """The real groundlight SDK against the edge gateway: a foreign account cannot even
    construct a client; the edge's own device submits, its reviewer reads but may not submit."""
    with pytest.raises(GroundlightClientError):  # the SDK words it as "unable to create a working API token"
        Groundlight(endpoint=world.edge.gateway_url, api_token=world.tokens_b["device"])
    me = httpx.get(f"{world.edge.gateway_url}/v1/me", headers={"x-api-token": world.tokens_b["device"]}, timeout=30)
    assert me.status_code == 403 and "another account" in me.json()["detail"]  # not replayed to the cloud
    device = Groundlight(endpoint=world.edge.gateway_url, api_token=world.tokens_a["device"])
    iq = device.submit_image_query(world.detector_id, jpeg(250), wait=0)
    assert iq.result is not None and iq.result.from_edge is True
    reviewer = Groundlight(endpoint=world.edge.gateway_url, api_token=world.tokens_a["reviewer"])
    assert reviewer.get_image_query(iq.id).id == iq.id
    with pytest.raises(ForbiddenException, match="needs 'submit'"):
        reviewer.submit_image_query(world.detector_id, jpeg(250), wait=0)
