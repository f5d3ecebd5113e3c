"""The nginx configurations of both gateways, rendered as the official nginx image renders
them (envsubst of the variables compose sets), checked with ``nginx -t`` and, for the
cloud gateway, run in front of a real cloud API.

Host names of the compose network (``edge-api``, ``cloud-api``) do not resolve here. A
static ``upstream`` (the edge gateway's edge API) is resolved by nginx when it loads the
configuration, so ``nginx -t`` would fail on the name alone: those are rendered with
127.0.0.1 and a free port instead, the only value changed. Names used through a variable
and a ``resolver`` (the cloud URL, the cloud API) are resolved per request, at run time,
and stay as compose sets them for ``nginx -t``.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.deployment import (
    CLOUD_COMPOSE,
    CLOUD_ENV,
    EDGE_COMPOSE,
    EDGE_ENV,
    EDGE_OFFLINE,
    NGINX_SERVICES,
    envsubst,
    image_connection_budget,
    official_image_nginx_conf,
    resolved_compose,
    service_environment,
)
from tests.support.procs import REPO_ROOT as REPO
from tests.support.procs import free_port, nginx_binary, nginx_process, python_module, running, wait_http
from tests.support.slow_clients import held_connections, nginx_seconds

pytestmark = pytest.mark.integration

EDGE_TEMPLATE = NGINX_SERVICES[(EDGE_COMPOSE, "nginx")]
CLOUD_TEMPLATE = NGINX_SERVICES[(CLOUD_COMPOSE, "nginx")]


def render(template: Path, environment: dict[str, str | None], prefix: Path) -> Path:
    """Lay out a prefix like the image: nginx.conf including conf.d/<template name>.conf."""
    conf_d = prefix / "conf.d"
    conf_d.mkdir(parents=True)
    (prefix / "tmp").mkdir()
    values = {key: value for key, value in environment.items() if value is not None}
    rendered = envsubst(template.read_text(), values)
    (conf_d / template.name.removesuffix(".template")).write_text(rendered)
    main = prefix / "nginx.conf"
    main.write_text(official_image_nginx_conf(prefix, conf_d))
    return main


def nginx_test(conf: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [nginx_binary(), "-t", "-p", str(prefix), "-c", str(conf), "-e", "stderr", "-g", f"pid {prefix}/nginx.pid;"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("offline", [False, True], ids=["online", "offline"])
def test_edge_gateway_config_is_valid(offline: bool, tmp_path: Path) -> None:
    files = (EDGE_COMPOSE, EDGE_OFFLINE) if offline else (EDGE_COMPOSE,)
    environment = service_environment(resolved_compose(files, EDGE_ENV)["services"]["nginx"])
    assert environment["INTELLIOPTICS_EDGE_API_UPSTREAM"] == "edge-api:8718"
    environment["INTELLIOPTICS_EDGE_API_UPSTREAM"] = f"127.0.0.1:{free_port()}"  # see the module docstring
    conf = render(EDGE_TEMPLATE, environment, tmp_path)
    rendered = (tmp_path / "conf.d" / "gateway.conf").read_text()
    directives = "\n".join(line for line in rendered.splitlines() if not line.lstrip().startswith("#"))
    assert "${" not in directives, "a placeholder was left unrendered"
    assert "listen 30101;" in rendered
    expected_cloud = "" if offline else "http://cloud.example.internal:8080"
    assert f'set $intellioptics_cloud "{expected_cloud}";' in rendered
    result = nginx_test(conf, tmp_path)
    assert result.returncode == 0, result.stderr


def test_cloud_gateway_config_is_valid(tmp_path: Path) -> None:
    environment = service_environment(resolved_compose((CLOUD_COMPOSE,), CLOUD_ENV)["services"]["nginx"])
    conf = render(CLOUD_TEMPLATE, environment, tmp_path)
    rendered = (tmp_path / "conf.d" / "default.conf").read_text()
    assert "set $cloud_api http://cloud-api:8000;" in rendered and "resolver 127.0.0.11 " in rendered
    result = nginx_test(conf, tmp_path)
    assert result.returncode == 0, result.stderr


def test_unrendered_placeholder_is_refused(tmp_path: Path) -> None:
    """Why compose must set every placeholder: envsubst leaves unset ones, nginx refuses them."""
    environment = service_environment(resolved_compose((CLOUD_COMPOSE,), CLOUD_ENV)["services"]["nginx"])
    environment.pop("INTELLIOPTICS_CLOUD_API_UPSTREAM")
    result = nginx_test(render(CLOUD_TEMPLATE, environment, tmp_path), tmp_path)
    assert result.returncode != 0 and "intellioptics_cloud_api_upstream" in result.stderr.lower()


def test_images_and_make_run_share_the_connection_budget() -> None:
    """The budget docs/edge-config.md explains: the same in both images and in the main
    configuration that `make run` and the tests render (edge/nginx/nginx.conf.template)."""
    local = (REPO / "edge" / "nginx" / "nginx.conf.template").read_text()
    expected = (
        int(re.search(r"worker_connections (\d+);", local)[1]),  # type: ignore[index]
        int(re.search(r"worker_rlimit_nofile (\d+);", local)[1]),  # type: ignore[index]
    )
    assert expected[0] >= 4096 and expected[1] >= 2 * expected[0]
    for name in ("edge-nginx.Dockerfile", "cloud-nginx.Dockerfile"):
        assert image_connection_budget(REPO / "deploy" / name) == expected, name


@pytest.mark.parametrize("template", [EDGE_TEMPLATE, CLOUD_TEMPLATE], ids=["edge", "cloud"])
def test_gateways_limit_idle_and_slow_clients(template: Path) -> None:
    """Each gateway's timeouts and per-address limit (the edge's are exercised for real in
    edge/api/tests/test_gateway_limits.py, the cloud's header timeout below)."""
    text = template.read_text()
    for directive, seconds in (
        ("client_header_timeout", 10), ("client_body_timeout", 30), ("send_timeout", 30), ("keepalive_timeout", 30),
    ):  # fmt: skip
        assert re.search(rf"^\s*{directive} {seconds}s;", text, re.M), directive
    assert re.search(r"^\s*limit_conn \S+ 256;", text, re.M)
    assert re.search(r"^\s*limit_conn_status (429|449);", text, re.M)  # 449: the edge's, answered as a JSON 429


