"""A real RTSP server for tests: GStreamer's gst-rtsp-server streaming generated H.264.

Run with the system python3 (python3-gi is a Debian package, not in the venv):

    /usr/bin/python3 tests/support/rtsp_server.py --port 8554

Mounts: ``/moving`` (a bouncing ball: every frame differs) and ``/static`` (SMPTE bars:
no frame differs), both 320x240 H.264 at ``--fps`` with a key frame every second.
Prints ``READY <port>`` once it listens. SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PATTERNS = {"moving": "ball", "static": "smpte"}


def launch_line(pattern: str, fps: int, width: int, height: int) -> str:
    # is-live: frames come at the stream's rate, as from a camera, not as fast as possible.
    return (
        f"( videotestsrc is-live=true pattern={pattern} ! video/x-raw,width={width},height={height},framerate={fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bitrate=500 "
        "! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


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
