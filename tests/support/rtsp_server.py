"""A real RTSP server for tests: GStreamer's gst-rtsp-server streaming generated H.264.

Run with the system python3 (python3-gi is a Debian package, not in the venv):

    /usr/bin/python3 tests/support/rtsp_server.py --port 8554

Mounts: ``/moving`` (a bouncing ball: every frame differs), ``/static`` (SMPTE bars: no
frame differs), ``/clock`` (each frame carries the wall-clock time it was made, in
milliseconds, as 40 black/white blocks across its top: see :func:`clock_bits`, read back
by the benches to measure latency) and ``/blink`` (white for 2 s, black for 2 s), all
H.264 at ``--fps`` with a key frame every second.
Prints ``READY <port>`` once it listens. SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PATTERNS = {"moving": "ball", "static": "smpte"}
CLOCK_BITS = 40  # milliseconds modulo 2**40: about 35 years
CLOCK_ROWS = 16  # height of the band of blocks


def encoder(fps: int) -> str:
    return (
        f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bitrate=1500 "
        "! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1"
    )


def launch_line(pattern: str, fps: int, width: int, height: int) -> str:
    # is-live: frames come at the stream's rate, as from a camera, not as fast as possible.
    return (
        f"( videotestsrc is-live=true pattern={pattern} ! video/x-raw,width={width},height={height},framerate={fps}/1 "
        f"! {encoder(fps)} )"
    )


def clock_frame(width: int, height: int, now_ms: int, index: int) -> bytes:
    """A GRAY8 frame: the time in blocks across the top, a moving gradient below."""
    block = width // CLOCK_BITS
    band = bytearray()
    row = bytearray()
    for bit in range(CLOCK_BITS):
        value = 255 if (now_ms >> (CLOCK_BITS - 1 - bit)) & 1 else 0
        row += bytes([value]) * block
    row += bytes(width - len(row))
    band += row * CLOCK_ROWS
    shade = bytes((x + index * 8) % 256 for x in range(width))
    return bytes(band) + shade * (height - CLOCK_ROWS)


def blink_frame(width: int, height: int, now_ms: int, index: int) -> bytes:
    """A GRAY8 frame that is white for two seconds, then black for two: a scene whose
    answer changes (a brightness model says YES, then NO)."""
    return bytes([255 if (now_ms // 2000) % 2 == 0 else 0]) * (width * height)


class ClockFactory(GstRtspServer.RTSPMediaFactory):
    """Frames made by ``frame`` (``clock_frame`` unless told) at the stream's rate."""

    def __init__(self, fps: int, width: int, height: int, frame=clock_frame) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self._fps, self._width, self._height = fps, width, height
        self._frame = frame
        caps = f"video/x-raw,format=GRAY8,width={width},height={height},framerate={fps}/1"
        self.set_launch(
            f"( appsrc name=clock is-live=true do-timestamp=true format=time caps={caps} "
            f"! videoconvert ! video/x-raw,format=I420 ! {encoder(fps)} )"
        )
        self.set_shared(True)
        self.connect("media-configure", self._configure)

    def _configure(self, factory: object, media: GstRtspServer.RTSPMedia) -> None:
        source = media.get_element().get_child_by_name("clock")
        state = {"index": 0, "feeding": True}

        def push() -> bool:
            if not state["feeding"]:
                return False
            state["index"] += 1
            data = self._frame(self._width, self._height, int(time.time() * 1000), state["index"])
            state["feeding"] = source.emit("push-buffer", Gst.Buffer.new_wrapped(data)) == Gst.FlowReturn.OK
            return state["feeding"]

        GLib.timeout_add(int(1000 / self._fps), push)
        # The last client gone: stop feeding a pipeline that is being torn down.
        media.connect("unprepared", lambda *_: state.update(feeding=False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    args = parser.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for path, pattern in PATTERNS.items():
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch_line(pattern, args.fps, args.width, args.height))
        factory.set_shared(True)  # one encoder per mount, however many clients
        mounts.add_factory(f"/{path}", factory)
    mounts.add_factory("/clock", ClockFactory(args.fps, args.width, args.height))
    mounts.add_factory("/blink", ClockFactory(args.fps, args.width, args.height, blink_frame))
    if server.attach(None) == 0:
        print(f"could not listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print(f"READY {args.port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
