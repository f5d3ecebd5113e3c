"""Where a stream's results go: webhooks (JSON POST) and MQTT, each on its own thread.

A stream hands an event to a sink with ``offer``, which never blocks: each sink has a
bounded queue (``INTELLIOPTICS_SINK_QUEUE_SIZE``) and counts what it had to drop when
it is full. A webhook is retried with exponential backoff up to ``max_attempts``;
MQTT reconnects by itself (paho's loop) and publishes each event as one message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import paho.mqtt.client as mqtt

from intellioptics_common.streams import MqttSink, Sink, WebhookSink, redact
from intellioptics_streams.grabber import backoff_delay

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamEvent:
    """One message to a sink: an answer (``event: result``) or a fired alert (``event: alert``)."""

    event: str
    stream: str
    detector_id: str
    image_query_id: str
    label: str | None
    confidence: float | None
    answered_by: str | None  # the result's source: ALGORITHM (the edge model), HUMAN, ...
    frame_time: str  # ISO 8601, UTC: when the frame was read from the camera
    alert: str | None = None
    alert_when: str | None = None
    previous_label: str | None = None
    streak: int | None = None
    count: int | None = None  # a COUNT detector's answer (``label`` is it as text)
    rois: list[dict[str, Any]] | None = None  # boxes of COUNT / BOUNDING_BOX / anomaly answers

    def to_json(self) -> bytes:
        body = {key: value for key, value in asdict(self).items() if value is not None or key in ("label",)}
        return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True)
class SinkBackoff:
    base_s: float
    cap_s: float


class SinkWorker:
    """A bounded queue and the thread that empties it; subclasses deliver one event."""

    kind = "sink"

    def __init__(self, stream: str, index: int, send: str, queue_size: int, secrets: tuple[str, ...]) -> None:
        self.stream = stream
        self.index = index
        self.send = send
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.retries = 0
        self.last_error: str | None = None
        self._secrets = secrets
        self._queue: queue.Queue[StreamEvent | None] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"stream-{stream}-{self.kind}-{index}", daemon=True)

    def wants(self, event: StreamEvent) -> bool:
        return self.send == "all" or (self.send == "results") == (event.event == "result")

    def offer(self, event: StreamEvent) -> None:
        if not self.wants(event):
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        # A full queue: the worker sees the stop flag after its current event.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                event = self._queue.get()
                if event is None or self._stop.is_set():
                    break
                self.deliver(event)
        finally:
            self.close()

    def _error(self, message: str) -> None:
        self.last_error = redact(message, self._secrets)
        logger.warning("stream %s: %s sink %d: %s", self.stream, self.kind, self.index, self.last_error)

    def status(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "send": self.send,
            "queued": self.queued,
            "delivered": self.delivered,
            "failed": self.failed,
            "dropped": self.dropped,
            "retries": self.retries,
            "last_error": self.last_error,
        }

    def deliver(self, event: StreamEvent) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections (on the worker's own thread)."""


class WebhookWorker(SinkWorker):
    kind = "webhook"

    def __init__(
        self,
        stream: str,
        index: int,
        sink: WebhookSink,
        queue_size: int,
        backoff: SinkBackoff,
        secrets: tuple[str, ...],
    ) -> None:
        super().__init__(stream, index, sink.send, queue_size, secrets)
        self._sink = sink
        self._backoff = backoff
        self._client = httpx.Client(timeout=sink.timeout_s)

    def deliver(self, event: StreamEvent) -> None:
        headers = {"content-type": "application/json", **self._sink.headers}
        body = event.to_json()
        for attempt in range(self._sink.max_attempts):
            if attempt:
                self.retries += 1
                if self._stop.wait(backoff_delay(attempt - 1, self._backoff.base_s, self._backoff.cap_s)):
                    return
            try:
                response = self._client.post(self._sink.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                self._error(f"POST {self._sink.url} failed: {exc}")
                continue
            if response.is_success:
                self.delivered += 1
                return
            self._error(f"POST {self._sink.url} answered HTTP {response.status_code}")
            if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                break  # the receiver refuses this event: retrying sends the same refusal
        self.failed += 1

    def close(self) -> None:
        self._client.close()


class MqttWorker(SinkWorker):
    kind = "mqtt"

    def __init__(self, stream: str, index: int, sink: MqttSink, queue_size: int, secrets: tuple[str, ...]) -> None:
        super().__init__(stream, index, sink.send, queue_size, secrets)
        self._sink = sink
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"intellioptics-{stream}-{index}")
        if sink.username is not None:
            self._client.username_pw_set(sink.username, sink.password)
        if sink.tls:
            self._client.tls_set()
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        # While the broker is away paho keeps what is published; bounded like the queue.
        self._client.max_queued_messages_set(queue_size)
        self._client.on_publish = self._published
        self._client.on_connect = self._connected

    def start(self) -> None:
        self._client.connect_async(self._sink.host, self._sink.port, keepalive=30)
        self._client.loop_start()
        super().start()

    # paho calls back with these positional arguments; only the reason code matters here.
    def _connected(self, _client: mqtt.Client, _userdata: object, _flags: object, reason: Any, _props: object) -> None:
        if reason.is_failure:
            self._error(f"broker {self._sink.host}:{self._sink.port} refused the connection: {reason}")

    def _published(self, _client: mqtt.Client, _userdata: object, _mid: int, _reason: object, _props: object) -> None:
        self.delivered += 1

    def deliver(self, event: StreamEvent) -> None:
        info = self._client.publish(self._sink.topic, event.to_json(), qos=self._sink.qos)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self.dropped += 1
        elif info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self.failed += 1
            self._error(f"publish to {self._sink.topic} failed: {mqtt.error_string(info.rc)}")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def make_sinks(
    stream: str, sinks: list[Sink], queue_size: int, backoff: SinkBackoff, secrets: tuple[str, ...]
) -> list[SinkWorker]:
    workers: list[SinkWorker] = []
    for index, sink in enumerate(sinks):
        if isinstance(sink, WebhookSink):
            workers.append(WebhookWorker(stream, index, sink, queue_size, backoff, secrets))
        else:
            workers.append(MqttWorker(stream, index, sink, queue_size, secrets))
    return workers
