"""The stream service's parts on their own: redaction, backoff, the latest-frame slot,
motion gating, alerts, the streams schema, and one stream run end to end on a real
H.264 file with the edge API replaced by httpx.MockTransport."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from intellioptics_common.streams import AlertRule, StreamConfig, redact
from intellioptics_streams.alerts import AlertTracker
from intellioptics_streams.edge_client import EdgeApiClient
from intellioptics_streams.grabber import LatestFrame, SourceOptions, StreamState, backoff_delay
from intellioptics_streams.motion import MotionGate, changed_share
from intellioptics_streams.sinks import SinkBackoff
from intellioptics_streams.source import Frame
from intellioptics_streams.stream import StreamOptions, StreamRunner

DET_A = "det_" + "A" * 27
DET_B = "det_" + "B" * 27


def test_redact_hides_every_password_in_any_text() -> None:
    text = "could not open rtsp://admin:pa:ss@10.0.0.1/live, then http://u:x@h/ and rtsp://10.0.0.2/open"
    assert (
        redact(text) == "could not open rtsp://admin:***@10.0.0.1/live, then http://u:***@h/ and rtsp://10.0.0.2/open"
    )
    assert redact("Bearer abc123 refused", ("abc123",)) == "Bearer *** refused"
    config = StreamConfig(url="rtsp://cam:hunter2@h/1", detector_ids=[DET_A])
    assert config.redacted_url == "rtsp://cam:***@h/1" and config.secrets() == ("hunter2",)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_delay(n, 0.5, 5.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff_delay(10_000, 0.5, 5.0) == 5.0


def test_latest_frame_keeps_only_the_newest() -> None:
    slot = LatestFrame()
    assert slot.take(timeout_s=0.01) is None
    for index in (1, 2, 3):
        slot.put(Frame(None, index, 0.0, 0.0))  # type: ignore[arg-type]
    taken = slot.take(timeout_s=0.01)
    assert taken is not None and taken.index == 3
    assert slot.take(timeout_s=0.01) is None, "the same frame must not be taken twice"


def test_motion_gate_compares_with_the_last_submitted_frame() -> None:
    still = np.zeros((48, 64), dtype=np.uint8)
    moved = still.copy()
    moved[:10, :10] = 255  # 100 of 3072 pixels: 3.3 %
    assert changed_share(still, moved) == pytest.approx(100 / 3072)
    gate = MotionGate(0.05)
    assert gate.should_submit(still)  # the first frame always goes
    assert not gate.should_submit(moved)
    drift = moved.copy()
    drift[10:20, :10] = 255  # 6.5 % away from the reference, 3.3 % from the previous frame
    assert gate.should_submit(drift)
    assert MotionGate(None).should_submit(still)


def test_alerts_fire_once_per_streak_and_on_change() -> None:
    tracker = AlertTracker(
        [
            AlertRule(name="jam", when="same_answer", answer="YES", times=3),
            AlertRule(name="flip", when="answer_changed", detector_id=DET_A),
        ]
    )
    fired = [
        [f.rule.name for f in tracker.observe(DET_A, label)] for label in ["YES", "YES", "YES", "YES", "NO", "YES"]
    ]
    assert fired == [[], [], ["jam"], [], ["flip"], ["flip"]]
    assert [f.rule.name for f in tracker.observe(DET_B, "NO")] == []  # flip watches DET_A only
    assert [[f.rule.name for f in tracker.observe(DET_B, "YES")] for _ in range(3)] == [[], [], ["jam"]]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"detector_ids": [DET_A, DET_A]}, "must not repeat"),
        ({"alerts": [{"name": "x", "when": "same_answer", "detector_id": DET_B}]}, "not in detector_ids"),
        ({"alerts": [{"name": "x", "when": "answer_changed", "times": 3}]}, "same_answer only"),
        ({"url": "ftp://u:secret@h/x"}, "url must start with"),
        ({"fps": 31}, "less than or equal to 30"),
        ({"sinks": [{"kind": "webhook", "url": "mqtt://x"}]}, "should match pattern"),
    ],
)
def test_stream_config_refuses_what_cannot_work(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        StreamConfig.model_validate({"url": "rtsp://h/1", "detector_ids": [DET_A], **fields})
    assert "secret" not in str(caught.value).split("input_value")[0]


def _video_file(path: Path, frames: int = 30, fps: int = 10) -> Path:
    """A real H.264 file with a moving square (PyAV's bundled libx264)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for index in range(frames):
            image = np.zeros((120, 160, 3), dtype=np.uint8)
            image[40:80, (index * 4) % 120 : (index * 4) % 120 + 40] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


class EdgeApi:
    """The edge API's answers to POST image-queries and image-queries/multi, recorded
    (MockTransport); the multi route answers each detector as the single one would."""

    def __init__(self) -> None:
        self.posts: list[httpx.Request] = []
        self.lock = threading.Lock()
        self.answered = 0

    def _query(self, detector_id: str) -> dict:
        with self.lock:
            self.answered += 1
            number = self.answered
        return {
            "id": f"iq_{number:027d}",
            "type": "image_query",
            "created_at": "2026-01-01T00:00:00Z",
            "query": "q?",
            "detector_id": detector_id,
            "result_type": "binary_classification",
            "result": {
                "result_type": "binary_classification",
                "label": "NO",
                "confidence": 0.99,
                "source": "ALGORITHM",
            },
            "patience_time": 30.0,
            "confidence_threshold": 0.9,
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.posts.append(request)
        if request.url.path.endswith("/image-queries/multi"):
            results = [
                {"detector_id": d, "status_code": 201, "image_query": self._query(d)}
                for d in request.url.params.get_list("detector_id")
            ]
            return httpx.Response(200, json={"results": results})
        return httpx.Response(201, json=self._query(request.url.params["detector_id"]))


OPTIONS = StreamOptions(SourceOptions(2.0, 2.0, 0.1, 0.5), sink_queue_size=10, sink_backoff=SinkBackoff(0.1, 1.0))


def test_a_file_stream_posts_one_jpeg_for_its_detectors_at_the_cap(tmp_path: Path) -> None:
    api = EdgeApi()
    client = EdgeApiClient("http://edge.test", "token", 5.0, httpx.MockTransport(api.handle))
    config = StreamConfig(url=str(_video_file(tmp_path / "line.mp4")), detector_ids=[DET_A, DET_B], fps=4)
    runner = StreamRunner("file", config, client, OPTIONS)
    runner.start()
    time.sleep(2.6)
    started = time.monotonic()
    runner.stop()
    assert time.monotonic() - started < 2.0
    assert runner.state == StreamState.STOPPED
    status = runner.status()
    # 10 fps file (looped) sampled at 4 fps for ~2.5 s.
    assert 7 <= status["frames_submitted"] <= 11, status
    assert status["frames_read"] >= 20, status
    # One call per frame for both detectors (the edge decodes it once, runs the backbone once).
    posts = api.posts
    assert len(posts) == status["frames_submitted"]
    for post in posts:
        assert post.url.path == "/device-api/v1/image-queries/multi"
        assert post.url.params.get_list("detector_id") == [DET_A, DET_B]
        assert post.content[:2] == b"\xff\xd8"
        metadata = json.loads(base64.urlsafe_b64decode(post.url.params["metadata"] + "=="))
        assert metadata["stream"] == "file" and metadata["frame_time"].endswith("Z")
    assert api.answered == 2 * status["frames_submitted"]
    assert status["last_results"][DET_B]["label"] == "NO"
    client.close()


def test_an_http_snapshot_url_is_read_again_and_again(tmp_path: Path) -> None:
    """A camera's snapshot URL gives one JPEG per request: the reader asks again at once,
    with no failure, no backoff and no reconnect counted (a real HTTP server here)."""
    import io
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (250, 250, 250)).save(buffer, format="JPEG")
    snapshot = buffer.getvalue()

    class Camera(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "image/jpeg")
            self.send_header("content-length", str(len(snapshot)))
            self.end_headers()
            self.wfile.write(snapshot)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Camera)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = EdgeApi()
    client = EdgeApiClient("http://edge.test", "token", 5.0, httpx.MockTransport(api.handle))
    url = f"http://cam:pw@127.0.0.1:{server.server_address[1]}/snapshot.jpg"
    runner = StreamRunner("snap", StreamConfig(url=url, detector_ids=[DET_A], fps=2), client, OPTIONS)
    try:
        runner.start()
        time.sleep(2.5)
        status = runner.status()
        assert status["state"] == "connected" and status["reconnects"] == 0, status
        assert status["frames_read"] >= 5 and 3 <= status["frames_submitted"] <= 6, status
        assert status["url"] == url.replace("cam:pw@", "cam:***@")
    finally:
        runner.stop()
        server.shutdown()
        server.server_close()
        client.close()


