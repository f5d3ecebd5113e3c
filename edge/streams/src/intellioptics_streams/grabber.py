"""The reader of one stream: a thread that keeps only the latest frame.

The reader decodes as fast as the source sends and overwrites a single slot; the
stream's sampler takes from that slot at its own pace. A slow model therefore drops
frames, it never queues them, and the frame it gets is the newest one there is.

When the source is not there yet, or goes away, the reader reconnects with exponential
backoff (``reconnect_backoff_base_s`` doubling up to ``reconnect_backoff_cap_s``); a
file that ends is played again at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from intellioptics_common.streams import redact
from intellioptics_streams.errors import SourceError, SourceUnusableError
from intellioptics_streams.source import Frame, VideoSource

logger = logging.getLogger(__name__)
_REOPEN_PAUSE_S = 0.1  # between two reads of a snapshot URL


class StreamState(StrEnum):
    CONNECTING = "connecting"  # never connected yet (the camera may not be there yet)
    CONNECTED = "connected"  # frames are arriving
    RECONNECTING = "reconnecting"  # was connected, lost the source, trying again
    STOPPED = "stopped"  # disabled in edge-config, or being replaced
    ERROR = "error"  # the source opens but cannot serve video; retried at the slowest pace


def backoff_delay(attempt: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0 = the first retry)."""
    return min(cap_s, base_s * (2 ** min(attempt, 30)))


class LatestFrame:
    """One slot: ``put`` overwrites, ``take`` waits for a frame newer than the last taken."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._frame: Frame | None = None
        self._taken_index = 0

    def put(self, frame: Frame) -> None:
        with self._condition:
            self._frame = frame
            self._condition.notify_all()

    def take(self, timeout_s: float) -> Frame | None:
        with self._condition:
            fresh = self._condition.wait_for(
                lambda: self._frame is not None and self._frame.index > self._taken_index, timeout_s
            )
            if not fresh or self._frame is None:
                return None
            self._taken_index = self._frame.index
            return self._frame


@dataclass(frozen=True)
class SourceOptions:
    open_timeout_s: float
    read_timeout_s: float
    backoff_base_s: float
    backoff_cap_s: float


SourceFactory = Callable[[str, SourceOptions, tuple[str, ...]], VideoSource]


def open_video(url: str, options: SourceOptions, secrets: tuple[str, ...]) -> VideoSource:
    return VideoSource(
        url, open_timeout_s=options.open_timeout_s, read_timeout_s=options.read_timeout_s, secrets=secrets
    )


class Grabber:
    """Owns the reader thread of one stream; counters are read by the status page."""

    def __init__(
        self,
        name: str,
        url: str,
        options: SourceOptions,
        secrets: tuple[str, ...],
        *,
        open_source: SourceFactory = open_video,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.slot = LatestFrame()
        self.state = StreamState.CONNECTING
        self.frames_read = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self.connected_at: float | None = None
        self._url = url
        self._options = options
        self._secrets = secrets
        self._open_source = open_source
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"stream-{name}-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float) -> bool:
        """True when the reader has ended; one stuck in a connect ends by its time limit."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        attempt = 0
        ever_connected = False
        while not self._stop.is_set():
            try:
                source = self._open_source(self._url, self._options, self._secrets)
            except SourceError as exc:
                self._failed(exc, ever_connected)
            else:
                got_frames = False
                try:
                    for video in source.frames(self._stop):
                        if self._stop.is_set():
                            break
                        if self.state != StreamState.CONNECTED:
                            if ever_connected:
                                self.reconnects += 1
                            ever_connected = True
                            attempt = 0
                            self.state = StreamState.CONNECTED
                            self.connected_at = self._clock()
                            logger.info("stream %s: connected to %s", self.name, redact(self._url, self._secrets))
                        got_frames = True
                        self.frames_read += 1
                        self.slot.put(Frame(video, self.frames_read, self._clock(), time.time()))
                    else:
                        if got_frames and not self._stop.is_set():
                            # A file ended (play it again), or a snapshot URL gave its one
                            # image (ask again): no failure, no backoff. A camera that went
                            # away fails to reopen and is retried with backoff from there.
                            if source.live:
                                self._stop.wait(_REOPEN_PAUSE_S)
                            continue
                        if not self._stop.is_set():
                            self._failed(SourceError("the source ended the stream"), ever_connected)
                except SourceError as exc:
                    self._failed(exc, ever_connected)
                finally:
                    source.close()
            if self._stop.is_set():
                break
            delay = backoff_delay(attempt, self._options.backoff_base_s, self._options.backoff_cap_s)
            if self.state == StreamState.ERROR:
                delay = self._options.backoff_cap_s
            attempt += 1
            self._stop.wait(delay)
        self.state = StreamState.STOPPED

    def _failed(self, exc: SourceError, ever_connected: bool) -> None:
        self.last_error = redact(exc.public_message, self._secrets)
        if isinstance(exc, SourceUnusableError):
            self.state = StreamState.ERROR
        else:
            self.state = StreamState.RECONNECTING if ever_connected else StreamState.CONNECTING
        logger.warning("stream %s: %s", self.name, self.last_error)
