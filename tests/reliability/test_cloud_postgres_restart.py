"""PostgreSQL restarted under load: the cloud API answers 503 JSON while the database is
down and recovers by itself (pool_pre_ping), with no restart of its own."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.reliability.helpers import cloud_server, jpeg
from tests.support.procs import postgres_cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.postgres]


def test_postgres_restart_gives_503_then_recovers(tmp_path: Path) -> None:
    with postgres_cluster(tmp_path / "pg") as cluster:
        url = cluster.create_database("io_restart")
        with cloud_server(tmp_path / "cloud", database_url=url, INTELLIOPTICS_AUTH_MAX_FAILURES="0") as server:
            with server.client() as admin:
                detector = admin.post("/v1/detectors", json={"name": "pg-restart", "query": "up?"}).json()
            samples: list[tuple[float, int, str | None, float]] = []
            stop = threading.Event()

            def client(index: int) -> None:
                # A new connection per request: what is tested is the API's answer while
                # the database is away, not the race of a pooled keep-alive connection
                # that the server closes as the next request is sent (a reset seen once in a full run).
                with server.client(timeout=15) as http:
                    http.headers["connection"] = "close"
                    while not stop.is_set():
                        started = time.monotonic()
                        if index % 2:
                            response = http.get("/v1/detectors")
                        else:
                            response = http.post(
                                "/v1/image-queries",
                                params={"detector_id": detector["id"]},
                                content=jpeg(120),
                                headers={"content-type": "image/jpeg"},
                            )
                        code = response.json().get("code") if response.status_code >= 400 else None
                        samples.append((started, response.status_code, code, time.monotonic() - started))
                        time.sleep(0.05)

            threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
            for thread in threads:
                thread.start()
            time.sleep(2)
            down_at = time.monotonic()
            cluster.stop("fast")
            time.sleep(4)
            up_at = time.monotonic()
            cluster.start()
            recovered_at = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and recovered_at is None:
                with server.client() as http:
                    if http.get("/v1/detectors").status_code == 200:
                        recovered_at = time.monotonic()
                time.sleep(0.2)
            time.sleep(2)
            stop.set()
            for thread in threads:
                thread.join(30)
            assert server.process.poll() is None, "the cloud API process died"
    statuses = Counter(s for _, s, _, _ in samples)
    while_down = [s for s in samples if down_at + 0.5 <= s[0] < up_at]
    assert while_down, "no request while PostgreSQL was down"
    assert {s for _, s, _, _ in while_down} == {503}, Counter(s for _, s, _, _ in while_down)
    assert {c for _, s, c, _ in while_down} == {"database_unavailable"}
    assert 500 not in statuses, statuses
    assert recovered_at is not None, "the cloud API did not recover after PostgreSQL came back"
    after = [s for t, s, _, _ in samples if t > recovered_at + 0.5]
    assert after and set(after) <= {200, 201}, Counter(after)
    slowest = max(d for *_, d in while_down)
    assert slowest < 5.0, f"a request took {slowest:.1f} s while PostgreSQL was down: 503 must come at once"
    print(
        f"postgres restart: {len(while_down)} requests while down, all 503 (slowest {slowest * 1000:.0f} ms); "
        f"recovered {recovered_at - up_at:.1f} s after start; totals {dict(statuses)}"
    )
