"""Isolation on the cloud API: every route, with a foreign account's tokens and with
each role of the owning account, against a real ``python -m intellioptics_cloud``.

The route list comes from the app itself (its OpenAPI, plus the hidden SDK and edge
aliases), and every route must appear in ``POLICY`` below: a new route fails this test
until someone states who may call it, so none can slip through unchecked.
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

from intellioptics_cloud.app import create_app
from intellioptics_cloud.settings import CloudSettings
from tests.reliability.helpers import CloudServer, cloud_server, jpeg, upload_brightness_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALL = frozenset({"admin", "reviewer", "device", "worker"})
ADMIN = frozenset({"admin"})
REVIEW = frozenset({"admin", "reviewer"})
SUBMIT = frozenset({"admin", "device"})
EDGE = frozenset({"admin", "device"})
WORK = frozenset({"admin", "worker"})
MODEL_READ = frozenset({"admin", "device", "worker"})
PUBLIC = None  # no token needed (probes, metrics, signed download)

# (method, path under /v1 or /edge-api/v1) -> the roles of the owning account allowed to call it.
# Written from the product's rules, not read from the code: devices never see the review
# queue or labels, reviewers never manage tokens, workers only train.
POLICY: dict[tuple[str, str], frozenset[str] | None] = {
    ("GET", "/health/live"): PUBLIC,
    ("GET", "/health/ready"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/v1/me"): ALL,
    ("GET", "/v1/api-tokens/by-snippet/{snippet}"): ALL,
    ("GET", "/v1/tokens"): ADMIN,
    ("POST", "/v1/tokens"): ADMIN,
    ("DELETE", "/v1/tokens/{token_id}"): ADMIN,
    ("POST", "/v1/accounts"): ADMIN,
    ("POST", "/v1/detectors"): ADMIN,
    ("GET", "/v1/detectors"): ALL,
    ("GET", "/v1/detectors/{detector_id}"): ALL,
    ("PATCH", "/v1/detectors/{detector_id}"): ADMIN,
    ("DELETE", "/v1/detectors/{detector_id}"): ADMIN,
    ("POST", "/v1/detectors/{detector_id}/settings"): ADMIN,
    ("GET", "/v1/detectors/{detector_id}/settings"): ALL,
    ("GET", "/v1/detectors/{detector_id}/stats"): ALL,
    ("GET", "/v1/detectors/{detector_id}/stats/edge-learning"): ALL,
    ("GET", "/v1/detectors/{detector_id}/dataset"): WORK,
    ("GET", "/v1/detector-groups"): ALL,
    ("POST", "/v1/detector-groups"): ADMIN,
    ("POST", "/v1/image-queries"): SUBMIT,
    ("POST", "/v1/image-queries/batch"): SUBMIT,
    ("POST", "/v1/image-queries/rgbd"): SUBMIT,
    ("GET", "/v1/image-queries"): ALL,
    ("GET", "/v1/image-queries/{image_query_id}"): ALL,
    ("GET", "/v1/image-queries/{image_query_id}/image"): ALL,
    ("GET", "/v1/image-queries/{image_query_id}/overlay"): ALL,
    ("GET", "/v1/image-queries/{image_query_id}/depth"): ALL,
    ("POST", "/v1/labels"): REVIEW,
    ("GET", "/v1/review/queue"): REVIEW,
    ("POST", "/v1/review/claim"): REVIEW,
    ("POST", "/v1/review/items/{item_id}/label"): REVIEW,
    ("POST", "/v1/review/items/{item_id}/skip"): REVIEW,
    ("POST", "/v1/review/items/{item_id}/release"): REVIEW,
    ("POST", "/v1/review/items/{item_id}/undo"): REVIEW,
    ("GET", "/v1/review/stats"): REVIEW,
    ("GET", "/v1/detectors/{detector_id}/models"): ALL,
    ("POST", "/v1/detectors/{detector_id}/models"): WORK,
    ("GET", "/v1/detectors/{detector_id}/models/compare"): ALL,
    ("POST", "/v1/detectors/{detector_id}/models/rollback"): ADMIN,
    ("GET", "/v1/detectors/{detector_id}/models/{version}"): ALL,
    ("DELETE", "/v1/detectors/{detector_id}/models/{version}"): ADMIN,
    ("POST", "/v1/detectors/{detector_id}/models/{version}/activate"): ADMIN,
    ("GET", "/v1/detectors/{detector_id}/models/{version}/download"): MODEL_READ,
    ("GET", "/v1/model-binaries/{binary_id}"): PUBLIC,
    ("POST", "/v1/edges/register"): EDGE,
    ("POST", "/v1/edges/{edge_id}/heartbeat"): EDGE,
    ("GET", "/v1/edges"): ALL,
    ("GET", "/v1/edges/{edge_id}"): ALL,
    ("POST", "/v1/edge/report-metrics"): EDGE,
    ("POST", "/v1/detectors/{detector_id}/training-jobs"): ADMIN,
    ("GET", "/v1/training-jobs"): ALL,
    ("POST", "/v1/training-jobs/claim"): WORK,
    ("GET", "/v1/training-jobs/{job_id}"): ALL,
    ("POST", "/v1/training-jobs/{job_id}/cancel"): ADMIN,
    ("POST", "/v1/training-jobs/{job_id}/progress"): WORK,
    ("POST", "/v1/training-jobs/{job_id}/complete"): WORK,
    ("GET", "/edge-api/v1/fetch-model-urls/{detector_id}"): EDGE,
}

# Aliases the app serves with the same handlers but keeps out of its OpenAPI.
ALIASES = (("/v1/", "/device-api/v1/"), ("/edge-api/v1/", "/v1/edge/"), ("/edge-api/v1/", "/device-api/v1/edge/"))


@dataclass
class World:
    """Account A's objects (the targets) and tokens of both accounts."""

    server: CloudServer
    ids: dict[str, str]
    tokens_a: dict[str, str]
    tokens_b: dict[str, str]

    @property
    def markers(self) -> list[str]:
        """Strings that must never appear in an answer to account B."""
        return [v for k, v in self.ids.items() if k not in {"version"}]


