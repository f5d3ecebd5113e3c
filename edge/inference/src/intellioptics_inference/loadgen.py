"""Load generation shared by the benchmarks: threads of keep-alive HTTP clients (or any
callable) for a fixed time, and a service process on a free port.

The edge API and gateway benchmarks reuse :func:`http_load` so every layer is measured
the same way.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class LoadResult:
    """Latency percentiles (ms) and throughput (requests/s) of one measured run."""

    name: str
    concurrency: int
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float
    error_samples: tuple[str, ...] = ()


def summarize(name: str, concurrency: int, latencies: list[float], errors: list[str], elapsed: float) -> LoadResult:
    ordered = sorted(latencies) or [float("nan")]
    return LoadResult(
        name=name,
        concurrency=concurrency,
        requests=len(latencies),
        errors=len(errors),
        p50_ms=1000 * ordered[len(ordered) // 2],
        p99_ms=1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        mean_ms=1000 * statistics.fmean(ordered),
        throughput=len(latencies) / elapsed if elapsed > 0 else 0.0,
        error_samples=tuple(errors[:3]),
    )


@dataclass
class Samples:
    """Raw measurements, mergeable across slices of one interleaved run."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    def add(self, other: Samples) -> None:
        self.latencies += other.latencies
        self.errors += other.errors
        self.elapsed += other.elapsed

    def summary(self, name: str, concurrency: int) -> LoadResult:
        return summarize(name, concurrency, self.latencies, self.errors, self.elapsed)


def collect(concurrency: int, duration_s: float, call: Callable[[], str | None]) -> Samples:
    """``concurrency`` threads call ``call`` until the time is up; ``call`` returns an
    error text or None. Each thread does a short warm-up first."""
    samples = Samples()
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)
    window = {"end": float("inf")}

    def worker() -> None:
        for _ in range(2):
            call()
        barrier.wait()
        mine: list[float] = []
        mine_errors: list[str] = []
        while time.perf_counter() < window["end"]:
            start = time.perf_counter()
            error = call()
            if error is None:
                mine.append(time.perf_counter() - start)
            else:
                mine_errors.append(error)
        with lock:
            samples.latencies.extend(mine)
            samples.errors.extend(mine_errors)
        # Per-thread resources (a client's keep-alive connection) end with the thread.
        getattr(call, "close_thread", lambda: None)()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    window["end"] = start + duration_s
    for thread in threads:
        thread.join()
    samples.elapsed = time.perf_counter() - start
    return samples


def run_concurrently(name: str, concurrency: int, duration_s: float, call: Callable[[], str | None]) -> LoadResult:
    return collect(concurrency, duration_s, call).summary(name, concurrency)


def interleave(
    runs: dict[tuple[str, int], Callable[[], str | None]], rounds: int, slice_s: float
) -> dict[tuple[str, int], LoadResult]:
    """Measure several (name, concurrency) runs in alternating short slices, so that
    background load on a shared machine falls on all of them alike and their ratios
    stay meaningful."""
    merged = {key: Samples() for key in runs}
    for _ in range(rounds):
        for (name, concurrency), call in runs.items():
            merged[(name, concurrency)].add(collect(concurrency, slice_s, call))
    return {key: samples.summary(*key) for key, samples in merged.items()}


class Poster:
    """One keep-alive connection per thread: the lightest client the stdlib has, so the
    load generator takes as little as possible of the CPU it shares with the server."""

    def __init__(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.body, self.headers = body, headers
        self.local = threading.local()

    def close_thread(self) -> None:
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            conn.close()
            self.local.conn = None

    def __call__(self) -> str | None:
        reused = getattr(self.local, "conn", None) is not None
        error = self._post()
        if error is not None and reused and error.startswith(_STALE):
            # The server closed an idle keep-alive connection (uvicorn does after its
            # keep-alive timeout); like any HTTP client, reconnect once and resend.
            error = self._post()
        return error

    def _post(self) -> str | None:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.request("POST", self.path, body=self.body, headers=self.headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self.local.conn = None
            return repr(exc)
        return None if response.status == 200 else f"HTTP {response.status}: {data[:200]!r}"


_STALE = ("BrokenPipeError", "ConnectionResetError", "RemoteDisconnected")


def http_load(
    name: str, url: str, body: bytes, concurrency: int, duration_s: float, headers: dict[str, str] | None = None
) -> LoadResult:
    """POST ``body`` to ``url`` from ``concurrency`` keep-alive clients for ``duration_s``."""
    poster = Poster(url, body, {"content-type": "image/jpeg", **(headers or {})})
    return run_concurrently(name, concurrency, duration_s, poster)


# --- the service process ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(base: str, path: str) -> tuple[int, object]:
    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


@contextlib.contextmanager
def service_process(models_dir: Path, log_path: Path, **env: str) -> Iterator[str]:
    """Run ``python -m intellioptics_inference`` on a free port until the block ends."""
    port = free_port()
    environment = dict(os.environ)
    environment.update({"INTELLIOPTICS_MODELS_DIR": str(models_dir), "INTELLIOPTICS_INFERENCE_PORT": str(port), **env})
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "intellioptics_inference"], env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the inference service exited; see {log_path}")
            with contextlib.suppress(OSError):
                if get_json(base, "/health/ready")[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the inference service did not start; see {log_path}")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
