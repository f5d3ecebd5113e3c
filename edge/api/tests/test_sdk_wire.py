"""Wire details the real ``groundlight`` SDK 1.3.1 depends on, where a scripted SDK
session found the cloud and the edge gateway answering what the SDK cannot read
(issue 12, item 7): a real cloud API serving a web UI, a real edge stack (nginx, edge
API, inference) forwarding to it, and the SDK against both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import requests
from groundlight import EdgeNotAvailableError, ExperimentalApi, Groundlight
from groundlight.edge.config import EdgeEndpointConfig
from groundlight_openapi_client.exceptions import ApiException

from tests.reliability.helpers import upload_brightness_model
from tests.support.cloud_stack import CLOUD_BOOTSTRAP_TOKEN, CloudAdmin, cloud_process
from tests.support.edge_stack import EdgeStack, edge_stack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    # The SDK's urllib3 pool may still hold a socket when a test ends.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

UI_PAGE = '<!doctype html><div id="root"></div>'
CAMERA = "203.0.113.7"  # a client off loopback, as the gateway passes it on (X-Forwarded-For)


@dataclass(frozen=True)
class Deployment:
    cloud_url: str
    edge: EdgeStack
    with_model: str
    without_model: str


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    base = tmp_path_factory.mktemp("sdk-wire")
    web = base / "web"  # the UI as `npm run build` leaves it: what matters is the SPA fallback
    (web / "assets").mkdir(parents=True)
    (web / "index.html").write_text(UI_PAGE)
    cloud = cloud_process(base / "cloud-data", base / "logs", extra_env={"INTELLIOPTICS_WEB_DIR": str(web)})
    cloud.start()
    try:
        admin = CloudAdmin(cloud.url)
        ids = []
        for name in ("wire-a", "wire-b", "wire-c"):
            created = admin.request("POST", "/v1/detectors", json={"name": name, "query": f"{name}?"})
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        with httpx.Client(base_url=cloud.url, headers={"x-api-token": CLOUD_BOOTSTRAP_TOKEN}, timeout=30) as client:
            uploaded = upload_brightness_model(client, ids[0])
            assert uploaded.status_code == 201, uploaded.text
        device_token = admin.create_token("sdk-wire-edge", "device")
        config = {
            "global_config": {"refresh_rate": 1},
            "detectors": [
                {"detector_id": ids[0], "name": "wire-a", "query": "wire-a?"},
                {"detector_id": ids[1], "name": "wire-b", "query": "wire-b?"},
            ],
        }
        with edge_stack(
            base / "edge", config, cloud_url=cloud.url, extra_env={"INTELLIOPTICS_DEVICE_TOKEN": device_token}
        ) as edge:
            yield Deployment(cloud.url, edge, with_model=ids[0], without_model=ids[1])
    finally:
        cloud.stop()


def test_edge_helpers_pointed_at_the_cloud_raise_edge_not_available(deployment: Deployment) -> None:
    """Was: the cloud answered /edge-config and friends with the UI's index.html (200), so
    the SDK raised JSONDecodeError."""
    gl = ExperimentalApi(endpoint=deployment.cloud_url, api_token=CLOUD_BOOTSTRAP_TOKEN)
    for call in (
        gl.edge.get_config,
        gl.edge.get_detector_readiness,
        gl.edge.get_upstream_endpoint,
        lambda: gl.edge.apply_config(EdgeEndpointConfig()),
    ):
        with pytest.raises(EdgeNotAvailableError):
            call()
    # The same helpers at the edge gateway work, and a browser still gets the UI.
    at_edge = ExperimentalApi(endpoint=deployment.edge.gateway_url, api_token=CLOUD_BOOTSTRAP_TOKEN)
    assert at_edge.edge.get_upstream_endpoint() == deployment.cloud_url
    browser = httpx.get(f"{deployment.cloud_url}/detectors", headers={"accept": "text/html,*/*;q=0.8"})
    assert browser.status_code == 200 and browser.text == UI_PAGE


def test_the_web_ui_answers_browsers_only_and_never_api_or_edge_paths(deployment: Deployment) -> None:
    """Was: the edge paths under the SDK's ``/device-api`` base, the other bases SDK 1.3.1
    accepts (``/v2``), the edge's outbox and streams, and clients that refuse HTML got the UI."""
    cloud = deployment.cloud_url
    gl = ExperimentalApi(endpoint=f"{cloud}/device-api", api_token=CLOUD_BOOTSTRAP_TOKEN)
    for call in (gl.edge.get_config, gl.edge.get_detector_readiness, gl.edge.get_upstream_endpoint):
        with pytest.raises(EdgeNotAvailableError):
            call()
    browser = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    for path in (
        "/edge-config",
        "/device-api/edge-config",
        "/edge-detector-readiness",
        "/device-api/edge-detector-readiness",
        "/edge-info",
        "/device-api/edge-info",
        "/v2/detectors",
        "/edge-outbox/pending",
        "/streams",
    ):
        answer = httpx.get(f"{cloud}{path}", headers=browser, timeout=10)
        assert answer.status_code == 404 and answer.json()["code"] == "not_found", (path, answer.text)
    for accept in ("application/json", "text/html;q=0, application/json", "image/*"):
        answer = httpx.get(f"{cloud}/detectors", headers={"accept": accept}, timeout=10)
        assert answer.status_code == 404 and answer.json()["code"] == "not_found", (accept, answer.text)
    for accept in ("*/*", "text/*", "text/html"):
        assert httpx.get(f"{cloud}/detectors", headers={"accept": accept}, timeout=10).text == UI_PAGE, accept


