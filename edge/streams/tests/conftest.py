"""Fixtures of the stream service's integration tests: one edge with the stream service,
a GStreamer RTSP server, a mosquitto broker and webhook receivers, shared by the module.

Each test PUTs its own ``streams:`` through the gateway, as an operator would.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.streams import (
    RtspServer,
    StreamsEdge,
    WebhookReceiver,
    edge_with_streams,
    mosquitto,
    rtsp_server,
    webhook_receiver,
)

DET_A = "det_" + "S" * 27
DET_B = "det_" + "T" * 27
BASE_CONFIG: dict[str, Any] = {
    "global_config": {"confident_audit_rate": 0},
    "detectors": [
        {"detector_id": DET_A, "edge_inference_config": "no_cloud", "name": "a", "query": "Is it bright?"},
        {"detector_id": DET_B, "edge_inference_config": "no_cloud", "name": "b", "query": "Is it bright?"},
    ],
}
# Short limits so that the tests see reconnects and failures in seconds.
STREAMS_ENV = {
    "INTELLIOPTICS_SOURCE_OPEN_TIMEOUT_S": "3",
    "INTELLIOPTICS_SOURCE_READ_TIMEOUT_S": "2",
    "INTELLIOPTICS_RECONNECT_BACKOFF_CAP_S": "2",
    "INTELLIOPTICS_WEBHOOK_BACKOFF_BASE_S": "0.1",
}


def wait_until(condition: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("streams")


@pytest.fixture(scope="module")
def module_camera(work_dir: Path) -> Iterator[RtspServer]:
    with rtsp_server(work_dir / "camera") as server:
        yield server


@pytest.fixture
def camera(module_camera: RtspServer) -> RtspServer:
    """The module's RTSP server, alive when a test starts (see RtspServer.ensure_running)."""
    module_camera.ensure_running()
    return module_camera


@pytest.fixture(scope="module")
def broker(work_dir: Path) -> Iterator[int]:
    with mosquitto(work_dir) as port:
        yield port


@pytest.fixture(scope="module")
def edge(work_dir: Path) -> Iterator[StreamsEdge]:
    models = {DET_A: ("NO", "YES"), DET_B: ("NO", "YES")}
    with edge_with_streams(work_dir / "edge", BASE_CONFIG, models, streams_env=STREAMS_ENV) as stack:
        yield stack


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture
def put_streams(edge: StreamsEdge) -> Iterator[Callable[[dict[str, Any]], None]]:
    def put(streams: dict[str, Any]) -> None:
        response = edge.put_config({**BASE_CONFIG, "streams": streams})
        assert response.status_code == 200, response.text

    yield put
    put({})  # the next test starts with no streams
    wait_until(lambda: not edge.streams(), 5, "streams were not removed")


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: a camera hung in its handshake."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()
