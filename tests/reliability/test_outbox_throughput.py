"""How fast the outbox drains into a real cloud (issue 11, finding 8: one item at a time
made about 12 escalations/s against 66 queries/s coming in).

First the edge's own sustained rate is measured on this machine, now (16 clients through
nginx for 5 s, as tests/reliability/test_load.py). Then a backlog of escalations with the
same 320x240 images is put in an edge outbox and the real :class:`OutboxSender` delivers
it to a real cloud API process (SQLite, as ``make run``): once one item per request, one
at a time (the old sender), once with the defaults (batches, concurrent). The defaults
must drain at least twice as fast as the edge answers. Figures in docs/reliability.md;
rerun with ``pytest -s tests/reliability/test_outbox_throughput.py`` (``OUTBOX_BENCH_ITEMS``
sets the backlog, default 400).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest

from intellioptics_edge.database import EdgeDatabase
from intellioptics_edge.outbox_sender import OutboxSender, RetryPolicy
from intellioptics_edge.outbox_store import Outbox, OutboxKind
from intellioptics_edge.settings import EdgeSettings
from tests.reliability.helpers import CloudServer, cloud_image_query_ids, cloud_with_device, edge_processes, jpeg
from tests.reliability.load import run_load

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ITEMS = int(os.environ.get("OUTBOX_BENCH_ITEMS", "400"))
DETECTOR = "det_OutboxBench0Brightness000000"[:31]


def _backlog(directory: Path, detector_id: str, items: int) -> Outbox:
    outbox = Outbox(EdgeDatabase(directory / "edge.sqlite3"))
    image = jpeg(128, (320, 240))
    for index in range(items):
        outbox.enqueue(
            kind=OutboxKind.ESCALATION,
            image_query_id=f"iq_bench{directory.name}{index:06d}",
            detector_id=detector_id,
            image=image,
            edge_answer={"label": "YES", "confidence": 0.55},
            metadata={"escalation_reason": "low_confidence", "confidence_threshold": 0.9},
        )
    return outbox


async def _drain(
    outbox: Outbox, server: CloudServer, token: str, batch_size: int, per_request: int, concurrency: int
) -> float:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sender = OutboxSender(
            outbox,
            client,
            token,
            policy=RetryPolicy(),
            keep_finished_s=0,
            batch_size=batch_size,
            items_per_request=per_request,
            concurrency=concurrency,
        )
        started = time.perf_counter()
        while outbox.counts()[OutboxKind.ESCALATION.value]:
            deliveries = await sender.run_once()
            assert all(d.outcome == "delivered" for d in deliveries), [
                d for d in deliveries if d.outcome != "delivered"
            ]
        return time.perf_counter() - started


def _edge_rate(base: Path) -> float:
    """Queries per second the edge answers here and now (confident answers, no cloud)."""
    with edge_processes(base, [DETECTOR]) as edge:
        run_load(edge.gateway_url, edge.token, [DETECTOR], clients=16, duration_s=2)  # warm-up
        result = run_load(edge.gateway_url, edge.token, [DETECTOR], clients=16, duration_s=5)
    assert set(result.statuses()) == {201}, result.statuses()
    return result.throughput


def test_the_outbox_drains_many_times_faster_than_one_item_at_a_time(tmp_path: Path) -> None:
    edge_rate = _edge_rate(tmp_path / "edge")
    print(f"edge sustained rate: {edge_rate:.0f} queries/s (16 clients, 5 s)")
    defaults = EdgeSettings()
    modes = {
        "one at a time (before)": (1, 1, 1),
        "defaults": (defaults.outbox_batch_size, defaults.outbox_items_per_request, defaults.outbox_concurrency),
    }
    rates: dict[str, float] = {}
    with cloud_with_device(tmp_path / "cloud", "outbox-bench") as (server, detector_id, device):
        for index, (mode, (batch_size, per_request, concurrency)) in enumerate(modes.items()):
            outbox = _backlog(tmp_path / f"m{index}", detector_id, ITEMS)
            elapsed = asyncio.run(_drain(outbox, server, device, batch_size, per_request, concurrency))
            rates[mode] = ITEMS / elapsed
            print(f"outbox to a real cloud, {mode} (pass {batch_size}, {per_request} per request, {concurrency} "
                  f"in flight): {ITEMS} escalations in {elapsed:.1f} s = {rates[mode]:.0f}/s")  # fmt: skip
        ids = cloud_image_query_ids(server, detector_id)
    assert len(ids) == len(set(ids)) == len(modes) * ITEMS, "each escalation once"
    before, now = rates["one at a time (before)"], rates["defaults"]
    print(f"outbox drain: {now:.0f}/s with the defaults vs {before:.0f}/s one at a time ({now / before:.1f}x); "
          f"the edge answers {edge_rate:.0f}/s")  # fmt: skip
    assert now >= 3 * before, f"{now:.0f}/s is not 3x the {before:.0f}/s of one item at a time"