def _ok(response: httpx.Response, expected: int = 200) -> Any:
    assert response.status_code == expected, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json() if response.content else None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("isolation")
    with cloud_server(base, INTELLIOPTICS_AUTH_MAX_FAILURES="0") as server, server.client() as admin:
        ids: dict[str, str] = {}
        tokens_a = {"admin": server.token}
        for role in ("reviewer", "device", "worker"):
            body = _ok(admin.post("/v1/tokens", json={"name": f"a-{role}", "role": role}), 201)
            tokens_a[role] = body["token"]
            ids[f"token_{role}"] = body["id"]
        ids["snippet"] = tokens_a["device"][:20]
        detector = _ok(
            admin.post("/v1/detectors", json={"name": "secret-a-" + uuid.uuid4().hex[:8], "query": "A?"}), 201
        )
        ids["detector"], ids["detector_name"] = detector["id"], detector["name"]
        iq = _ok(
            admin.post(
                "/v1/image-queries",
                params={"detector_id": detector["id"], "human_review": "ALWAYS"},
                content=jpeg(128),
                headers={"content-type": "image/jpeg"},
            ),
            201,
        )
        ids["image_query"] = iq["id"]
        queue = _ok(admin.get("/v1/review/queue"))
        assert queue["items"], "the escalated query did not reach the review queue"
        ids["item"] = queue["items"][0]["id"]
        model = _ok(upload_brightness_model(admin, detector["id"]), 201)
        ids["model"], ids["version"] = model["id"], str(model["version"])
        with server.client(tokens_a["device"]) as device:
            edge = _ok(device.post("/v1/edges/register", json={"name": "edge-a", "software_version": "1"}), 201)
        ids["edge"] = edge["id"]
        job = _ok(admin.post(f"/v1/detectors/{detector['id']}/training-jobs", json={}), 201)
        ids["job"] = job["id"]
        account = _ok(admin.post("/v1/accounts", json={"name": "account-b"}), 201)
        tokens_b = {"admin": account["admin_token"]}
        with server.client(tokens_b["admin"]) as admin_b:
            for role in ("reviewer", "device", "worker"):
                tokens_b[role] = _ok(admin_b.post("/v1/tokens", json={"name": f"b-{role}", "role": role}), 201)["token"]
            _ok(admin_b.post("/v1/detectors", json={"name": "b-detector", "query": "B?"}), 201)
        yield World(server, ids, tokens_a, tokens_b)


