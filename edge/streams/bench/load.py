"""The issue's targets for camera streams, measured on the real edge.

    python -m edge.streams.bench.load                  # ~2 minutes: 60 s of load, 30 s outage
    python -m edge.streams.bench.load --duration 600   # the issue's 10 minutes

A GStreamer RTSP server (``/clock`` mount, 640x480 H.264 at 10 fps) feeds ``--streams``
streams at ``--fps`` each, every one watched by 2 detectors (by default each on the real
EfficientNet-Lite0 export with heads of its own, so a stream's two detectors share one
backbone pass; ``--models brightness``: the tests' tiny models), in the real inference
service, through the edge API's decision tree and nginx. Meanwhile a
client posts its own image query through the gateway every 0.25 s; its latency is
compared with the same client on the idle edge. Then the camera goes away for
``--outage`` seconds and comes back: the time each stream takes to submit again is reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from intellioptics_inference.bench import default_backbone, write_bench_detector
from tests.support.metrics import metric_total
from tests.support.procs import free_port
from tests.support.streams import RtspServer, edge_with_streams, rtsp_process

PROBE = "det_" + "P" * 27


def detector(index: int, which: int) -> str:
    return f"det_{'S' if which == 0 else 'T'}{index:02d}" + "X" * 24


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Prober:
    """Posts one image query every ``interval_s`` and keeps the latencies (ms)."""

    def __init__(self, gateway: str, token: str, interval_s: float = 0.25) -> None:
        self._client = httpx.Client(base_url=gateway, headers={"x-api-token": token}, timeout=10)
        self._interval_s = interval_s
        self._image = _jpeg()
        self.latencies: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            started = time.perf_counter()
            response = self._client.post(
                "/device-api/v1/image-queries",
                params={"detector_id": PROBE},
                content=self._image,
                headers={"content-type": "image/jpeg"},
            )
            if response.status_code == 201:
                self.latencies.append(1000 * (time.perf_counter() - started))
            else:
                self.errors += 1

    def measure(self, seconds: float) -> list[float]:
        self.latencies, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        time.sleep(seconds)
        self._stop.set()
        self._thread.join()
        return self.latencies

    def start(self) -> None:
        self.latencies, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        return self.latencies


def _jpeg() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 200, 200)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (the issue: 600)")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the camera is gone (0: skip)")
    parser.add_argument(
        "--models",
        choices=("real", "brightness"),
        default="real",
        help="real: every detector on the EfficientNet-Lite0 export with its own heads (a stream's two "
        "detectors share one backbone pass); brightness: the tests' tiny brightness models",
    )
    args = parser.parse_args(argv)

    ids = [[detector(i, 0), detector(i, 1)] for i in range(args.streams)]
    all_ids = [PROBE, *(d for pair in ids for d in pair)]
    config: dict[str, Any] = {
        "global_config": {"confident_audit_rate": 0},
        "detectors": [
            {"detector_id": d, "edge_inference_config": "no_cloud", "name": d[-6:], "query": "bright?"} for d in all_ids
        ],
    }
    models = dict.fromkeys(all_ids, ("NO", "YES")) if args.models == "brightness" else None
    with tempfile.TemporaryDirectory() as work:
        base = Path(work)
        if args.models == "real":
            for seed, detector_id in enumerate(all_ids):
                write_bench_detector(base / "edge" / "models", detector_id, default_backbone(), seed=seed + 1)
        port = free_port()
        camera = RtspServer(rtsp_process(base, port, fps=10, width=640, height=480), port)
        camera.start()
        try:
            # Every detector stays loaded (the default cache of 5 would reload models all the time).
            cache = {"INTELLIOPTICS_INFERENCE_CACHE_SIZE": str(len(all_ids))}
            with edge_with_streams(
                base / "edge", config, models, streams_env={"INTELLIOPTICS_LOG_LEVEL": "WARNING"}, edge_env=cache
            ) as edge:
                prober = Prober(edge.stack.gateway_url, edge.stack.token)
                prober.measure(3)  # warm-up: models loaded, connections open
                idle = prober.measure(20)
                streams = {
                    f"cam-{i}": {"url": camera.url("clock"), "detector_ids": ids[i], "fps": args.fps}
                    for i in range(args.streams)
                }
                assert edge.put_config({**config, "streams": streams}).status_code == 200
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    status = edge.streams()
                    if len(status) == args.streams and all(s["frames_submitted"] > 0 for s in status.values()):
                        break
                    time.sleep(0.5)
                first = edge.streams()
                cpu_before, wall_before = cpu_seconds(edge.process.pid), time.monotonic()
                prober.start()
                ages: list[float] = []
                checkpoints = []
                while time.monotonic() - wall_before < args.duration:
                    time.sleep(min(5.0, args.duration))
                    status = edge.streams()
                    ages += [s["last_frame_age_s"] for s in status.values() if s["last_frame_age_s"] is not None]
                    checkpoints.append(max(s["frames_dropped"] for s in status.values()))
                loaded = prober.stop()
                wall = time.monotonic() - wall_before
                cpu = cpu_seconds(edge.process.pid) - cpu_before
                last = edge.streams()

                print(
                    f"\n{args.streams} streams x {args.fps:g} fps x 2 detectors ({args.models} models), {wall:.0f} s, "
                    f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
                )
                print("\n| stream | submitted/s (cap) | within 10 % | dropped | submit errors | frames read/s |")
                print("|---|---|---|---|---|---|")
                for name in sorted(last):
                    rate = (last[name]["frames_submitted"] - first[name]["frames_submitted"]) / wall
                    read = (last[name]["frames_read"] - first[name]["frames_read"]) / wall
                    ok = abs(rate - args.fps) <= 0.1 * args.fps
                    print(
                        f"| {name} | {rate:.2f} ({args.fps:g}) | {'yes' if ok else 'NO'} | {last[name]['frames_dropped']} "
                        f"| {last[name]['submit_errors']} | {read:.1f} |"
                    )
                print(
                    f"\nstream service CPU: {100 * cpu / wall:.1f} % of a core, {100 * cpu / wall / args.streams:.1f} % per stream"
                )
                print(
                    f"frame age when sampled (reader slot → sampler): max {1000 * max(ages):.0f} ms, mean {1000 * statistics.mean(ages):.0f} ms"
                )
                print(f"frames dropped at each 5 s checkpoint (max over streams): {checkpoints}")
                print(
                    f"probe POST /image-queries via nginx: idle p50 {_p(idle, 50):.1f} ms p95 {_p(idle, 95):.1f} ms; "
                    f"under stream load p50 {_p(loaded, 50):.1f} ms p95 {_p(loaded, 95):.1f} ms "
                    f"(ratio p50 {_p(loaded, 50) / _p(idle, 50):.2f}x), probe errors {prober.errors}"
                )

                metrics = httpx.get(f"{edge.stack.inference_url}/metrics", timeout=10).text
                print(
                    "inference: "
                    + ", ".join(
                        f"{name} {metric_total(metrics, name):.0f}"
                        for name in (
                            "intellioptics_inference_multi_calls_total",
                            "intellioptics_inference_multi_backbone_runs_total",
                            "intellioptics_inference_multi_answers_total",
                            "intellioptics_inference_cache_evictions_total",
                        )
                    )
                )

                if args.outage > 0:
                    before = edge.streams()
                    camera.kill()
                    prober.start()
                    time.sleep(args.outage)
                    camera.start()
                    back = time.monotonic()
                    recovered: dict[str, float] = {}
                    while len(recovered) < args.streams and time.monotonic() - back < 60:
                        for name, stream in edge.streams().items():
                            if (
                                name not in recovered
                                and stream["state"] == "connected"
                                and stream["frames_submitted"] > before[name]["frames_submitted"] + 1
                            ):
                                recovered[name] = time.monotonic() - back
                        time.sleep(0.1)
                    during = prober.stop()
                    times = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in sorted(recovered.items()))
                    print(f"\ncamera gone {args.outage:g} s, then back: submitting again after {times}")
                    print(
                        f"probe meanwhile: p50 {_p(during, 50):.1f} ms p95 {_p(during, 95):.1f} ms, errors {prober.errors}"
                    )
        finally:
            camera.process.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
