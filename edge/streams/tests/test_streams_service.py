"""The stream service with real parts: a GStreamer RTSP server streaming H.264, the edge
(inference, edge API, nginx) with real ONNX models, mosquitto, and webhook receivers.

Streams are configured the way an operator does it: ``PUT /edge-config`` through the
gateway; their state is read from ``GET /streams`` through the gateway.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest

from edge.streams.tests.conftest import BASE_CONFIG, DET_A, DET_B, wait_until
from tests.support.metrics import metric_value
from tests.support.procs import free_port
from tests.support.streams import RtspServer, StreamsEdge, WebhookReceiver, rtsp_process, webhook_receiver

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def connected(edge: StreamsEdge, name: str, submitted: int = 1) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        stream = edge.streams().get(name)
        ok = stream and stream["state"] == "connected" and stream["frames_submitted"] >= submitted
        return stream if ok else None

    return wait_until(ready, 20, f"stream {name} did not connect and submit: {edge.streams().get(name)}")


class MqttListener:
    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[dict[str, Any]] = []
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-listener")
        self._client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = lambda client, userdata, message: self.messages.append(json.loads(message.payload))
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        assert self._subscribed.wait(10), "could not subscribe to the broker"

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def _metric(text: str, name: str, **labels: str) -> float:
    value = metric_value(text, name, **labels)
    assert value is not None, f"no series {name}{labels} in the metrics"
    return value


def test_frames_become_image_queries_at_the_fps_cap_and_reach_the_sinks(
    edge: StreamsEdge, camera: RtspServer, broker: int, hook: WebhookReceiver, put_streams
) -> None:
    listener = MqttListener(broker, "line/cam")
    with webhook_receiver(fail_first=2) as flaky:
        put_streams(
            {
                "cam": {
                    "url": camera.url("moving"),
                    "detector_ids": [DET_A, DET_B],
                    "fps": 2,
                    "sinks": [
                        {"kind": "webhook", "url": hook.url, "send": "all"},
                        {"kind": "mqtt", "host": "127.0.0.1", "port": broker, "topic": "line/cam"},
                        {"kind": "webhook", "url": flaky.url, "send": "results"},
                    ],
                    "alerts": [
                        {"name": "steady", "when": "same_answer", "answer": "NO", "times": 3},
                        {"name": "flip", "when": "answer_changed"},
                    ],
                }
            }
        )
        first = connected(edge, "cam", submitted=2)
        started = time.monotonic()
        time.sleep(5)
        last = edge.streams()["cam"]
        elapsed = time.monotonic() - started
        # The fps cap: 2 frames a second of a 10 fps camera, each posted once per detector.
        submitted = last["frames_submitted"] - first["frames_submitted"]
        dropped = last["frames_dropped"] - first["frames_dropped"]  # an answer slower than 0.5 s on a busy machine
        assert submitted <= 2 * elapsed + 1.5, f"over the cap: {submitted} in {elapsed:.1f} s"
        assert submitted + dropped >= 2 * elapsed - 1.5, f"under the cap: {submitted} in {elapsed:.1f} s"
        read = last["frames_read"] - first["frames_read"]
        assert read >= 7 * elapsed, f"the reader must keep up with the camera's 10 fps: {read} in {elapsed:.1f} s"
        assert last["submit_errors"] == 0, last
        assert set(last["last_results"]) == {DET_A, DET_B}
        for result in last["last_results"].values():
            # The ball on black is dark: the brightness model's confident NO, from the edge model.
            assert result["label"] == "NO" and result["source"] == "ALGORITHM", result
        wait_until(lambda: flaky.received, 10, "the webhook that failed twice was never retried to success")
        flaky_status = edge.streams()["cam"]["sinks"][2]
        assert flaky_status["retries"] >= 2 and flaky_status["delivered"] >= 1, flaky_status

    # The answers went through the edge's decision tree, with the stream in their metadata.
    query = httpx.get(
        f"{edge.stack.gateway_url}/device-api/v1/image-queries/{last['last_image_query_id']}",
        headers=edge.headers,
        timeout=10,
    )
    assert query.status_code == 200, query.text
    metadata = query.json()["metadata"]
    assert metadata["stream"] == "cam" and metadata["frame_time"].endswith("Z")

    results = hook.events("result")
    assert {event["detector_id"] for event in results} == {DET_A, DET_B}
    assert all(event["stream"] == "cam" and event["image_query_id"].startswith("iq_") for event in results)
    alerts = hook.events("alert")
    # Same answer 3 times in a row fires once per detector; the answer never changed.
    assert sorted((a["alert"], a["detector_id"], a["streak"]) for a in alerts) == [
        ("steady", DET_A, 3),
        ("steady", DET_B, 3),
    ]
    wait_until(lambda: len(listener.messages) >= 4, 10, "MQTT got no results")
    listener.close()
    assert {m["detector_id"] for m in listener.messages} == {DET_A, DET_B}
    assert all(m["event"] == "result" for m in listener.messages)

    # Prometheus counters per stream carry the status figures: read between two statuses.
    before_scrape = edge.streams()["cam"]
    metrics = httpx.get(f"{edge.streams_url}/metrics", timeout=5).text
    after_scrape = edge.streams()["cam"]
    for field in ("frames_read", "frames_submitted", "frames_dropped", "submit_errors", "reconnects"):
        value = _metric(metrics, f"intellioptics_stream_{field}_total", stream="cam")
        assert before_scrape[field] <= value <= after_scrape[field], (field, value, before_scrape, after_scrape)
    assert _metric(metrics, "intellioptics_stream_state", stream="cam", state="connected") == 1.0
    assert (
        _metric(metrics, "intellioptics_stream_sink_events_total", stream="cam", sink="webhook-0", outcome="delivered")
        >= 1
    )
    assert (
        _metric(metrics, "intellioptics_stream_sink_events_total", stream="cam", sink="webhook-2", outcome="retries")
        >= 2
    )
    page = httpx.get(f"{edge.stack.gateway_url}/status", timeout=5).text
    assert "<h2>Streams</h2>" in page and "cam" in page and "connected" in page


def test_motion_gating_skips_a_still_scene_until_it_is_turned_off(
    edge: StreamsEdge, camera: RtspServer, put_streams
) -> None:
    still = {"url": camera.url("static"), "detector_ids": [DET_A], "fps": 5, "motion_threshold": 0.01}
    put_streams({"still": still})
    connected(edge, "still")
    time.sleep(3)
    stream = edge.streams()["still"]
    # Colour bars never change: only the first frame is submitted.
    assert stream["frames_submitted"] == 1, stream
    assert stream["frames_skipped_motion"] >= 10, stream

    put_streams({"still": {**still, "motion_threshold": None}})
    wait_until(
        lambda: (
            edge.streams()["still"]["frames_submitted"] >= 5 and edge.streams()["still"]["motion_threshold"] is None
        ),
        15,
        "without motion gating every sampled frame must be submitted",
    )


def test_an_answer_that_changes_fires_the_answer_changed_alert(
    edge: StreamsEdge, camera: RtspServer, hook: WebhookReceiver, put_streams
) -> None:
    """The blinking camera (white 2 s, black 2 s) through the brightness model: YES, then
    NO, then YES; each change reaches the webhook as an alert naming the answer before."""
    put_streams(
        {
            "blink": {
                "url": camera.url("blink"),
                "detector_ids": [DET_A],
                "fps": 2,
                "sinks": [{"kind": "webhook", "url": hook.url, "send": "all"}],
                "alerts": [{"name": "flip", "when": "answer_changed"}],
            }
        }
    )
    wait_until(lambda: len(hook.events("alert")) >= 2, 30, "no answer_changed alerts from the blinking camera")
    results = [event["label"] for event in hook.events("result")]
    assert {"YES", "NO"} <= set(results), results
    for alert in hook.events("alert")[:2]:
        assert alert["alert"] == "flip" and alert["alert_when"] == "answer_changed", alert
        assert {alert["previous_label"], alert["label"]} == {"YES", "NO"}, alert
    # An alert fires on a change only: never more alerts than changes between results.
    changes = sum(1 for a, b in zip(results, results[1:], strict=False) if a != b)
    assert len(hook.events("alert")) <= changes + 1


def test_reconfigure_restarts_only_what_changed_and_stops_in_time(
    edge: StreamsEdge, camera: RtspServer, put_streams
) -> None:
    a = {"url": camera.url("moving"), "detector_ids": [DET_A], "fps": 1}
    b = {"url": camera.url("moving"), "detector_ids": [DET_B], "fps": 1}
    put_streams({"a": a, "b": b})
    connected(edge, "a")
    before = connected(edge, "b")

    a_started = edge.streams()["a"]["started_at"]
    put_streams({"a": {**a, "fps": 3}, "b": b})
    wait_until(lambda: edge.streams()["a"]["fps"] == 3, 5, "stream a was not restarted with its new fps")
    after = edge.streams()["b"]
    assert edge.streams()["a"]["started_at"] != a_started, "stream a's new fps needs a new runner"
    assert after["started_at"] == before["started_at"], "stream b was restarted though its config did not change"
    assert after["frames_read"] >= before["frames_read"]

    changed = time.monotonic()
    put_streams({"b": {**b, "enabled": False}})
    wait_until(
        lambda: set(edge.streams()) == {"b"} and edge.streams()["b"]["state"] == "stopped", 5, "streams did not stop"
    )
    # Poll interval (0.5 s) + the 2 s a stop may take, with room for a loaded machine.
    assert time.monotonic() - changed < 4.0
    assert edge.streams()["b"]["enabled"] is False


def test_a_camera_that_is_not_there_yet_is_picked_up_when_it_comes(
    edge: StreamsEdge, put_streams, tmp_path: Path
) -> None:
    port = free_port()
    put_streams({"late": {"url": f"rtsp://127.0.0.1:{port}/moving", "detector_ids": [DET_A], "fps": 1}})
    waiting = wait_until(
        lambda: (s := edge.streams().get("late")) and s["last_error"] and s, 10, "no error while the camera is absent"
    )
    assert waiting["state"] == "connecting" and waiting["frames_submitted"] == 0
    late = RtspServer(rtsp_process(tmp_path, port), port)
    late.start()
    try:
        came = time.monotonic()
        wait_until(
            lambda: edge.streams()["late"]["state"] == "connected" and edge.streams()["late"]["frames_submitted"] > 0,
            15,
            "the stream did not pick up the camera that came late",
        )
        # Backoff cap (5 s) + the RTSP open (about 2.5 s), with room for a loaded machine.
        assert time.monotonic() - came < 12
        assert edge.streams()["late"]["reconnects"] == 0  # never connected before: a first connect
    finally:
        late.process.stop()


def test_a_camera_hung_in_its_handshake_still_stops_and_secrets_never_show(
    edge: StreamsEdge, put_streams, black_hole: int
) -> None:
    dead_port = free_port()
    put_streams(
        {
            "hung": {"url": f"rtsp://admin:s3cretpw@127.0.0.1:{black_hole}/live", "detector_ids": [DET_A]},
            "absent": {"url": f"rtsp://admin:s3cretpw@127.0.0.1:{dead_port}/live", "detector_ids": [DET_A]},
        }
    )
    absent = wait_until(
        lambda: (s := edge.streams().get("absent")) and s["last_error"] and s, 10, "no error for an absent camera"
    )
    assert absent["state"] == "connecting"
    assert "admin:***@" in absent["url"] and "admin:***@" in absent["last_error"], absent
    assert edge.streams()["hung"]["state"] == "connecting"

    changed = time.monotonic()
    put_streams({})
    wait_until(lambda: not edge.streams(), 5, "a stream stuck in connect did not stop")
    assert time.monotonic() - changed < 4.0

    everything = json.dumps(edge.streams()) + json.dumps(absent)
    for log in edge.stack.log_dir.glob("*.log"):
        everything += log.read_text(errors="replace")
    assert "s3cretpw" not in everything


def test_bad_stream_config_is_a_clear_400_and_changes_nothing(
    edge: StreamsEdge, camera: RtspServer, put_streams
) -> None:
    good = {"url": camera.url("moving"), "detector_ids": [DET_A], "fps": 1}
    put_streams({"ok": good})
    wait_until(lambda: "ok" in edge.streams(), 10, "the stream service did not pick up the good stream")
    cases = [
        ({"ok": {**good, "fsp": 2}}, "streams.ok.fsp: Extra inputs are not permitted"),
        ({"ok": {**good, "fps": 0}}, "streams.ok.fps"),
        ({"ok": {**good, "url": "ftp://u:hidden@x/y"}}, "url must start with one of"),
        ({"ok": {**good, "sinks": [{"kind": "mqtt", "host": "b", "topic": "a/#"}]}}, "streams.ok.sinks.0.mqtt.topic"),
    ]
    for streams, expected in cases:
        response = edge.put_config({**BASE_CONFIG, "streams": streams})
        assert response.status_code == 400, response.text
        assert expected in response.json()["detail"], response.json()
        assert "hidden" not in response.text
    time.sleep(1.5)  # three of the service's config polls (0.5 s in these tests): the bad PUTs changed nothing
    assert edge.streams()["ok"]["fps"] == 1


def test_reconnects_within_10_s_of_the_camera_coming_back(edge: StreamsEdge, work_dir, put_streams) -> None:
    port = free_port()
    server = RtspServer(rtsp_process(work_dir / "flaky-camera", port), port)
    server.start()
    try:
        put_streams({"flaky": {"url": server.url("moving"), "detector_ids": [DET_A], "fps": 2}})
        connected(edge, "flaky")
        server.kill()
        wait_until(lambda: edge.streams()["flaky"]["state"] == "reconnecting", 10, "the loss was not noticed")
        time.sleep(3)  # gone for a while: the backoff grows to its cap
        server.start()
        back = time.monotonic()
        stream = connected(edge, "flaky", submitted=edge.streams()["flaky"]["frames_submitted"] + 1)
        assert time.monotonic() - back < 10
        assert stream["reconnects"] == 1, stream
    finally:
        server.process.stop()