@pytest.mark.parametrize("where", ["cloud", "edge gateway"])
def test_model_urls_of_detectors_with_and_without_a_model(deployment: Deployment, where: str) -> None:
    """Was: a detector with no model got ``null`` fields, which the SDK's generated client
    refuses (ApiTypeError in download_mlbinary). Now they are left out."""
    endpoint = deployment.cloud_url if where == "cloud" else deployment.edge.gateway_url
    gl = ExperimentalApi(endpoint=endpoint, api_token=CLOUD_BOOTSTRAP_TOKEN)
    empty = gl._download_mlbinary_url(deployment.without_model)  # what download_mlbinary asks first
    assert (empty.model_binary_id, empty.model_binary_url, empty.oodd_model_binary_url) == (None, None, None)
    info = gl._download_mlbinary_url(deployment.with_model)
    assert info.model_binary_id and info.model_binary_url
    binary = requests.get(info.model_binary_url, timeout=10)
    assert binary.status_code == 200 and hashlib.sha256(binary.content).hexdigest() == binary.headers["x-sha256"]
    if where == "edge gateway":  # the signed link is at the address the SDK used
        assert info.model_binary_url.startswith(f"{deployment.edge.gateway_url}/")


def test_list_links_through_the_gateway_point_at_the_gateway(deployment: Deployment) -> None:
    """Was: ``next`` / ``previous`` named the cloud's address, which a camera network may not reach."""
    gateway = deployment.edge.gateway_url
    gl = Groundlight(endpoint=gateway, api_token=CLOUD_BOOTSTRAP_TOKEN)
    first = gl.list_detectors(page=1, page_size=1)
    assert first.count == 3 and first.previous is None
    assert str(first.next).startswith(f"{gateway}/device-api/v1/detectors?"), first.next
    second = gl.list_detectors(page=2, page_size=1)
    assert str(second.previous).startswith(f"{gateway}/"), second.previous
    # Followed as given, the link answers through the gateway.
    followed = httpx.get(str(first.next), headers={"x-api-token": CLOUD_BOOTSTRAP_TOKEN}, timeout=10)
    assert followed.status_code == 200 and followed.json()["results"][0]["id"] == second.results[0].id


def test_list_links_through_the_gateway_for_clients_off_loopback(deployment: Deployment) -> None:
    """Was: a client not on loopback (any camera on the site network) got ``next`` /
    ``previous`` at the cloud's address: uvicorn put the client's address in place of the
    gateway's, so the cloud did not believe the gateway's X-Forwarded-Host."""
    gateway = deployment.edge.gateway_url
    headers = {"x-api-token": CLOUD_BOOTSTRAP_TOKEN, "x-forwarded-for": CAMERA}
    for base in (gateway, gateway.replace("127.0.0.1", "localhost")):  # the Host the client used
        gl = Groundlight(endpoint=base, api_token=CLOUD_BOOTSTRAP_TOKEN)
        gl.api_client.set_default_header("X-Forwarded-For", CAMERA)
        pages = [gl.list_detectors(page=page, page_size=1) for page in (1, 2, 3)]
        ids = [page.results[0].id for page in pages]
        assert len(set(ids)) == 3 and pages[0].previous is None and pages[2].next is None
        links = [str(page.next) for page in pages[:2]] + [str(page.previous) for page in pages[1:]]
        assert all(link.startswith(f"{base}/device-api/v1/detectors?") for link in links), links
        # Followed as given: next to the last page, previous back to the first.
        assert _follow(str(pages[0].next), "next", base, headers) == ids[1:]
        assert _follow(str(pages[2].previous), "previous", base, headers) == ids[1::-1]


