"""The outbox sender's logic against a fake cloud (httpx.MockTransport): what it sends,
backoff with a cap, dead letters, the bounded-outbox policy, counters that survive a restart."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from intellioptics_edge.background import Housekeeper
from intellioptics_edge.outbox_sender import OutboxSender, RetryPolicy
from intellioptics_edge.reporting import HourlyCounters
from intellioptics_edge.stats import EdgeStats
from intellioptics_edge.store import EdgeDatabase, Outbox, OutboxKind

from .conftest import jpeg

DEVICE_TOKEN = "devicetoken_0123456789abcdefghij"
DETECTOR = "det_" + "S" * 27
ANSWER = {"label": "YES", "confidence": 0.61, "raw_primary_confidence": 0.7, "oodd_in_domain_score": 0.9,
          "primary_model_version": 4, "oodd_model_version": 4}  # fmt: skip


@dataclass
class FakeCloud:
    """Stores image queries by id like the real cloud: a retry of a known id is a 200."""

    status: int | None = None  # force this status for every request
    down: bool = False
    stored: dict[str, dict] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if self.status is not None:
            return httpx.Response(self.status, json={"detail": f"forced {self.status}", "code": "x"})
        assert request.headers["x-api-token"] == DEVICE_TOKEN
        iq_id = request.url.params["image_query_id"]
        if iq_id in self.stored:
            return httpx.Response(200, json=self.stored[iq_id])
        self.stored[iq_id] = {"id": iq_id, "params": dict(request.url.params), "bytes": len(request.content)}
        return httpx.Response(201, json=self.stored[iq_id])


class Clock:
    def __init__(self) -> None:
        self.now = time.time() + 1.0  # after every enqueue of the test

    def __call__(self) -> float:
        return self.now


def make_sender(outbox: Outbox, cloud: FakeCloud, clock: Clock, *, cap: float = 60.0) -> OutboxSender:
    client = httpx.AsyncClient(base_url="http://cloud.test", transport=httpx.MockTransport(cloud.handle))
    return OutboxSender(
        outbox,
        client,
        DEVICE_TOKEN,
        policy=RetryPolicy(base_s=1.0, cap_s=cap),
        keep_finished_s=0,
        batch_size=10,
        edge_id=lambda: "edge_test",
        jitter=lambda: 1.0,  # deterministic: the full nominal delay
        clock=clock,
    )


def enqueue(outbox: Outbox, name: str, kind: OutboxKind = OutboxKind.ESCALATION, image: bytes | None = None) -> None:
    outbox.enqueue(
        kind=kind,
        image_query_id=name,
        detector_id=DETECTOR,
        image=image if image is not None else jpeg(200),
        edge_answer=ANSWER,
        metadata={
            "escalation_reason": "low_confidence" if kind is OutboxKind.ESCALATION else "audit",
            "metadata": {"camera": "line-3"},
            "inspection_id": "insp_1",
            "confidence_threshold": 0.9,
            "patience_time": 30.0,
            "human_review": None,
            "want_async": False,
        },
    )


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(EdgeDatabase(tmp_path / "edge.sqlite3"))


def test_delivers_with_the_edge_answer_in_the_metadata(outbox: Outbox) -> None:
    enqueue(outbox, "iq_one")
    cloud, clock = FakeCloud(), Clock()
    deliveries = asyncio.run(make_sender(outbox, cloud, clock).run_once())
    assert [d.outcome for d in deliveries] == ["delivered"]
    params = cloud.stored["iq_one"]["params"]
    assert params["detector_id"] == DETECTOR and params["image_query_id"] == "iq_one"
    assert params["confidence_threshold"] == "0.9" and params["inspection_id"] == "insp_1"
    assert "human_review" not in params  # the caller did not ask: the cloud's default applies
    metadata = json.loads(base64.urlsafe_b64decode(params["metadata"] + "=" * (-len(params["metadata"]) % 4)))
    assert metadata["camera"] == "line-3"  # the caller's own metadata passes through
    assert metadata["is_from_edge"] is True and metadata["escalation_reason"] == "low_confidence"
    assert metadata["edge_result"]["label"] == "YES" and metadata["edge_result"]["confidence"] == 0.61
    assert metadata["edge_result"]["edge_id"] == "edge_test"
    assert cloud.stored["iq_one"]["bytes"] == len(jpeg(200))
    assert outbox.pending(now=clock.now + 10**6) == []
    assert outbox.summary().delivered == 1


def test_cloud_down_backs_off_exponentially_up_to_the_cap(outbox: Outbox) -> None:
    enqueue(outbox, "iq_down")
    cloud, clock = FakeCloud(down=True), Clock()
    sender = make_sender(outbox, cloud, clock, cap=8.0)
    delays = []
    for _ in range(7):
        due = outbox.pending(now=clock.now + 10**6)[0]
        clock.now = max(clock.now, _next_attempt(outbox, due.seq))
        asyncio.run(sender.run_once())
        delays.append(_next_attempt(outbox, due.seq) - clock.now)
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    # Not due yet: nothing is sent before the backoff has passed.
    before = len(cloud.requests)
    asyncio.run(sender.run_once())
    assert len(cloud.requests) == before
    assert outbox.summary().retries == 7
    cloud.down = False
    clock.now += 8.0
    assert [d.outcome for d in asyncio.run(sender.run_once())] == ["delivered"]


def test_jitter_stays_between_half_and_all_of_the_nominal_delay() -> None:
    policy = RetryPolicy(base_s=2.0, cap_s=100.0)
    assert policy.delay(3, 0.0) == 8.0 and policy.delay(3, 1.0) == 16.0
    assert policy.delay(30, 0.5) == 75.0  # capped at 100, then jittered
    assert policy.delay(10_000, 1.0) == 100.0  # no overflow however long the outage


def test_a_retry_after_a_lost_answer_does_not_duplicate(outbox: Outbox) -> None:
    """The cloud stored the query but the edge never saw the answer (crash, timeout)."""
    enqueue(outbox, "iq_twice")
    cloud, clock = FakeCloud(), Clock()
    cloud.stored["iq_twice"] = {"id": "iq_twice"}  # as if a first attempt had reached it
    deliveries = asyncio.run(make_sender(outbox, cloud, clock).run_once())
    assert [d.outcome for d in deliveries] == ["delivered"]
    assert list(cloud.stored) == ["iq_twice"]


@pytest.mark.parametrize("status", [400, 404, 409, 413, 415, 422])
def test_permanent_refusals_become_dead_letters(outbox: Outbox, status: int) -> None:
    enqueue(outbox, "iq_bad")
    enqueue(outbox, "iq_next")
    cloud, clock = FakeCloud(status=status), Clock()
    sender = make_sender(outbox, cloud, clock)
    deliveries = asyncio.run(sender.run_once())
    assert [d.outcome for d in deliveries] == ["dead", "dead"]
    assert f"HTTP {status}" in deliveries[0].detail
    summary = outbox.summary()
    assert summary.dead == 2 and summary.pending_escalations == 0
    assert outbox.dead_letters()[0][0] == "iq_next"
    cloud.status = None
    clock.now += 10**6
    assert asyncio.run(sender.run_once()) == []  # never retried


@pytest.mark.parametrize("status", [401, 403, 429, 500, 503])
def test_transient_refusals_are_retried(outbox: Outbox, status: int) -> None:
    enqueue(outbox, "iq_later")
    cloud, clock = FakeCloud(status=status), Clock()
    sender = make_sender(outbox, cloud, clock)
    assert [d.outcome for d in asyncio.run(sender.run_once())] == ["retry"]
    cloud.status = None
    clock.now += 1.0
    assert [d.outcome for d in asyncio.run(sender.run_once())] == ["delivered"]
    assert outbox.summary().dead == 0


def test_a_missing_image_is_a_dead_letter(outbox: Outbox, tmp_path: Path) -> None:
    enqueue(outbox, "iq_gone")
    (tmp_path / "images" / "iq_gone").unlink()
    deliveries = asyncio.run(make_sender(outbox, FakeCloud(), Clock()).run_once())
    assert deliveries[0].outcome == "dead" and "missing" in deliveries[0].detail


def test_full_outbox_drops_oldest_audits_first_then_escalations_with_a_count(outbox: Outbox) -> None:
    for index in range(3):
        enqueue(outbox, f"iq_esc{index}")
        enqueue(outbox, f"iq_aud{index}", OutboxKind.AUDIT)
    clock = Clock()
    # Room for 4: the two oldest audits go, every escalation stays.
    dropped = outbox.enforce_limits(max_items=4, max_bytes=10**9)
    assert dropped == {"escalation": 0, "audit": 2}
    assert {i.image_query_id for i in outbox.pending(now=clock.now + 10**6)} == {
        "iq_esc0", "iq_esc1", "iq_esc2", "iq_aud2"
    }  # fmt: skip
    # Room for 2: the last audit goes, then the oldest escalation, counted apart.
    housekeeper = Housekeeper(outbox, EdgeStats(), HourlyCounters(outbox._db), max_items=2, max_bytes=10**9)
    assert asyncio.run(housekeeper.run_once()) == {"escalation": 1, "audit": 1}
    summary = outbox.summary()
    assert (summary.dropped_audits, summary.dropped_escalations) == (3, 1)
    assert {i.image_query_id for i in outbox.pending(now=clock.now + 10**6)} == {"iq_esc1", "iq_esc2"}


def test_the_byte_limit_counts_image_sizes(outbox: Outbox) -> None:
    for index in range(4):
        enqueue(outbox, f"iq_big{index}", OutboxKind.AUDIT, image=b"\xff" * 1000)
    assert outbox.summary().pending_bytes == 4000
    outbox.enforce_limits(max_items=100, max_bytes=2500)
    assert outbox.summary().pending_audits == 2


def test_counters_and_pending_items_survive_a_restart(tmp_path: Path) -> None:
    outbox = Outbox(EdgeDatabase(tmp_path / "edge.sqlite3"))
    enqueue(outbox, "iq_a")
    enqueue(outbox, "iq_b")
    cloud, clock = FakeCloud(), Clock()
    sender = make_sender(outbox, cloud, clock)
    sender._batch_size = 1
    asyncio.run(sender.run_once())
    reopened = Outbox(EdgeDatabase(tmp_path / "edge.sqlite3"))
    assert reopened.summary().delivered == 1
    assert [i.image_query_id for i in reopened.pending(now=clock.now)] == ["iq_b"]
    asyncio.run(make_sender(reopened, cloud, clock).run_once())
    assert sorted(cloud.stored) == ["iq_a", "iq_b"] and reopened.summary().delivered == 2


def _next_attempt(outbox: Outbox, seq: int) -> float:
    database = outbox._db
    with database.lock:
        return database.connection.execute("SELECT next_attempt_at FROM outbox WHERE seq = ?", (seq,)).fetchone()[0]


def test_caller_metadata_that_would_pass_the_cloud_limit_is_left_out(outbox: Outbox) -> None:
    outbox.enqueue(
        kind=OutboxKind.ESCALATION,
        image_query_id="iq_big_meta",
        detector_id=DETECTOR,
        image=jpeg(200),
        edge_answer=ANSWER,
        metadata={"escalation_reason": "low_confidence", "metadata": {"notes": "x" * 1000}},
    )
    cloud = FakeCloud()
    asyncio.run(make_sender(outbox, cloud, Clock()).run_once())
    encoded = cloud.stored["iq_big_meta"]["params"]["metadata"]
    metadata = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    assert "notes" not in metadata and metadata["caller_metadata_omitted"] is True
    assert metadata["edge_result"]["label"] == "YES"  # the edge's report always arrives
