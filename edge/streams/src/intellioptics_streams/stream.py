"""One running stream: its reader, its sampler, its sinks and its counters.

The sampler wakes at most ``fps`` times a second, takes the reader's latest frame,
gates it on motion, encodes it as JPEG once and posts those same bytes once per
detector. A tick that came while the previous frame was still being answered is a
dropped frame: nothing waits in a queue.

    frames_read = frames_submitted + frames_skipped_motion + frames_dropped
                  + frames the fps cap left out (the rest)
"""

from __future__ import annotations

import logging
import math
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from intellioptics_common.streams import StreamConfig, redact
from intellioptics_streams.alerts import AlertTracker
from intellioptics_streams.edge_client import Answer, EdgeApiClient
from intellioptics_streams.errors import EdgeApiError
from intellioptics_streams.grabber import Grabber, SourceFactory, SourceOptions, StreamState, open_video
from intellioptics_streams.motion import THUMBNAIL_SIZE, MotionGate
from intellioptics_streams.sinks import SinkBackoff, SinkWorker, StreamEvent, make_sinks

logger = logging.getLogger(__name__)
STOP_BUDGET_S = 1.5  # of the 2 s a stop may take: the reader, then the sinks share it


@dataclass(frozen=True)
class StreamOptions:
    source: SourceOptions
    sink_queue_size: int
    sink_backoff: SinkBackoff