@pytest.fixture(scope="module")
def cloud_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """The cloud gateway in front of a real cloud API (SQLite, filesystem blobs)."""
    base = tmp_path_factory.mktemp("cloud-gateway")
    token = secrets.token_hex(24)
    api_port = free_port()
    api = python_module(
        "cloud-api",
        "intellioptics_cloud",
        base,
        {
            "INTELLIOPTICS_DATA_DIR": str(base / "data"),
            "INTELLIOPTICS_CLOUD_HOST": "127.0.0.1",
            "INTELLIOPTICS_CLOUD_PORT": str(api_port),
            "INTELLIOPTICS_BOOTSTRAP_TOKEN": token,
            "INTELLIOPTICS_ENVIRONMENT": "test",
        },
    )
    # The UI files as the image has them after `npm run build`.
    html = base / "html"
    (html / "assets").mkdir(parents=True)
    (html / "index.html").write_text(
        '<!doctype html><div id="root"></div><script src="./assets/index-abc123.js"></script>'
    )
    (html / "assets" / "index-abc123.js").write_text("console.log('intellioptics');")

    environment = service_environment(resolved_compose((CLOUD_COMPOSE,), CLOUD_ENV)["services"]["nginx"])
    environment["INTELLIOPTICS_CLOUD_API_UPSTREAM"] = f"127.0.0.1:{api_port}"
    environment["INTELLIOPTICS_NGINX_RESOLVER"] = "127.0.0.1"
    gateway_port = free_port()
    prefix = base / "nginx"
    conf = render(CLOUD_TEMPLATE, environment, prefix)
    server = prefix / "conf.d" / "default.conf"
    text = server.read_text()
    assert "listen 8080;" in text and "root /usr/share/nginx/html;" in text
    server.write_text(
        text.replace("listen 8080;", f"listen 127.0.0.1:{gateway_port};").replace("/usr/share/nginx/html", str(html))
    )
    gateway = nginx_process(conf, prefix)
    with running(api), running(gateway):
        wait_http(f"http://127.0.0.1:{api_port}/health/ready", timeout=60, process=api)
        wait_http(f"http://127.0.0.1:{gateway_port}/nginx-health", timeout=20, process=gateway)
        yield {"url": f"http://127.0.0.1:{gateway_port}", "token": token, "api": api}


def test_cloud_gateway_serves_the_ui(cloud_gateway: dict[str, object]) -> None:
    url = cloud_gateway["url"]
    index = httpx.get(f"{url}/")
    assert index.status_code == 200 and 'id="root"' in index.text
    assert index.headers["cache-control"] == "no-cache"
    assert index.headers["content-type"].startswith("text/html")
    asset = httpx.get(f"{url}/assets/index-abc123.js")
    assert asset.status_code == 200 and "intellioptics" in asset.text
    assert "immutable" in asset.headers["cache-control"]
    assert httpx.get(f"{url}/assets/missing.js").status_code == 404


