"""edge-config's ``streams:`` in the edge API: validation (PUT and the YAML file), the
SDK round trip, and ``GET /streams`` / the status page showing the stream service.

The stream service itself is replaced by httpx.MockTransport here; edge/streams/tests
runs the real one."""

from __future__ import annotations

import os
import time

import httpx
import yaml

from edge.api.tests.conftest import DET_BINARY, TOKEN, MakeEdge, base_config
from intellioptics_edge.edge_config import EdgeConfigManager

HEADERS = {"x-api-token": TOKEN}
CAMERA = {"url": "rtsp://user:pw@10.0.0.12:554/stream1", "detector_ids": [DET_BINARY], "fps": 2}


def test_bad_streams_are_a_clear_400_and_nothing_changes(make_edge: MakeEdge) -> None:
    edge = make_edge()
    before = edge.config_path.read_text()
    cases = [
        ({"cam": {**CAMERA, "fsp": 2}}, "streams.cam.fsp: Extra inputs are not permitted"),
        ({"cam": {**CAMERA, "fps": -1}}, "streams.cam.fps: Input should be greater than 0"),
        ({"cam": {**CAMERA, "detector_ids": ["cam1"]}}, "streams.cam.detector_ids.0"),
        ({"cam": {**CAMERA, "motion_threshold": 2}}, "streams.cam.motion_threshold"),
        ({"bad name": CAMERA}, "streams.bad name.[key]"),
        ({"cam": {**CAMERA, "alerts": [{"name": "x", "when": "sometimes"}]}}, "streams.cam.alerts.0.when"),
        ({"cam": {**CAMERA, "sinks": [{"kind": "webhook", "url": "http://h/", "retries": 3}]}}, "retries"),
    ]
    for streams, expected in cases:
        response = edge.client.put("/edge-config", json={**base_config(), "streams": streams}, headers=HEADERS)
        assert response.status_code == 400, response.text
        assert expected in response.json()["detail"], response.json()["detail"]
        assert "pw@" not in response.text
    assert edge.config_path.read_text() == before


def test_streams_survive_the_sdk_round_trip_and_empty_removes_them(make_edge: MakeEdge) -> None:
    edge = make_edge()
    response = edge.client.put("/edge-config", json={**base_config(), "streams": {"cam": CAMERA}}, headers=HEADERS)
    assert response.status_code == 200
    assert yaml.safe_load(edge.config_path.read_text())["streams"]["cam"]["url"] == CAMERA["url"]
    # The groundlight SDK's apply_config sends only Groundlight's keys: streams stay.
    response = edge.client.put("/edge-config", json=base_config(), headers=HEADERS)
    assert response.json()["streams"]["cam"]["fps"] == 2
    response = edge.client.put("/edge-config", json={**base_config(), "streams": {}}, headers=HEADERS)
    assert "streams" not in response.json()
    assert "streams" not in yaml.safe_load(edge.config_path.read_text())


def test_a_bad_stream_in_the_file_names_the_field_and_the_last_good_config_serves(tmp_path) -> None:
    path = tmp_path / "edge-config.yaml"
    path.write_text(yaml.safe_dump({"streams": {"cam": CAMERA}}))
    manager = EdgeConfigManager(path)
    assert manager.current().streams["cam"].fps == 2
    path.write_text(yaml.safe_dump({"streams": {"cam": {**CAMERA, "fps": "fast"}}}))
    os.utime(path, (time.time() + 5, time.time() + 5))
    manager._next_check = 0  # skip the once-a-second throttle
    assert "streams.cam.fps" in (manager.state.error or "")
    assert manager.current().streams["cam"].fps == 2


def test_get_streams_asks_the_stream_service(make_edge: MakeEdge) -> None:
    listing = {"streams": [{"name": "cam", "url": "rtsp://user:***@10.0.0.12:554/stream1", "state": "connected"}]}

    def stream_service(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/streams"
        return httpx.Response(200, json={**listing, "config_loaded": True, "config_error": None})

    edge = make_edge(streams=stream_service)
    assert edge.client.get("/streams").status_code == 401
    response = edge.client.get("/streams", headers=HEADERS)
    assert response.status_code == 200
    assert response.json() == {**listing, "config_error": None}


def test_get_streams_is_a_503_that_says_why_when_the_service_is_down(make_edge: MakeEdge) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    edge = make_edge({**base_config(), "streams": {"cam": CAMERA}}, streams=down)
    response = edge.client.get("/streams", headers=HEADERS)
    assert response.status_code == 503
    assert "the stream service at http://streams.test is not answering" in response.json()["detail"]
    page = edge.client.get("/status").text
    assert "<h2>Streams</h2>" in page and "not answering" in page
    assert edge.client.get("/status.json").json()["streams"] is None


def test_the_status_page_lists_streams(make_edge: MakeEdge) -> None:
    stream = {
        "name": "line-3", "url": "rtsp://user:***@cam/1", "state": "reconnecting", "fps": 2, "frames_read": 10,
        "frames_submitted": 4, "frames_skipped_motion": 1, "frames_dropped": 0, "reconnects": 1,
        "last_error": "lost rtsp://user:***@cam/1: End of file", "last_image_query_id": "iq_x",
        "last_results": {DET_BINARY: {"label": "YES", "confidence": 0.93}},
    }  # fmt: skip

    def stream_service(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"streams": [stream], "config_error": None})

    edge = make_edge({**base_config(), "streams": {"line-3": CAMERA}}, streams=stream_service)
    page = edge.client.get("/status").text
    assert "line-3" in page and "reconnecting" in page and f"{DET_BINARY}: YES (0.93)" in page
    assert edge.client.get("/status.json").json()["streams"] == [stream]
