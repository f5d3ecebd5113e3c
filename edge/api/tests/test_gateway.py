"""The edge as deployed: real nginx → real edge API → real inference service, driven by
the real ``groundlight`` SDK 1.3.1 and by raw HTTP for bad input."""

from __future__ import annotations

import io
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from groundlight import ApiTokenError, ExperimentalApi, Groundlight
from PIL import Image

from tests.support.edge_stack import EdgeStack, edge_stack, load_nginx_renderer
from tests.support.procs import free_port, nginx_binary, nginx_process, running, wait_http

from .conftest import huge_png_header

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DET = "det_" + "Gateway0Binary0Detector0001"
DET_COLOUR = "det_" + "Gateway0Colour0Detector0001"
DET_OFF = "det_" + "Gateway0Disabled0Detector01"
DET_NO_MODEL = "det_" + "Gateway0NoModel0Detector001"
DET_RULES = "det_" + "Gateway0Rules0Detector00001"


def edge_config() -> dict:
    return {
        "global_config": {"refresh_rate": 60, "confident_audit_rate": 0},
        "detectors": [
            {"detector_id": DET, "name": "bright", "query": "Is the image bright?", "confidence_threshold": 0.9},
            {
                "detector_id": DET_COLOUR,
                "name": "colour",
                "query": "Which colour dominates?",
                "mode": "MULTI_CLASS",
                "class_names": ["red", "green", "blue"],
                "confidence_threshold": 0.6,
            },
            {"detector_id": DET_OFF, "edge_inference_config": "disabled", "name": "off", "query": "Off?"},
            {"detector_id": DET_NO_MODEL, "edge_inference_config": "no_cloud", "name": "nm", "query": "?"},
            {
                "detector_id": DET_RULES,
                "name": "ruled",
                "query": "Is the image bright?",
                "rules": [{"check": "too_dark", "threshold": 0.05}],
            },
        ],
    }


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (640, 480)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeStack]:
    base = tmp_path_factory.mktemp("edge-stack")
    models = {
        DET: ("NO", "YES"),
        DET_COLOUR: ("red", "green", "blue"),
        DET_OFF: ("NO", "YES"),
        DET_RULES: ("NO", "YES"),
    }
    with edge_stack(base, edge_config(), models) as running_stack:
        # Wait until both models are loaded so that the tests measure answers, not loading.
        for detector_id in (DET, DET_COLOUR, DET_RULES):
            wait_http(f"{running_stack.inference_url}/detectors/{detector_id}/ready", timeout=60)
        yield running_stack


@pytest.fixture(scope="module")
def gl(stack: EdgeStack) -> Groundlight:
    return Groundlight(endpoint=stack.gateway_url, api_token=stack.token)


def assert_services_up(stack: EdgeStack) -> None:
    for url in (stack.inference_url, stack.edge_api_url, stack.gateway_url):
        assert httpx.get(f"{url}/health/live", timeout=5).status_code == 200


def test_sdk_submit_and_get_answered_by_the_edge(gl: Groundlight, stack: EdgeStack) -> None:
    iq = gl.submit_image_query(DET, jpeg((255, 255, 255)), metadata={"line": 4}, inspection_id="insp-7")
    assert iq.id.startswith("iq_")
    assert iq.result.label.value == "YES"
    assert iq.result.from_edge is True
    assert iq.result.confidence > 0.9
    assert iq.metadata == {"line": 4}
    fetched = gl.get_image_query(iq.id)
    assert fetched.id == iq.id and fetched.result.label == iq.result.label
    with gl.get_image(iq.id) as stored:
        assert Image.open(io.BytesIO(stored.read())).size == (640, 480)


def test_sdk_refuses_a_wrong_token_at_construction(stack: EdgeStack) -> None:
    with pytest.raises(ApiTokenError):
        Groundlight(endpoint=stack.gateway_url, api_token="wrong_token_0123456789abcdef")


def test_sdk_ask_ml_and_wait_for_confident_result(gl: Groundlight) -> None:
    dark = gl.ask_ml(DET, jpeg((0, 0, 0)))
    assert dark.result.label.value == "NO"
    assert str(getattr(dark.result.source, "value", dark.result.source)) == "ALGORITHM"
    confident = gl.wait_for_confident_result(dark.id, confidence_threshold=0.9, timeout_sec=5)
    assert confident.id == dark.id
    assert confident.result.confidence >= 0.9