def test_cloud_gateway_proxies_the_api(cloud_gateway: dict[str, object]) -> None:
    url, token = cloud_gateway["url"], cloud_gateway["token"]
    me = httpx.get(f"{url}/v1/me", headers={"x-api-token": str(token), "x-request-id": "req-123"})
    assert me.status_code == 200 and me.json()["role"] == "admin"
    assert me.headers.get_list("x-request-id") == ["req-123"]
    refused = httpx.get(f"{url}/device-api/v1/me", headers={"x-api-token": "wrong_token_wrong_token_000"})
    assert refused.status_code == 401 and refused.json()["code"]
    assert httpx.get(f"{url}/health/ready").json()["status"] == "ready"
    assert httpx.get(f"{url}/openapi.json").json()["paths"]
    generated = httpx.get(f"{url}/health/live").headers.get_list("x-request-id")
    assert len(generated) == 1 and len(generated[0]) == 32


def test_cloud_gateway_errors_are_json(cloud_gateway: dict[str, object]) -> None:
    url = cloud_gateway["url"]
    metrics = httpx.get(f"{url}/metrics")
    assert metrics.status_code == 404 and metrics.json()["code"] == "not_found"
    too_large = httpx.post(f"{url}/v1/image-queries?detector_id=det_x", content=b"\0" * (21 * 1024 * 1024))
    assert too_large.status_code == 413 and too_large.json()["code"] == "payload_too_large"


def test_cloud_gateway_list_links_use_the_address_the_client_used(cloud_gateway: dict[str, object]) -> None:
    url, token = str(cloud_gateway["url"]), str(cloud_gateway["token"])
    headers = {"x-api-token": token}
    for name in ("links-a", "links-b"):
        created = httpx.post(f"{url}/v1/detectors", headers=headers, json={"name": name, "query": "Links?"})
        assert created.status_code == 201, created.text
    direct = httpx.get(f"{url}/v1/detectors", headers=headers, params={"page_size": 1}).json()
    assert direct["next"].startswith(f"{url}/v1/detectors?") and direct["previous"] is None
    # As the edge gateway forwards an SDK call: the edge's address, not the cloud's.
    via_edge = {**headers, "x-forwarded-host": "edge-7.plant.example:30101"}
    page = httpx.get(f"{url}/v1/detectors", headers=via_edge, params={"page_size": 1, "page": 2}).json()
    assert page["previous"].startswith("http://edge-7.plant.example:30101/v1/detectors?"), page


def test_cloud_gateway_cuts_slow_header_clients(cloud_gateway: dict[str, object]) -> None:
    port = int(str(cloud_gateway["url"]).rsplit(":", 1)[1])
    timeout_s = nginx_seconds(CLOUD_TEMPLATE, "client_header_timeout")
    with held_connections(port, 50, b"GET /v1/me HTTP/1.1\r\nHost: cloud\r\n") as slow:
        me = httpx.get(f"{cloud_gateway['url']}/v1/me", headers={"x-api-token": str(cloud_gateway["token"])})
        assert me.status_code == 200
        cut_after = slow.wait_all_closed(timeout=timeout_s + 15)
    assert timeout_s - 1 <= cut_after <= timeout_s + 15


def test_cloud_gateway_holds_stalled_uploads_and_limits_them_per_address(cloud_gateway: dict[str, object]) -> None:
    """Uploads whose body never arrives are held by nginx, not by the API (whose threads
    they took before: 50 of them and /v1/me timed out); 256 from one address fill its slots,
    and the next request from it gets a JSON 429 at once."""
    url, token = str(cloud_gateway["url"]), str(cloud_gateway["token"])
    port = int(url.rsplit(":", 1)[1])
    upload = (
        f"POST /v1/image-queries?detector_id=det_x HTTP/1.1\r\nHost: cloud\r\nx-api-token: {token}\r\n"
        "Content-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
    ).encode()
    me = f"{url}/v1/me"
    with held_connections(port, 100, upload):
        time.sleep(1.0)  # let nginx read every held request
        answered = httpx.get(me, headers={"x-api-token": token}, timeout=5)
        assert answered.status_code == 200, answered.text
        with held_connections(port, 156, upload):
            assert _first_429(me, timeout=20)["code"] == "too_many_connections"
    assert httpx.get(me, headers={"x-api-token": token}, timeout=5).status_code == 200


def _first_429(url: str, timeout: float) -> dict[str, object]:
    """The JSON body of the first 429 from ``url``, once nginx has counted every held upload.
    (A `return` location such as /nginx-health answers before the limit is checked.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(url, timeout=5.0)
        if response.status_code == 429:
            return dict(response.json())
        time.sleep(0.1)
    raise AssertionError(f"no 429 from {url} within {timeout} s")


def test_cloud_gateway_without_api(cloud_gateway: dict[str, object]) -> None:
    """Last: stops the API. The gateway answers a JSON 503 and keeps serving the UI."""
    cloud_gateway["api"].stop()  # type: ignore[attr-defined]
    url = cloud_gateway["url"]
    down = httpx.get(f"{url}/v1/me", headers={"x-api-token": str(cloud_gateway["token"])})
    assert down.status_code == 503 and down.json()["code"] == "cloud_unavailable"
    assert httpx.get(f"{url}/").status_code == 200
