"""Webhook sinks against a real local HTTP server: retries spaced by the backoff, a slow
receiver never holds up the stream, and credentials in a webhook's URL or headers never
reach ``last_error`` or the logs."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edge.streams.tests.conftest import wait_until
from intellioptics_common.streams import StreamConfig, WebhookSink, redact
from intellioptics_streams.sinks import SinkBackoff, StreamEvent, WebhookWorker

DET = "det_" + "A" * 27
EVENT = StreamEvent("result", "line-3", DET, "iq_" + "1" * 27, "NO", 0.99, "ALGORITHM", "2026-01-01T00:00:00Z")


class Receiver:
    """Answers ``statuses`` in turn (then 200), after ``delay_s``; records arrival times."""

    def __init__(self, statuses: list[int], delay_s: float = 0.0) -> None:
        self.statuses = list(statuses)
        self.delay_s = delay_s
        self.arrivals: list[float] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.arrivals.append(time.monotonic())
                receiver.paths.append(self.path)
                time.sleep(receiver.delay_s)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@contextlib.contextmanager
def receiving(statuses: list[int], delay_s: float = 0.0) -> Iterator[Receiver]:
    receiver = Receiver(statuses, delay_s)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def _worker(sink: WebhookSink, config: StreamConfig | None = None, queue_size: int = 10) -> WebhookWorker:
    secrets = config.secrets() if config is not None else ()
    return WebhookWorker("line-3", 0, sink, queue_size, SinkBackoff(0.2, 1.0), secrets)


def test_retries_are_spaced_by_the_backoff_and_a_4xx_is_not_retried() -> None:
    with receiving([503, 503, 503]) as receiver:
        worker = _worker(WebhookSink(kind="webhook", url=f"{receiver.url}/hook", max_attempts=5))
        worker.start()
        worker.offer(EVENT)
        wait_until(lambda: worker.delivered == 1, 10, "timed out")
        gaps = [b - a for a, b in zip(receiver.arrivals, receiver.arrivals[1:], strict=False)]
        # 0.2, 0.4, 0.8 s (base 0.2 s doubling, cap 1 s): each wait at least its step.
        assert len(gaps) == 3 and all(gap >= step * 0.9 for gap, step in zip(gaps, (0.2, 0.4, 0.8), strict=True)), gaps
        assert worker.retries == 3 and worker.failed == 0
        worker.stop()
        assert worker.join(5)
    with receiving([400]) as receiver:
        worker = _worker(WebhookSink(kind="webhook", url=f"{receiver.url}/hook", max_attempts=5))
        worker.start()
        worker.offer(EVENT)
        wait_until(lambda: worker.failed == 1, 10, "timed out")
        assert len(receiver.arrivals) == 1 and worker.retries == 0  # the receiver refused it: no retry
        worker.stop()
        assert worker.join(5)


def test_a_slow_webhook_never_holds_up_the_stream() -> None:
    with receiving([], delay_s=1.5) as receiver:
        worker = _worker(WebhookSink(kind="webhook", url=f"{receiver.url}/hook", timeout_s=5), queue_size=5)
        worker.start()
        started = time.monotonic()
        for _ in range(50):
            worker.offer(EVENT)
        offered_s = time.monotonic() - started
        assert offered_s < 0.5, f"offering 50 events took {offered_s:.2f} s: the stream would wait"
        # One in flight, five queued, the rest dropped and counted (never queued without bound).
        assert 44 <= worker.dropped <= 45 and worker.queued <= 5, worker.status()
        stopping = time.monotonic()
        worker.stop()
        assert worker.join(5) and time.monotonic() - stopping < 3.5


def test_credentials_in_a_webhook_url_or_headers_never_reach_status_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    token, path_token, key, password = "s3cr3tQueryValue", "abcdEFGH1234ijklMNOP", "k3y-0f-the-api", "p%40ss:word"
    with receiving([503, 503]) as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        url = f"http://hook:{password}@127.0.0.1:{port}/services/T01/{path_token}?token={token}"
        sink = WebhookSink(kind="webhook", url=url, headers={"X-Api-Key": key}, max_attempts=2)
        config = StreamConfig(url="rtsp://cam:hunter2@10.0.0.5/live", detector_ids=[DET], sinks=[sink])
        secrets = config.secrets()
        for secret in (token, path_token, key, password, "p@ss:word", "hunter2"):
            assert secret in secrets, secret
        worker = _worker(sink, config)
        with caplog.at_level(logging.WARNING):
            worker.start()
            worker.offer(EVENT)
            wait_until(lambda: worker.failed == 1, 10, "timed out")
        worker.stop()
        assert worker.join(5)
        assert receiver.paths == [f"/services/T01/{path_token}?token={token}"] * 2  # the real URL was used
    shown = [str(worker.status()), *(record.getMessage() for record in caplog.records)]
    assert worker.last_error and "503" in worker.last_error and "***" in worker.last_error
    for text in shown:
        for secret in (token, path_token, key, "p@ss:word", password):
            assert secret not in text, (secret, text)
    # Ordinary path names stay readable.
    assert "/services/T01/" in redact(url, secrets)


def test_a_stream_stops_within_2_s_with_its_camera_hung_and_a_webhook_mid_post() -> None:
    """The issue's clean stop: a reader stuck in the camera's handshake (it never answers)
    and a webhook receiver that takes 10 s to answer must not hold the stop past 2 s."""
    import httpx

    from intellioptics_streams.edge_client import EdgeApiClient
    from intellioptics_streams.errors import SourceError
    from intellioptics_streams.grabber import SourceOptions
    from intellioptics_streams.stream import StreamOptions, StreamRunner

    opened, released = threading.Event(), threading.Event()

    def hung_camera(url: str, options: SourceOptions, secrets: tuple[str, ...]):  # type: ignore[no-untyped-def]
        opened.set()
        released.wait(30)  # a handshake that does not end while the stop is timed
        raise SourceError("the camera never answered")

    with receiving([], delay_s=10) as receiver:
        sink = WebhookSink(kind="webhook", url=f"{receiver.url}/hook", send="all", timeout_s=30)
        config = StreamConfig(url="rtsp://cam:pw@10.0.0.5/live", detector_ids=[DET], sinks=[sink])
        edge = EdgeApiClient("http://edge.test", None, 5.0, httpx.MockTransport(lambda _: httpx.Response(500)))
        options = StreamOptions(SourceOptions(2.0, 2.0, 0.1, 0.5), sink_queue_size=10, sink_backoff=SinkBackoff(0.1, 1))
        runner = StreamRunner("hung", config, edge, options, open_source=hung_camera)
        runner.start()
        assert opened.wait(5)
        runner.sinks[0].offer(EVENT)
        wait_until(lambda: len(receiver.arrivals) == 1, 5, "timed out")  # the POST is in the receiver's hands
        started = time.monotonic()
        runner.stop()
        took = time.monotonic() - started
        released.set()  # the reader thread ends by its own (already stopped) loop
        assert runner.grabber.join(5)
        edge.close()
    assert took < 2.0, f"the stop took {took:.2f} s"
