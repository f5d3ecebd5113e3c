"""Frame sources over FFmpeg (PyAV): RTSP, HTTP (MJPEG), video files, USB cameras.

PyAV was chosen by measurement (docs/benchmarks.md, "Stream service"): for the same
H.264 stream it decodes with less CPU than OpenCV's capture, opens with explicit time
limits on both the connect and every read, and lets a decoded frame stay in YUV until
the stream samples it, so frames that the fps cap leaves out are never converted.

Every H.264 frame must be decoded to get the next one, so the reader decodes them all;
only a sampled frame is scaled to a thumbnail (motion) and encoded as JPEG.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import av
import av.error
import numpy as np

from intellioptics_common.streams import redact
from intellioptics_streams.errors import SourceError, SourceUnusableError

logger = logging.getLogger(__name__)
# FFmpeg's own log lines name the URL it works on, password included: keep them out.
av.logging.set_level(av.logging.PANIC)


@dataclass(frozen=True)
class Frame:
    """A decoded frame as the reader left it (not converted), with when it was read."""

    video: av.VideoFrame
    index: int  # 1 for the first frame read since the stream started
    read_monotonic: float
    read_wall: float

    def thumbnail(self, width: int, height: int) -> np.ndarray:
        """A small grey copy (uint8, height x width): what motion gating compares."""
        return self.video.reformat(width=width, height=height, format="gray").to_ndarray()

    def jpeg(self, quality: int) -> bytes:
        buffer = io.BytesIO()
        self.video.to_image().save(buffer, format="JPEG", quality=quality)
        return buffer.getvalue()


def _open_arguments(url: str) -> tuple[str, str | None, dict[str, str], bool]:
    """(what to open, forced format, FFmpeg options, live?) for a stream URL."""
    source = url.strip()
    if source.startswith("/dev/video"):
        return source, "v4l2", {}, True
    if source.startswith("/"):
        return source, None, {}, False
    parts = urlsplit(source)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return parts.path, None, {}, False
    # A short probe; for streaming protocols no input buffering (low latency) and TCP for
    # RTSP (UDP drops packets under load and smears frames; TCP delays instead, and the
    # reader keeps up). Not for HTTP: nobuffer drops what the probe read, which for a
    # snapshot URL is its only image.
    options = {"analyzeduration": "1000000"}
    if scheme in ("rtsp", "rtsps", "rtmp"):
        options["fflags"] = "nobuffer"
    if scheme in ("rtsp", "rtsps"):
        options["rtsp_transport"] = "tcp"
    return source, None, options, True


class VideoSource:
    """One connection to a source; iterate :meth:`frames`, then :meth:`close`."""

    def __init__(self, url: str, *, open_timeout_s: float, read_timeout_s: float, secrets: tuple[str, ...]) -> None:
        self._url = url
        self._secrets = secrets
        target, format_name, options, self.live = _open_arguments(url)
        try:
            self._container: Any = av.open(
                target, format=format_name, options=options, timeout=(open_timeout_s, read_timeout_s)
            )
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(self._describe("could not open", exc)) from None
        if not self._container.streams.video:
            self.close()
            raise SourceUnusableError(f"{redact(url, secrets)} has no video stream")
        self._stream = self._container.streams.video[0]

    def _describe(self, what: str, exc: BaseException) -> str:
        reason = str(exc) or type(exc).__name__
        return redact(f"{what} {self._url}: {reason}", self._secrets)

    def frames(self, stop: threading.Event) -> Iterator[av.VideoFrame]:
        """Decoded frames until the source ends (files) or fails (SourceError); files are
        played at their own rate, as a camera would send them."""
        started_wall: float | None = None
        first_time: float | None = None
        try:
            for packet in self._container.demux(self._stream):
                if stop.is_set():
                    return
                try:
                    decoded = packet.decode()
                except av.error.InvalidDataError:
                    continue  # one damaged packet: the next key frame repairs the picture
                for frame in decoded:
                    if not self.live and frame.time is not None:
                        if first_time is None:
                            started_wall, first_time = time.monotonic(), frame.time
                        assert started_wall is not None
                        delay = started_wall + (frame.time - first_time) - time.monotonic()
                        if delay > 0 and stop.wait(delay):
                            return
                    yield frame
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(self._describe("lost", exc)) from None

    def close(self) -> None:
        try:
            self._container.close()
        except (av.error.FFmpegError, OSError) as exc:  # closing a broken connection may fail too
            logger.debug("closing a source failed: %s", redact(str(exc), self._secrets))