def all_routes() -> list[tuple[str, str]]:
    """Every (method, path) the cloud app answers: OpenAPI plus the hidden aliases."""
    app = create_app(CloudSettings(environment="test", data_dir=Path("/nonexistent")))
    routes = [(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops]
    return routes


def test_every_route_has_a_stated_policy() -> None:
    routes = set(all_routes())
    missing = sorted(routes - set(POLICY))
    assert not missing, f"routes with no isolation policy in tests/reliability: {missing}"
    stale = sorted(set(POLICY) - routes)
    assert not stale, f"POLICY names routes the app no longer has: {stale}"


def _variants(path: str) -> list[str]:
    out = [path]
    for prefix, alias in ALIASES:
        if path.startswith(prefix):
            out.append(alias + path[len(prefix) :])
    return out


def _bodies(ids: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    """Valid request bodies, so that a refusal is the policy's and not the validator's."""
    d = "/v1/detectors/{detector_id}"
    return {
        ("POST", "/v1/tokens"): {"json": {"name": "probe", "role": "admin"}},
        ("POST", "/v1/accounts"): {"json": {"name": "probe-" + uuid.uuid4().hex[:6]}},
        ("POST", "/v1/detectors"): {"json": {"name": "probe-" + uuid.uuid4().hex[:6], "query": "probe?"}},
        ("PATCH", d): {"json": {"name": "renamed-by-foreigner"}},
        ("POST", f"{d}/settings"): {"json": {"promotion_policy": "manual"}},
        ("POST", "/v1/detector-groups"): {"json": {"name": "probe-group"}},
        ("POST", "/v1/image-queries"): {
            "params": {"detector_id": ids["detector"]},
            "content": jpeg(90),
            "headers": {"content-type": "image/jpeg"},
        },
        ("POST", "/v1/labels"): {"json": {"image_query_id": ids["image_query"], "label": "YES"}},
        ("POST", "/v1/review/items/{item_id}/label"): {"json": {"label": "YES"}},
        ("GET", f"{d}/models/compare"): {"params": {"a": ids["version"], "b": ids["version"]}},
        ("POST", f"{d}/models"): {
            "files": {"primary": ("model.buf", b"\x00", "application/octet-stream")},
            "data": {"manifest": "{}"},
        },
        ("POST", "/v1/edges/register"): {"json": {"name": "probe-edge", "software_version": "1"}},
        ("POST", "/v1/edges/{edge_id}/heartbeat"): {"json": {"software_version": "1"}},
        ("POST", "/v1/edge/report-metrics"): {
            "json": {
                "edge_id": ids["edge"],
                "entries": [{"detector_id": ids["detector"], "hour": "2026-01-01T00:00:00Z", "counters": {"n": 1}}],
            }
        },
        ("POST", f"{d}/training-jobs"): {"json": {}},
        ("POST", "/v1/training-jobs/{job_id}/progress"): {"json": {"progress": 0.5}},
        ("POST", "/v1/training-jobs/{job_id}/complete"): {"json": {"error": "probe"}},
    }


def _request(world: World, method: str, template: str, path_template: str, token: str | None) -> httpx.Response:
    """``template`` is the POLICY key, ``path_template`` the variant (alias) to call."""
    ids = world.ids
    values = {
        "detector_id": ids["detector"],
        "image_query_id": ids["image_query"],
        "item_id": ids["item"],
        "token_id": ids["token_device"],
        "edge_id": ids["edge"],
        "job_id": ids["job"],
        "version": ids["version"],
        "snippet": ids["snippet"],
    }
    path = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path_template)
    kwargs = dict(_bodies(ids).get((method, template), {}))
    headers = dict(kwargs.pop("headers", {}))
    if token:
        headers["x-api-token"] = token
    with httpx.Client(base_url=world.server.url, timeout=30) as client:
        return client.request(method, path, headers=headers, **kwargs)


def test_no_foreign_token_reaches_account_a(world: World) -> None:
    """Account B's four roles on every route and alias with account A's ids: never 2xx on
    A's objects, never a 5xx, never one of A's ids or names in the body."""
    tried = 0
    failures: list[str] = []
    for method, template in sorted(POLICY):
        if POLICY[(method, template)] is PUBLIC:
            continue
        for path in _variants(template):
            for role, token in world.tokens_b.items():
                response = _request(world, method, template, path, token)
                tried += 1
                where = f"{role}@B {method} {path} -> {response.status_code}"
                if response.status_code >= 500:
                    failures.append(f"{where}: server error {response.text[:200]}")
                if "{" in template and response.status_code < 400:
                    failures.append(f"{where}: account B reached account A's object")
                # An error may echo the id the caller sent; anything else of A's is a leak.
                sent = str(response.request.url) + response.request.read().decode(errors="replace")
                leaked = [m for m in world.markers if m in response.text and m not in sent]
                if leaked:
                    failures.append(f"{where}: body leaks {leaked}")
    assert not failures, "\n".join(failures)
    assert tried >= 390, tried  # 49 protected routes, their aliases, 4 roles
    # Account A's objects are untouched by all of that.
    with world.server.client() as admin:
        detector = _ok(admin.get(f"/v1/detectors/{world.ids['detector']}"))
        assert detector["name"] == world.ids["detector_name"]
        assert _ok(admin.get(f"/v1/image-queries/{world.ids['image_query']}"))["id"] == world.ids["image_query"]
    with world.server.client(world.tokens_a["device"]) as device:
        assert device.get("/v1/me").status_code == 200


def test_each_role_is_held_to_its_policy(world: World) -> None:
    """A's reviewer, device and worker tokens: 403 on every route outside their role;
    on reads inside it, neither 401 nor 403."""
    failures: list[str] = []
    for (method, template), allowed in sorted(POLICY.items()):
        if allowed is PUBLIC:
            continue
        for role in ("reviewer", "device", "worker"):
            permitted = role in allowed
            if permitted and method != "GET":
                continue  # writes by permitted roles are covered by each part's own tests
            for path in _variants(template):
                response = _request(world, method, template, path, world.tokens_a[role])
                where = f"{role}@A {method} {path} -> {response.status_code} {response.text[:120]}"
                if response.status_code >= 500:
                    failures.append(where)
                elif not permitted and response.status_code != 403:
                    failures.append(f"{where}: expected 403")
                elif permitted and response.status_code in (401, 403):
                    failures.append(f"{where}: expected access")
                if not permitted and response.status_code == 403:
                    assert response.json()["code"] == "forbidden", where
    assert not failures, "\n".join(failures)


def test_no_token_gets_401_on_every_protected_route(world: World) -> None:
    failures = []
    for (method, template), allowed in sorted(POLICY.items()):
        if allowed is PUBLIC:
            continue
        for path in _variants(template):
            response = _request(world, method, template, path, None)
            if response.status_code != 401 or response.json().get("code") != "unauthenticated":
                failures.append(f"{method} {path} -> {response.status_code}")
    assert not failures, "\n".join(failures)


def test_device_token_cannot_label_or_read_review_items(world: World) -> None:
    with world.server.client(world.tokens_a["device"]) as device:
        assert device.get("/v1/review/queue").status_code == 403
        assert device.post("/v1/review/claim").status_code == 403
        label = device.post(f"/v1/review/items/{world.ids['item']}/label", json={"label": "YES"})
        assert label.status_code == 403
        assert (
            device.post("/v1/labels", json={"image_query_id": world.ids["image_query"], "label": "NO"}).status_code
            == 403
        )


def test_reviewer_token_cannot_manage_tokens(world: World) -> None:
    with world.server.client(world.tokens_a["reviewer"]) as reviewer:
        assert reviewer.get("/v1/tokens").status_code == 403
        assert reviewer.post("/v1/tokens", json={"name": "escalate", "role": "admin"}).status_code == 403
        assert reviewer.delete(f"/v1/tokens/{world.ids['token_device']}").status_code == 403