def test_sdk_ask_async_offline_is_answered_and_queued(gl: Groundlight, stack: EdgeStack) -> None:
    iq = gl.ask_async(DET, jpeg((255, 255, 255)))
    assert iq.id.startswith("iq_")
    fetched = gl.get_image_query(iq.id)
    assert fetched.result.label.value == "YES"
    assert fetched.done_processing is False  # the outbox holds it for the cloud
    status = httpx.get(f"{stack.gateway_url}/status.json", timeout=5).json()
    assert status["outbox_pending"]["escalation"] >= 1


def test_sdk_offline_detector_and_listing(gl: Groundlight) -> None:
    detector = gl.get_detector(DET)
    assert (detector.id, detector.name, detector.confidence_threshold) == (DET, "bright", 0.9)
    gl.ask_ml(DET, jpeg((250, 250, 250)))
    page = gl.list_image_queries(page=1, page_size=2, detector_id=DET)
    assert page.count >= 1
    assert 1 <= len(page.results) <= 2
    assert all(iq.detector_id == DET for iq in page.results)


def test_sdk_multiclass_and_unconfident_binary(gl: Groundlight) -> None:
    green = gl.ask_ml(DET_COLOUR, jpeg((20, 230, 20)))
    assert green.result.label == "green"
    grey = gl.submit_image_query(DET, jpeg((128, 128, 128)), wait=0)
    assert grey.result.confidence < 0.9
    assert grey.done_processing is False


def test_sdk_edge_methods(stack: EdgeStack) -> None:
    gl = ExperimentalApi(endpoint=stack.gateway_url, api_token=stack.token)
    assert gl.edge.get_upstream_endpoint() is None
    config = gl.edge.get_config()
    assert {d.detector_id for d in config.detectors} == {DET, DET_COLOUR, DET_OFF, DET_NO_MODEL, DET_RULES}
    readiness = gl.edge.get_detector_readiness()
    assert readiness[DET] is True
    assert readiness[DET_NO_MODEL] is False