def test_an_mjpeg_http_stream_is_read_as_one_connection() -> None:
    """An IP camera's MJPEG URL (``multipart/x-mixed-replace``, one JPEG per part, 10 a
    second, a real HTTP server): one connection read frame after frame, each frame the
    camera's own (their brightness changes), at the fps cap."""
    import io
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from PIL import Image

    connections: list[int] = []

    def part(index: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), ((index * 20) % 256,) * 3).save(buffer, format="JPEG")
        data = buffer.getvalue()
        return b"--frame\r\ncontent-type: image/jpeg\r\ncontent-length: %d\r\n\r\n" % len(data) + data + b"\r\n"

    class Camera(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            connections.append(1)
            self.send_response(200)
            self.send_header("content-type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for index in range(10_000):
                    self.wfile.write(part(index))
                    self.wfile.flush()
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Camera)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = EdgeApi()
    client = EdgeApiClient("http://edge.test", "token", 5.0, httpx.MockTransport(api.handle))
    url = f"http://127.0.0.1:{server.server_address[1]}/video.mjpg"
    runner = StreamRunner("mjpeg", StreamConfig(url=url, detector_ids=[DET_A], fps=2), client, OPTIONS)
    try:
        runner.start()
        deadline = time.monotonic() + 15
        while runner.status()["frames_read"] < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        first = runner.status()
        time.sleep(2.0)
        status = runner.status()
        assert status["state"] == "connected" and status["reconnects"] == 0, status
        read = status["frames_read"] - first["frames_read"]
        assert 12 <= read <= 24, f"the camera sends 10 a second: {read} read in 2 s"
        submitted = status["frames_submitted"] - first["frames_submitted"]
        assert 3 <= submitted <= 5, f"the fps cap of 2: {submitted} in 2 s"
        assert len(connections) == 1, "an MJPEG stream is one long response, not a request per frame"
        sent = {post.content for post in api.posts}
        assert len(sent) == len(api.posts), "each submitted frame is a new frame of the camera"
    finally:
        runner.stop()
        server.shutdown()
        server.server_close()
        client.close()


def test_a_source_without_video_is_an_error_not_a_reconnect_loop(tmp_path: Path) -> None:
    sound = tmp_path / "sound.wav"
    with av.open(str(sound), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    client = EdgeApiClient("http://edge.test", "token", 5.0, httpx.MockTransport(EdgeApi().handle))
    runner = StreamRunner("mic", StreamConfig(url=f"file://{sound}", detector_ids=[DET_A]), client, OPTIONS)
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while runner.status()["state"] != "error":
            assert time.monotonic() < deadline, runner.status()
            time.sleep(0.05)
        assert runner.status()["last_error"] == f"file://{sound} has no video stream"
    finally:
        runner.stop()
        client.close()


def test_a_slow_edge_drops_frames_and_never_queues_them(tmp_path: Path) -> None:
    """Answers that take 0.4 s at a 5 fps cap: ticks are dropped, and the frame each
    submission sends is still the newest one, not one that waited in a queue."""
    api = EdgeApi()

    def slow(request: httpx.Request) -> httpx.Response:
        time.sleep(0.4)
        return api.handle(request)

    client = EdgeApiClient("http://edge.test", "token", 5.0, httpx.MockTransport(slow))
    config = StreamConfig(url=str(_video_file(tmp_path / "line.mp4")), detector_ids=[DET_A], fps=5)
    runner = StreamRunner("slow", config, client, OPTIONS)
    runner.start()
    ages = []
    for _ in range(12):
        time.sleep(0.25)
        if runner.last_frame_age_s is not None:
            ages.append(runner.last_frame_age_s)
    runner.stop()
    status = runner.status()
    assert status["frames_dropped"] >= 5, status
    assert 4 <= status["frames_submitted"] <= 9, status  # about 1 / 0.4 s, not 5 a second
    # The file runs at 10 fps (0.1 s between frames); a queued frame would be 0.4 s old or more.
    assert max(ages) < 0.35, f"a submitted frame waited: {ages}"
    client.close()


def test_a_count_answer_is_read_with_its_count_and_boxes() -> None:
    """A COUNT detector's answer has no ``label``: the stream reads the count
    (and the count as text in ``label``, which alerts compare) and the boxes."""
    roi = {
        "label": "part",
        "score": 0.9,
        "geometry": {"left": 0.1, "top": 0.2, "right": 0.3, "bottom": 0.4, "x": 0.2, "y": 0.3},
    }
    query = {
        "id": "iq_" + "C" * 27,
        "created_at": "2026-12-04T06:00:00Z",
        "query": "How many parts?",
        "detector_id": DET_A,
        "result_type": "counting",
        "result": {"result_type": "counting", "count": 2, "confidence": 0.95, "source": "ALGORITHM"},
        "patience_time": 30.0,
        "confidence_threshold": 0.9,
        "rois": [roi, roi],
        "done_processing": True,
    }
    transport = httpx.MockTransport(lambda request: httpx.Response(201, json=query))
    client = EdgeApiClient("http://edge", "token", 5.0, transport=transport)
    answer = client.submit(DET_A, b"jpeg", {})
    assert (answer.label, answer.count, answer.confidence, answer.source) == ("2", 2, 0.95, "ALGORITHM")
    assert len(answer.rois) == 2 and answer.rois[0]["geometry"]["right"] == 0.3
