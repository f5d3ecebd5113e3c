"""Real parts for the stream service's tests and bench: a GStreamer RTSP server, a
mosquitto broker, a webhook receiver, and the stream service itself next to an edge stack.

    with edge_with_streams(tmp_path, config, models) as edge, rtsp_server(tmp_path) as camera:
        camera.url("moving")  # rtsp://127.0.0.1:<port>/moving, H.264 from videotestsrc
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.support.edge_stack import EdgeStack, edge_stack
from tests.support.procs import REPO_ROOT, ManagedProcess, free_port, python_module, running, wait_http, wait_tcp

SYSTEM_PYTHON = "/usr/bin/python3"  # python3-gi (GStreamer's bindings) is a Debian package


@dataclass
class RtspServer:
    process: ManagedProcess
    port: int

    def url(self, mount: str = "moving", credentials: str = "") -> str:
        userinfo = f"{credentials}@" if credentials else ""
        return f"rtsp://{userinfo}127.0.0.1:{self.port}/{mount}"

    def start(self) -> None:
        self.process.start()
        wait_tcp(self.port, timeout=20)

    def kill(self) -> None:
        self.process.kill()

    def ensure_running(self) -> None:
        """Start it again if it died. gst-rtsp-server 1.x can abort on its own assertion
        (``gst_rtsp_media_get_rates``) when clients of a shared mount come and go; that is
        the test camera failing, not the stream service, so each test gets a live one."""
        if self.process.poll() is not None:
            self.start()


def rtsp_process(log_dir: Path, port: int, fps: int = 10, width: int = 320, height: int = 240) -> ManagedProcess:
    script = REPO_ROOT / "tests" / "support" / "rtsp_server.py"
    args = [SYSTEM_PYTHON, str(script), "--port", str(port), "--fps", str(fps), "--width", str(width)]
    return ManagedProcess("rtsp-server", [*args, "--height", str(height)], log_dir / "rtsp-server.log")


@contextlib.contextmanager
def rtsp_server(log_dir: Path, fps: int = 10, width: int = 320, height: int = 240) -> Iterator[RtspServer]:
    """gst-rtsp-server on a free port; ``kill`` and ``start`` again keep the port."""
    server = RtspServer(rtsp_process(log_dir, free_port(), fps, width, height), 0)
    server.port = int(server.process.args[3])
    server.start()
    try:
        yield server
    finally:
        server.process.stop()


@contextlib.contextmanager
def mosquitto(base_dir: Path) -> Iterator[int]:
    """A mosquitto broker on a free loopback port (anonymous, no persistence)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = base_dir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    with running(ManagedProcess("mosquitto", [binary, "-c", str(conf)], base_dir / "mosquitto.log")):
        wait_tcp(port, timeout=10)
        yield port


@dataclass
class WebhookReceiver:
    """Records the JSON bodies POSTed to it; answers 503 to the first ``fail_first`` posts."""

    port: int = 0
    fail_first: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def events(self, kind: str = "result") -> list[dict[str, Any]]:
        with self._lock:
            return [event for event in self.received if event.get("event") == kind]


@contextlib.contextmanager
def webhook_receiver(fail_first: int = 0) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(fail_first=fail_first)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with receiver._lock:
                receiver.attempts += 1
                failing = receiver.attempts <= receiver.fail_first
                if not failing:
                    receiver.received.append(json.loads(body))
            self.send_response(503 if failing else 204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class StreamsEdge:
    stack: EdgeStack
    streams_url: str  # the stream service's own port (status, metrics, probes)
    process: ManagedProcess

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-token": self.stack.token}

    def put_config(self, config: dict[str, Any]) -> httpx.Response:
        return httpx.put(f"{self.stack.gateway_url}/edge-config", json=config, headers=self.headers, timeout=10)

    def streams(self) -> dict[str, dict[str, Any]]:
        """GET /streams through the gateway, by stream name."""
        response = httpx.get(f"{self.stack.gateway_url}/streams", headers=self.headers, timeout=10)
        response.raise_for_status()
        return {stream["name"]: stream for stream in response.json()["streams"]}


@contextlib.contextmanager
def edge_with_streams(
    base_dir: Path,
    edge_config: dict[str, Any],
    models: dict[str, Any] | None = None,
    *,
    streams_env: dict[str, str] | None = None,
    edge_env: dict[str, str] | None = None,
) -> Iterator[StreamsEdge]:
    """edge_stack plus the stream service, which polls the edge API's configuration."""
    port = free_port()
    streams_url = f"http://127.0.0.1:{port}"
    extra = {"INTELLIOPTICS_STREAMS_URL": streams_url, **(edge_env or {})}
    with edge_stack(base_dir, edge_config, models, extra_env=extra) as stack:
        env = {
            "INTELLIOPTICS_ENVIRONMENT": "test",
            "INTELLIOPTICS_LOG_LEVEL": "INFO",
            "INTELLIOPTICS_STREAMS_HOST": "127.0.0.1",
            "INTELLIOPTICS_STREAMS_PORT": str(port),
            "INTELLIOPTICS_EDGE_API_URL": stack.edge_api_url,
            "INTELLIOPTICS_STREAMS_TOKEN": stack.token,
            "INTELLIOPTICS_CONFIG_POLL_INTERVAL_S": "0.5",
            **(streams_env or {}),
        }
        process = python_module("streams", "intellioptics_streams", stack.log_dir, env)
        with running(process):
            wait_http(f"{streams_url}/health/ready", timeout=60, process=process)
            yield StreamsEdge(stack, streams_url, process)