def _post(stack: EdgeStack, body: bytes, detector_id: str = DET, content_type: str = "image/jpeg", **params: str):
    return httpx.post(
        f"{stack.gateway_url}/device-api/v1/image-queries",
        params={"detector_id": detector_id, **params},
        content=body,
        headers={"x-api-token": stack.token, "content-type": content_type},
        timeout=60,
    )


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("empty body", 400, "invalid_image"),
        ("text body", 415, "unsupported_media_type"),
        ("text as jpeg", 400, "invalid_image"),
        ("truncated jpeg", 400, "invalid_image"),
        ("100 megapixel png", 413, "image_too_large"),
        ("unknown detector", 404, "edge_offline"),
        ("disabled detector", 403, "detector_disabled"),
        ("threshold out of range", 400, "invalid_input"),
        ("threshold not a number", 400, "invalid_input"),
        ("no model, no cloud", 503, "model_not_ready"),
        ("no token", 401, "unauthenticated"),
    ],
)
def test_bad_input_through_nginx_is_a_clear_json_error(stack: EdgeStack, case: str, status: int, code: str) -> None:
    white = jpeg((255, 255, 255))
    response = {
        "empty body": lambda: _post(stack, b""),
        "text body": lambda: _post(stack, b"just some text", content_type="text/plain"),
        "text as jpeg": lambda: _post(stack, b"just some text"),
        "truncated jpeg": lambda: _post(stack, white[: len(white) // 2]),
        "100 megapixel png": lambda: _post(stack, huge_png_header(10_000, 10_000), content_type="image/png"),
        "unknown detector": lambda: _post(stack, white, detector_id="det_" + "Unknown0" * 3 + "Det"),
        "disabled detector": lambda: _post(stack, white, detector_id=DET_OFF),
        "threshold out of range": lambda: _post(stack, white, confidence_threshold="7"),
        "threshold not a number": lambda: _post(stack, white, confidence_threshold="abc"),
        "no model, no cloud": lambda: _post(stack, white, detector_id=DET_NO_MODEL),
        "no token": lambda: httpx.post(
            f"{stack.gateway_url}/device-api/v1/image-queries", params={"detector_id": DET}, content=white,
            headers={"content-type": "image/jpeg"},
        ),
    }[case]()  # fmt: skip
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code
    assert len(body["detail"]) > 15
    if case == "unknown detector":  # nginx's offline page still says what the edge said
        assert "is not configured on this edge" in body["detail"]
    if case == "100 megapixel png":
        assert "10000x10000" in body["detail"]
    assert_services_up(stack)


def test_a_multi_megabyte_image_passes_the_gateway(stack: EdgeStack) -> None:
    """Over nginx's default body buffer: it must stay in memory (no temp file to write)."""
    noise = np.random.default_rng(0).integers(0, 255, (1500, 2000, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=95)
    assert len(buffer.getvalue()) > 2 * 1024 * 1024
    response = _post(stack, buffer.getvalue())
    assert response.status_code == 201, response.text
    stored = httpx.get(
        f"{stack.gateway_url}/device-api/v1/image-queries/{response.json()['id']}/image",
        headers={"x-api-token": stack.token},
    )
    assert stored.content == buffer.getvalue()


def test_a_50_mb_body_is_refused_by_nginx_with_json(stack: EdgeStack) -> None:
    response = _post(stack, b"\xff\xd8\xff" + b"\0" * (50 * 1024 * 1024))
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert_services_up(stack)


def test_request_id_is_passed_through_or_made(stack: EdgeStack) -> None:
    given = httpx.get(f"{stack.gateway_url}/health/live", headers={"x-request-id": "req_abc123"})
    assert given.headers["x-request-id"] == "req_abc123"
    made = httpx.get(f"{stack.gateway_url}/health/live")
    assert len(made.headers["x-request-id"]) >= 16
    # The edge sees the same id: it appears in its error bodies.
    error = httpx.post(
        f"{stack.gateway_url}/v1/image-queries?detector_id={DET}",
        content=b"",
        headers={"x-api-token": stack.token, "content-type": "image/jpeg", "x-request-id": "req_trace_me"},
    )
    assert error.json()["request_id"] == "req_trace_me"
    made_here = httpx.post(
        f"{stack.gateway_url}/v1/image-queries?detector_id={DET}",
        content=b"",
        headers={"x-api-token": stack.token, "content-type": "image/jpeg"},
    )
    assert made_here.json()["request_id"] == made_here.headers["x-request-id"]


def test_offline_gateway_answers_cloud_routes_with_json(stack: EdgeStack) -> None:
    for method, path in (("GET", "/device-api/v1/detectors"), ("POST", "/device-api/v1/labels"), ("GET", "/nope")):
        response = httpx.request(method, f"{stack.gateway_url}{path}", headers={"x-api-token": stack.token})
        assert response.status_code == 404
        assert response.json()["code"] == "edge_offline"
    assert httpx.get(f"{stack.gateway_url}/status").text.startswith("<!doctype html>")
    status = httpx.get(f"{stack.gateway_url}/status?format=json").json()
    by_id = {d["detector_id"]: d for d in status["detectors"]}
    assert by_id[DET]["model_state"] == "loaded"
    assert by_id[DET]["serving_model_versions"]["primary"] == 1
    assert by_id[DET_NO_MODEL]["model_state"] == "not_installed"


# --- nginx alone: config validity and cloud fallback ---------------------------------------


def test_rendered_config_passes_nginx_t(tmp_path: Path) -> None:
    render = load_nginx_renderer().render
    for name, cloud in (("offline", ""), ("cloud", "https://cloud.example.com"), ("local", "http://127.0.0.1:9")):
        conf = render(tmp_path / name, port=free_port(), edge_api="127.0.0.1:8718", cloud_url=cloud)
        result = subprocess.run(
            [nginx_binary(), "-t", "-p", str(tmp_path / name), "-c", str(conf), "-g", f"pid {tmp_path / name}/pid;"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
    with pytest.raises(ValueError):
        render(tmp_path / "bad", port=1, edge_api="127.0.0.1:8718", cloud_url="https://cloud/with/path")


def test_envsubst_renders_the_same_gateway_config_as_render_py(tmp_path: Path) -> None:
    """The official nginx image renders templates with envsubst over every defined variable."""
    renderer = load_nginx_renderer()
    values = renderer.gateway_values(port=30101, edge_api="127.0.0.1:8718", cloud_url="https://cloud.example.com")
    environment = {"PATH": "/usr/bin:/bin", "HOME": "/root", **values}
    shell_format = " ".join(f"${{{name}}}" for name in environment)
    by_envsubst = subprocess.run(
        ["envsubst", shell_format],
        input=renderer.GATEWAY_TEMPLATE.read_text(),
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    renderer.render(tmp_path, port=30101, edge_api="127.0.0.1:8718", cloud_url="https://cloud.example.com",
                    resolver=values["INTELLIOPTICS_NGINX_RESOLVER"])  # fmt: skip
    assert by_envsubst == (tmp_path / "gateway.conf").read_text()


class _Recorder(BaseHTTPRequestHandler):
    """Answers every request with 200 JSON naming what it received (stands in for an upstream)."""

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        payload = json.dumps(
            {
                "server": self.server.name,
                "method": self.command,
                "path": self.path,
                "bytes": len(body),
                "host": self.headers.get("host"),
                "request_id": self.headers.get("x-request-id"),
                "connection": self.headers.get("connection"),
            }
        ).encode()
        status = 404 if self.server.name == "edge" and "missing" in self.path else 200
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorders() -> Iterator[dict[str, ThreadingHTTPServer]]:
    servers = {}
    for name in ("edge", "cloud"):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        server.name = name
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[name] = server
    yield servers
    for server in servers.values():
        server.shutdown()
        server.server_close()


def test_edge_404_and_other_routes_fall_back_to_the_cloud(tmp_path: Path, recorders) -> None:
    edge_port, cloud_port = recorders["edge"].server_address[1], recorders["cloud"].server_address[1]
    port = free_port()
    conf = load_nginx_renderer().render(
        tmp_path, port=port, edge_api=f"127.0.0.1:{edge_port}", cloud_url=f"http://127.0.0.1:{cloud_port}"
    )
    with running(nginx_process(conf, tmp_path)):
        wait_http(f"http://127.0.0.1:{port}/health/live", timeout=20)
        base = f"http://127.0.0.1:{port}"
        answered = httpx.post(f"{base}/device-api/v1/image-queries?detector_id=x", content=b"12345").json()
        assert answered["server"] == "edge" and answered["method"] == "POST" and answered["bytes"] == 5
        assert answered["path"] == "/device-api/v1/image-queries?detector_id=x"
        assert answered["host"] == f"127.0.0.1:{port}"
        assert answered["connection"] is None  # kept alive, not "close"
        assert len(answered["request_id"]) == 32
        fallback = httpx.post(
            f"{base}/device-api/v1/image-queries?detector_id=missing", content=b"123", headers={"x-request-id": "r1"}
        ).json()
        assert fallback["server"] == "cloud" and fallback["bytes"] == 3 and fallback["method"] == "POST"
        assert fallback["host"] == f"127.0.0.1:{cloud_port}" and fallback["request_id"] == "r1"
        assert httpx.get(f"{base}/device-api/v1/detectors").json()["server"] == "cloud"
        assert httpx.get(f"{base}/edge-config").json()["server"] == "edge"


def test_dead_upstreams_get_json_502(tmp_path: Path) -> None:
    port = free_port()
    conf = load_nginx_renderer().render(
        tmp_path, port=port, edge_api=f"127.0.0.1:{free_port()}", cloud_url=f"http://127.0.0.1:{free_port()}"
    )
    with running(nginx_process(conf, tmp_path)):
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/health/live", timeout=20, expect=(502,))
        edge_down = httpx.post(f"{base}/device-api/v1/image-queries?detector_id=x", content=b"1")
        assert edge_down.status_code == 502
        assert edge_down.json()["code"] == "edge_unavailable"
        cloud_down = httpx.get(f"{base}/device-api/v1/detectors")
        assert cloud_down.status_code == 502
        assert cloud_down.json()["code"] == "cloud_unavailable"


def test_sdk_rule_stage_answers_a_dark_frame_and_the_model_the_rest(gl: Groundlight, stack: EdgeStack) -> None:
    dark = gl.submit_image_query(DET_RULES, jpeg((3, 3, 3)), wait=0)
    assert dark.result.label.value == "UNCLEAR"  # unusable: escalated, not guessed by the model
    assert dark.result.from_edge is True
    bright = gl.submit_image_query(DET_RULES, jpeg((255, 255, 255)), wait=0)
    assert bright.result.label.value == "YES"
    headers = {"x-api-token": stack.token}
    raw = httpx.get(f"{stack.gateway_url}/device-api/v1/image-queries/{dark.id}", headers=headers, timeout=10)
    assert raw.json()["pipeline"]["method"] == "rule-based" and raw.json()["pipeline"]["check"] == "too_dark"
    raw = httpx.get(f"{stack.gateway_url}/device-api/v1/image-queries/{bright.id}", headers=headers, timeout=10)
    assert raw.json()["pipeline"]["method"] == "hybrid"
    status = httpx.get(f"{stack.edge_api_url}/status.json", headers=headers, timeout=10).json()
    methods = {d["detector_id"]: d.get("methods") for d in status["detectors"]}[DET_RULES]
    assert methods == {"rule-based": 1, "hybrid": 1}
