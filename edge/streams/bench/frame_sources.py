"""Which library reads camera streams best: PyAV vs OpenCV (both FFmpeg underneath).

    python -m edge.streams.bench.frame_sources [--streams 4] [--duration 20] [--width 1280 --height 720]

A GStreamer RTSP server (tests/support/rtsp_server.py, mount ``/clock``) streams H.264 at
10 fps whose frames carry the time they were made. Each library runs in its own process
with ``--streams`` readers used the way the stream service uses a source: a thread reads
(decodes) every frame and keeps the latest; a sampler takes it twice a second and
converts it. Reported: CPU per stream (% of one core, whole process), frames read per
second, time from open to first frame, and the age of the sampled frame (camera → sample).
OpenCV is optional (``pip install -c constraints.txt opencv-python-headless``).
Groundlight's ``framegrab`` reads RTSP through OpenCV, so OpenCV's row stands for it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.streams.bench.clock import age_ms

SAMPLE_FPS = 2.0


def _pyav_reader(url: str, stop: threading.Event, out: dict[str, Any]) -> None:
    import av

    started = time.monotonic()
    container = av.open(
        url, options={"rtsp_transport": "tcp", "fflags": "nobuffer", "analyzeduration": "1000000"}, timeout=(5, 5)
    )
    latest: list[Any] = [None]

    def sample() -> None:
        while not stop.wait(1 / SAMPLE_FPS):
            frame = latest[0]
            if frame is not None:
                grey = frame.reformat(format="gray").to_ndarray()
                out["ages"].append(age_ms(grey))

    threading.Thread(target=sample, daemon=True).start()
    for frame in container.decode(video=0):
        if out["first_frame_s"] is None:
            out["first_frame_s"] = time.monotonic() - started
        out["frames"] += 1
        latest[0] = frame
        if stop.is_set():
            break
    container.close()


def _opencv_reader(url: str, stop: threading.Event, out: dict[str, Any]) -> None:
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;tcp|fflags;nobuffer"
    import cv2

    started = time.monotonic()
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
    capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    lock = threading.Lock()
    last_sample = time.monotonic()
    # OpenCV decodes in grab() and converts in retrieve(): the latest-frame pattern grabs
    # every frame and retrieves only the sampled ones, on the same thread (the capture is
    # not thread-safe).
    while not stop.is_set():
        with lock:
            if not capture.grab():
                break
        if out["first_frame_s"] is None:
            out["first_frame_s"] = time.monotonic() - started
        out["frames"] += 1
        if time.monotonic() - last_sample >= 1 / SAMPLE_FPS:
            last_sample = time.monotonic()
            ok, bgr = capture.retrieve()
            if ok:
                out["ages"].append(age_ms(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)))
    capture.release()


def run_reader(library: str, url: str, streams: int, duration: float) -> dict[str, Any]:
    reader = {"pyav": _pyav_reader, "opencv": _opencv_reader}[library]
    stop = threading.Event()
    outs = [{"frames": 0, "first_frame_s": None, "ages": []} for _ in range(streams)]
    threads = [threading.Thread(target=reader, args=(url, stop, out), daemon=True) for out in outs]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while any(out["first_frame_s"] is None for out in outs) and time.monotonic() < deadline:
        time.sleep(0.05)
    # Steady state only: from the moment every reader has its first frame.
    frames_before = [out["frames"] for out in outs]
    ages_before = [len(out["ages"]) for out in outs]
    cpu_before, wall_before = time.process_time(), time.monotonic()
    time.sleep(duration)
    cpu, wall = time.process_time() - cpu_before, time.monotonic() - wall_before
    frames = sum(out["frames"] - before for out, before in zip(outs, frames_before, strict=True))
    stop.set()
    for thread in threads:
        thread.join(10)
    ages = np.array([age for out, before in zip(outs, ages_before, strict=True) for age in out["ages"][before:]])
    return {
        "library": library,
        "cpu_per_stream_pct": round(100 * cpu / wall / streams, 1),
        "fps_read": round(frames / streams / wall, 1),
        "first_frame_s": round(max(out["first_frame_s"] or float("nan") for out in outs), 2),
        "age_p50_ms": round(float(np.percentile(ages, 50)), 0) if ages.size else None,
        "age_p95_ms": round(float(np.percentile(ages, 95)), 0) if ages.size else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--reader", choices=("pyav", "opencv"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reader:  # the child process: one library, measured alone
        print(json.dumps(run_reader(args.reader, args.url, args.streams, args.duration)))
        return 0

    from tests.support.streams import rtsp_server

    libraries = ["pyav"]
    try:
        import cv2  # noqa: F401

        libraries.append("opencv")
    except ImportError:
        print("opencv-python-headless is not installed: measuring PyAV only", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as work, rtsp_server(Path(work), args.fps, args.width, args.height) as camera:
        url = camera.url("clock")
        for library in libraries:
            command = [sys.executable, "-m", "edge.streams.bench.frame_sources", "--reader", library, "--url", url]
            command += ["--streams", str(args.streams), "--duration", str(args.duration)]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    print(
        f"\n{args.streams} streams of {args.width}x{args.height} H.264 at {args.fps} fps, {args.duration:g} s, "
        f"sampled at {SAMPLE_FPS:g} fps, {os.cpu_count()} CPUs (steady state, after every reader's first frame)\n"
    )
    print(
        "| library | CPU per stream (% of a core) | frames read/s per stream | open → first frame (s) | sampled frame age p50 / p95 (ms) |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['library']} | {row['cpu_per_stream_pct']} | {row['fps_read']} | {row['first_frame_s']} "
            f"| {row['age_p50_ms']:.0f} / {row['age_p95_ms']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
