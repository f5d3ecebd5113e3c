"""Load through nginx: 16 concurrent clients over 5 detectors (10 s here, 60 s in make soak).
No errors, latency percentiles and throughput, resident memory of each service flat."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability.helpers import edge_processes, rss_kib
from tests.reliability.load import run_load

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DETECTORS = [f"det_Load{i}Brightness000000000000" for i in range(5)]
CLIENTS = 16


def load_case(base: Path, duration_s: float) -> dict:
    with edge_processes(base, DETECTORS) as edge:
        services = {"inference": edge.inference.pid, "edge-api": edge.edge_api.pid, "nginx": edge.gateway.pid}
        run_load(edge.gateway_url, edge.token, DETECTORS, clients=CLIENTS, duration_s=2)  # warm-up
        before = {name: rss_kib(pid) for name, pid in services.items()}
        result = run_load(edge.gateway_url, edge.token, DETECTORS, clients=CLIENTS, duration_s=duration_s)
        after = {name: rss_kib(pid) for name, pid in services.items()}
    report = {
        "requests": len(result.samples),
        "statuses": dict(result.statuses()),
        "p50_ms": result.percentile(0.50) * 1000,
        "p99_ms": result.percentile(0.99) * 1000,
        "throughput_rps": result.throughput,
        "rss_before_mib": {k: v / 1024 for k, v in before.items()},
        "rss_after_mib": {k: v / 1024 for k, v in after.items()},
    }
    print(f"load {duration_s:.0f} s x {CLIENTS} clients: {report}")
    assert set(result.statuses()) == {201}, result.statuses()
    for name in services:
        # Flat: under 25 % and 40 MiB growth once warm (allocator noise on a 2-core box).
        growth = after[name] - before[name]
        assert growth < max(before[name] * 0.25, 40 * 1024), f"{name} RSS grew {growth / 1024:.1f} MiB"
    return report


def test_short_load_through_nginx(tmp_path: Path) -> None:
    duration = float(os.environ.get("INTELLIOPTICS_LOAD_SECONDS", "10"))
    report = load_case(tmp_path, duration)
    assert report["requests"] > 100
