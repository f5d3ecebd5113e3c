"""The edge gateway under idle and slow clients: real nginx (the rendered gateway config)
in front of the real edge API and inference service, real TCP connections from loopback,
and the real ``groundlight`` SDK 1.3.1 as the normal client.

Before the gateway limits (nginx's 1024 connections per worker, 60 s to send headers),
about 1,100 idle connections took it down for as long as they were held: 88 of 88 normal
queries failed (issue 11, finding 6). Run against that configuration, the first test
here fails the same way: its first SDK query gets "Remote end closed connection without
response". (Connections that have sent nothing at all, nginx would drop to make room;
one that has begun a request it keeps, so the idle connections here send a request line.)
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from groundlight import Groundlight

from tests.support.edge_stack import EdgeStack, edge_stack, load_nginx_renderer
from tests.support.procs import wait_http
from tests.support.slow_clients import held_connections, nginx_seconds

from .conftest import jpeg

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    # The SDK's urllib3 pool may still hold a socket when a test ends.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

DET = "det_" + "GatewayLimits0Detector00001"
IDLE_CONNECTIONS = 1_100
REQUEST_LINE = b"GET /health/live HTTP/1.1\r\n"  # and then nothing: headers never end
NORMAL_QUERIES = 40
GATEWAY_TEMPLATE = Path(load_nginx_renderer().GATEWAY_TEMPLATE)
HEADER_TIMEOUT_S = nginx_seconds(GATEWAY_TEMPLATE, "client_header_timeout")
PER_ADDRESS = int(re.search(r"limit_conn \S+ (\d+);", GATEWAY_TEMPLATE.read_text())[1])  # type: ignore[index]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeStack]:
    config = {
        "global_config": {"refresh_rate": 60, "confident_audit_rate": 0},
        "detectors": [{"detector_id": DET, "edge_inference_config": "no_cloud", "name": "bright", "query": "Bright?"}],
    }
    with edge_stack(tmp_path_factory.mktemp("gateway-limits"), config, {DET: ("NO", "YES")}) as running:
        wait_http(f"{running.inference_url}/detectors/{DET}/ready", timeout=60)
        yield running


def gateway_port(stack: EdgeStack) -> int:
    port = urlsplit(stack.gateway_url).port
    assert port is not None
    return port


def normal_query(gl: Groundlight) -> str:
    """One SDK query answered at the edge; returns its label (raises on any failure)."""
    iq = gl.submit_image_query(DET, jpeg(250), wait=0)
    assert iq.result.from_edge is True
    return str(iq.result.label.value)


def test_1100_idle_connections_do_not_stop_normal_queries(stack: EdgeStack) -> None:
    gl = Groundlight(endpoint=stack.gateway_url, api_token=stack.token)
    with held_connections(gateway_port(stack), IDLE_CONNECTIONS, REQUEST_LINE) as idle:
        started = time.monotonic()
        # Sequential SDK queries and a few at once, while every idle connection is held.
        labels = [normal_query(gl) for _ in range(NORMAL_QUERIES // 2)]
        with ThreadPoolExecutor(4) as pool:
            labels += list(pool.map(lambda _: normal_query(gl), range(NORMAL_QUERIES // 2)))
        elapsed = time.monotonic() - started
        assert labels == ["YES"] * NORMAL_QUERIES
        # They were held by nginx all along (not waiting in the kernel's backlog): it closes
        # each one itself, when its header timeout runs out, and not before.
        assert elapsed < HEADER_TIMEOUT_S - 1, f"queries took {elapsed:.1f} s, past the header timeout"
        assert idle.still_open() == IDLE_CONNECTIONS
        closed_after = idle.wait_all_closed(timeout=HEADER_TIMEOUT_S + 15)
        assert HEADER_TIMEOUT_S - 1 <= closed_after <= HEADER_TIMEOUT_S + 15
    print(
        f"gateway: {len(labels)} of {NORMAL_QUERIES} SDK queries answered in {elapsed:.1f} s while"
        f" {IDLE_CONNECTIONS} connections were held; nginx closed all of them {closed_after:.1f} s after they opened"
    )
    assert normal_query(gl) == "YES"


def test_a_slow_header_client_is_cut_after_the_header_timeout(stack: EdgeStack) -> None:
    """A slowloris: the request line at once, then one header byte a second, never the end."""
    with held_connections(gateway_port(stack), 20, REQUEST_LINE + b"Host: edge\r\n") as slow:
        deadline = time.monotonic() + HEADER_TIMEOUT_S + 15
        while slow.still_open() and time.monotonic() < deadline:
            for sock in slow.sockets:
                try:
                    sock.send(b"X")
                except OSError:
                    continue  # already cut
            time.sleep(1.0)
        cut_after = slow.wait_all_closed(timeout=1.0)
    assert HEADER_TIMEOUT_S - 1 <= cut_after <= HEADER_TIMEOUT_S + 5, cut_after
    print(f"gateway: 20 slowloris clients cut {cut_after:.1f} s after they opened")
    assert httpx.get(f"{stack.gateway_url}/health/live", timeout=5).status_code == 200


def test_requests_in_progress_per_address_are_limited_with_json_429(stack: EdgeStack) -> None:
    """``PER_ADDRESS`` uploads whose body never arrives hold their slots; the next request
    from the same address gets a JSON 429 at once, and is served again once they end."""
    upload = (
        f"POST /device-api/v1/image-queries?detector_id={DET} HTTP/1.1\r\nHost: edge\r\n"
        f"x-api-token: {stack.token}\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
    ).encode()
    with held_connections(gateway_port(stack), PER_ADDRESS, upload) as uploads:
        deadline = time.monotonic() + 10
        while True:  # until nginx has read every held request's headers
            refused = httpx.get(f"{stack.gateway_url}/health/live", timeout=5)
            if refused.status_code == 429 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "too_many_connections" and str(PER_ADDRESS) in refused.json()["detail"]
        assert uploads.still_open() == PER_ADDRESS
    wait_http(f"{stack.gateway_url}/health/live", timeout=10)
    assert normal_query(Groundlight(endpoint=stack.gateway_url, api_token=stack.token)) == "YES"