def _follow(link: str | None, key: str, base: str, headers: dict[str, str]) -> list[str]:
    """The result ids of every page from ``link`` on, following ``key`` links (each at ``base``)."""
    ids: list[str] = []
    while link:
        assert link.startswith(f"{base}/"), link
        page = httpx.get(link, headers=headers, timeout=10)
        assert page.status_code == 200, page.text
        ids += [result["id"] for result in page.json()["results"]]
        link = page.json()[key]
    return ids


@pytest.mark.parametrize("where", ["cloud", "edge API", "edge gateway"])
def test_unknown_paths_are_404_and_wrong_methods_405_with_allow(deployment: Deployment, where: str) -> None:
    """Was: a GET of a POST-only cloud path (``/v1/review/claim``) got the UI fallback's 404,
    ``Allow`` named only the first route at a path, and the edge API's 405s had none."""
    edge = deployment.edge
    base = {"cloud": deployment.cloud_url, "edge API": edge.edge_api_url, "edge gateway": edge.gateway_url}[where]
    headers = {"x-api-token": CLOUD_BOOTSTRAP_TOKEN, "accept": "application/json"}
    for method, path in (("POST", "/v1/nothing"), ("GET", "/edge-api/v1/nothing"), ("PATCH", "/nothing")):
        missing = httpx.request(method, f"{base}{path}", headers=headers, timeout=10)
        assert missing.status_code == 404 and missing.json()["code"] == "not_found", (method, path, missing.text)
    cloud_paths = (
        ("GET", "/v1/review/claim", {"POST"}),
        ("PUT", f"/device-api/v1/detectors/{deployment.with_model}/models", {"GET", "POST"}),
    )
    edge_paths = (("POST", "/edge-info", {"GET"}), ("PUT", "/edge-detector-readiness", {"GET"}))
    cases = {"cloud": cloud_paths, "edge API": edge_paths, "edge gateway": cloud_paths + edge_paths}[where]
    for method, path, allowed in (*cases, ("POST", "/v1/me", {"GET"})):
        wrong = httpx.request(method, f"{base}{path}", headers=headers, timeout=10)
        assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed", (method, path, wrong.text)
        assert {m.strip() for m in wrong.headers.get("allow", "").split(",")} - {"HEAD"} == allowed, (
            path,
            wrong.headers,
        )


@pytest.mark.parametrize("where", ["cloud", "edge gateway"])
def test_routes_that_do_not_exist_are_404_not_405(deployment: Deployment, where: str) -> None:
    endpoint = deployment.cloud_url if where == "cloud" else deployment.edge.gateway_url
    gl = ExperimentalApi(endpoint=endpoint, api_token=CLOUD_BOOTSTRAP_TOKEN)
    # SDK calls of Groundlight features IntelliOptics does not have.
    for call in (
        lambda: gl.create_note(deployment.with_model, "a note"),
        lambda: gl.reset_detector(deployment.without_model),
    ):
        with pytest.raises((ApiException, requests.HTTPError)) as raised:
            call()
        status = getattr(raised.value, "status", None) or raised.value.response.status_code  # type: ignore[union-attr]
        assert status == 404, raised.value
    headers = {"x-api-token": CLOUD_BOOTSTRAP_TOKEN}
    for method, path in (("POST", "/v1/nothing"), ("PUT", "/device-api/v1/nothing"), ("DELETE", "/nothing")):
        missing = httpx.request(method, f"{endpoint}{path}", headers=headers, timeout=10)
        assert missing.status_code == 404 and missing.json()["code"] in ("not_found", "edge_offline"), missing.text
    # A route that exists with other methods is still a 405.
    wrong = httpx.request("DELETE", f"{deployment.cloud_url}/v1/me", headers=headers, timeout=10)
    assert wrong.status_code == 405 and "GET" in wrong.headers["allow"]


def test_the_edge_model_updater_still_reads_fetch_model_urls(deployment: Deployment) -> None:
    """The edge's own reader of fetch-model-urls: it installs the model of the detector that
    has one, and counts the detector without one (fields left out) as no failure."""
    status_url = f"{deployment.edge.gateway_url}/status.json"

    def updates() -> dict:
        return httpx.get(status_url, timeout=10).json()["cloud_sync"]["model_updates"]

    admin = CloudAdmin(deployment.cloud_url)
    admin.wait(lambda: deployment.with_model in updates()["installed"], 60, "the edge installed the model")
    checks = updates()["checks"]
    admin.wait(lambda: updates()["checks"] >= checks + 2, 30, "two more update rounds")  # both detectors asked
    final = updates()
    assert final["failures"] == 0, final
    assert deployment.without_model not in final["installed"]