@dataclass(frozen=True)
class LastResult:
    image_query_id: str
    label: str | None
    confidence: float | None
    source: str | None
    frame_time: str


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StreamRunner:
    def __init__(
        self,
        name: str,
        config: StreamConfig,
        edge: EdgeApiClient,
        options: StreamOptions,
        *,
        open_source: SourceFactory = open_video,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.config = config
        self._edge = edge
        self._clock = clock
        self._secrets = config.secrets()
        self.grabber = Grabber(name, config.url, options.source, self._secrets, open_source=open_source, clock=clock)
        self.sinks: list[SinkWorker] = make_sinks(
            name, config.sinks, options.sink_queue_size, options.sink_backoff, self._secrets
        )
        self._alerts = AlertTracker(config.alerts)
        self._motion = MotionGate(config.motion_threshold)
        self.frames_submitted = 0
        self.frames_skipped_motion = 0
        self.frames_dropped = 0
        self.submit_errors = 0
        self.last_submit_error: str | None = None
        self.last_image_query_id: str | None = None
        self.last_results: dict[str, LastResult] = {}
        self.last_frame_age_s: float | None = None  # how old the submitted frame was when sampled
        self.started_at: str | None = None  # when this runner (this configuration) started, UTC
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name=f"stream-{name}-sampler", daemon=True)

    # --- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        self.started_at = _iso(time.time())
        for sink in self.sinks:
            sink.start()
        self.grabber.start()
        self._sampler.start()
        logger.info("stream %s: started (%s, %g fps)", self.name, self.config.redacted_url, self.config.fps)

    def stop(self) -> None:
        """Within 2 s: a reader stuck in a connect is left to end by its time limit (it
        can no longer publish a frame), and so is a webhook in the middle of a POST."""
        deadline = self._clock() + STOP_BUDGET_S
        self._stop.set()
        self.grabber.stop()
        for sink in self.sinks:
            sink.stop()
        self._sampler.join(max(0.0, deadline - self._clock()))
        if not self.grabber.join(max(0.05, deadline - self._clock())):
            logger.info("stream %s: the reader ends by its source time limit", self.name)
        for sink in self.sinks:
            sink.join(max(0.05, deadline - self._clock()))
        logger.info("stream %s: stopped", self.name)

    # --- the sampler -------------------------------------------------------------------

    def _sample(self) -> None:
        period = 1.0 / self.config.fps
        # Streams started together would post in step, a burst per tick that other callers
        # of the edge queue behind; a phase from the name spreads their ticks over the period.
        origin = self._clock() + (zlib.crc32(self.name.encode()) % 1000) / 1000 * period

        def tick_after(now: float) -> float:
            return origin + math.ceil((now - origin) / period) * period

        next_due = origin
        while not self._stop.is_set():
            wait = next_due - self._clock()
            if wait > 0 and self._stop.wait(wait):
                return
            # Late by a period or more: the last frame's answers took that long, and the
            # ticks in between had frames that were never sent (dropped, not queued).
            late = self._clock() - next_due
            if late >= period:
                self.frames_dropped += math.floor(late / period)
                next_due = tick_after(self._clock())
                continue
            frame = self.grabber.slot.take(timeout_s=0.5)
            if frame is None:
                next_due = tick_after(self._clock())  # no new frame yet: try again at the next tick
                continue
            next_due += period
            if not self._motion.should_submit(frame.thumbnail(*THUMBNAIL_SIZE)):
                self.frames_skipped_motion += 1
                continue
            self.last_frame_age_s = self._clock() - frame.read_monotonic
            self._submit(frame.jpeg(self.config.jpeg_quality), frame.read_wall, frame.index)

    def _submit(self, jpeg: bytes, read_wall: float, index: int) -> None:
        frame_time = _iso(read_wall)
        metadata = {"stream": self.name, "frame_time": frame_time, "frame_index": index}
        detector_ids = list(self.config.detector_ids)
        if self._stop.is_set():
            return
        answers: list[Answer | EdgeApiError]
        if len(detector_ids) == 1:
            try:
                answers = [self._edge.submit(detector_ids[0], jpeg, metadata)]
            except EdgeApiError as exc:
                answers = [exc]
        else:  # one call: the edge decodes the frame once and runs the shared backbone once
            try:
                answers = self._edge.submit_many(detector_ids, jpeg, metadata)
            except EdgeApiError as exc:
                answers = [exc]
        submitted = False
        for answer in answers:
            if isinstance(answer, EdgeApiError):
                self.submit_errors += 1
                self.last_submit_error = redact(answer.public_message, self._secrets)
                logger.warning("stream %s: %s", self.name, self.last_submit_error)
                continue
            submitted = True
            self._record(answer, frame_time)
        if submitted:
            self.frames_submitted += 1

    def _record(self, answer: Answer, frame_time: str) -> None:
        self.last_image_query_id = answer.image_query_id
        self.last_results[answer.detector_id] = LastResult(
            answer.image_query_id, answer.label, answer.confidence, answer.source, frame_time
        )
        event = StreamEvent(
            event="result",
            stream=self.name,
            detector_id=answer.detector_id,
            image_query_id=answer.image_query_id,
            label=answer.label,
            confidence=answer.confidence,
            answered_by=answer.source,
            frame_time=frame_time,
            count=answer.count,
            rois=list(answer.rois) or None,
        )
        events = [event]
        if answer.label is not None:
            for fired in self._alerts.observe(answer.detector_id, answer.label):
                alert = replace(
                    event,
                    event="alert",
                    alert=fired.rule.name,
                    alert_when=fired.rule.when,
                    previous_label=fired.previous_label,
                    streak=fired.streak,
                )
                events.append(alert)
        for sink in self.sinks:
            for item in events:
                sink.offer(item)

    # --- status ------------------------------------------------------------------------

    @property
    def state(self) -> StreamState:
        return StreamState.STOPPED if self._stop.is_set() else self.grabber.state

    @property
    def last_error(self) -> str | None:
        return self.grabber.last_error if self.grabber.state != StreamState.CONNECTED else self.last_submit_error

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.config.redacted_url,
            "enabled": True,
            "state": self.state.value,
            "started_at": self.started_at,
            "fps": self.config.fps,
            "motion_threshold": self.config.motion_threshold,
            "detector_ids": list(self.config.detector_ids),
            "frames_read": self.grabber.frames_read,
            "frames_submitted": self.frames_submitted,
            "frames_skipped_motion": self.frames_skipped_motion,
            "frames_dropped": self.frames_dropped,
            "reconnects": self.grabber.reconnects,
            "submit_errors": self.submit_errors,
            "last_error": self.last_error,
            "last_image_query_id": self.last_image_query_id,
            "last_frame_age_s": None if self.last_frame_age_s is None else round(self.last_frame_age_s, 3),
            "last_results": {detector: result.__dict__ for detector, result in self.last_results.items()},
            "sinks": [sink.status() for sink in self.sinks],
        }


def stopped_status(name: str, config: StreamConfig) -> dict[str, Any]:
    """A stream that edge-config lists with ``enabled: false``."""
    return {
        "name": name,
        "url": config.redacted_url,
        "enabled": False,
        "state": StreamState.STOPPED.value,
        "started_at": None,
        "fps": config.fps,
        "motion_threshold": config.motion_threshold,
        "detector_ids": list(config.detector_ids),
        "frames_read": 0,
        "frames_submitted": 0,
        "frames_skipped_motion": 0,
        "frames_dropped": 0,
        "reconnects": 0,
        "submit_errors": 0,
        "last_error": None,
        "last_image_query_id": None,
        "last_frame_age_s": None,
        "last_results": {},
        "sinks": [],
    }
