"""Latency and throughput of ``POST image-queries`` at several concurrencies.

Used by ``make bench`` (the lead's harness starts the stack and writes
docs/benchmarks.md): the same image is sent through nginx and straight to the edge API,
so the gateway's cost shows as the difference. The client uses ``http.client`` with one
kept-alive connection per worker thread: on a 2-core machine a heavier client would
steal the CPU it is trying to measure.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit


@dataclass(frozen=True)
class BenchResult:
    target: str
    concurrency: int
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    throughput_rps: float
    first_error: str | None = None


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))] if ordered else float("nan")


def measure(
    target: str,
    base_url: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    *,
    concurrency: int,
    requests: int,
    warmup: int = 5,
) -> BenchResult:
    """Send ``requests`` POSTs from ``concurrency`` threads; latency per request, wall-clock throughput."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    remaining = [requests]
    start_gate = threading.Barrier(concurrency + 1)

    def take() -> bool:
        with lock:
            if remaining[0] <= 0:
                return False
            remaining[0] -= 1
            return True

    def post(connection: http.client.HTTPConnection) -> tuple[int, bytes]:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()

    def worker() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=60)
        try:
            for _ in range(max(1, warmup // concurrency)):
                post(connection)
            start_gate.wait()
            while take():
                started = time.perf_counter()
                try:
                    status, content = post(connection)
                except (OSError, http.client.HTTPException) as exc:
                    status, content = 0, repr(exc).encode()
                    connection.close()
                    connection = http.client.HTTPConnection(host, port, timeout=60)
                elapsed = time.perf_counter() - started
                with lock:
                    if 200 <= status < 300:
                        latencies.append(elapsed)
                    else:
                        errors.append(f"HTTP {status}: {content[:200]!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    start_gate.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    return BenchResult(
        target=target,
        concurrency=concurrency,
        requests=len(latencies) + len(errors),
        errors=len(errors),
        p50_ms=round(_percentile(latencies, 0.5) * 1000, 2),
        p99_ms=round(_percentile(latencies, 0.99) * 1000, 2),
        throughput_rps=round(len(latencies) / wall, 1) if wall > 0 else 0.0,
        first_error=errors[0] if errors else None,
    )


def bench_edge(
    *,
    gateway_url: str,
    edge_api_url: str,
    token: str,
    detector_id: str,
    image: bytes,
    concurrencies: Sequence[int] = (1, 4, 16),
    requests_per_level: int = 200,
) -> list[BenchResult]:
    """Through nginx and straight to the edge API, for each concurrency."""
    path = "/device-api/v1/image-queries?" + urlencode({"detector_id": detector_id})
    headers = {"x-api-token": token, "content-type": "image/jpeg"}
    results = []
    for target, url in (("nginx → edge API", gateway_url), ("edge API", edge_api_url)):
        for concurrency in concurrencies:
            results.append(
                measure(target, url, path, image, headers, concurrency=concurrency, requests=requests_per_level)
            )
    return results


def to_markdown(results: Sequence[BenchResult]) -> str:
    lines = [
        "| target | concurrency | requests | errors | p50 ms | p99 ms | throughput req/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.target} | {r.concurrency} | {r.requests} | {r.errors} | {r.p50_ms} | {r.p99_ms} | {r.throughput_rps} |"
        )
    return "\n".join(lines) + "\n"
