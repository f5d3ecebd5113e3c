"""The outbox sender's logic against a fake cloud (httpx.MockTransport): what it sends,
backoff with a cap, which refusals are retried and which park a dead letter (with its
reason), re-send and discard, concurrent delivery in per-query order, the bounded-outbox
policy (audits dropped, escalations never), counters that survive a restart."""

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
from intellioptics_edge.database import EdgeDatabase
from intellioptics_edge.outbox_sender import OutboxSender, RetryPolicy
from intellioptics_edge.outbox_store import Outbox, OutboxEntry, OutboxKind
from intellioptics_edge.reporting import HourlyCounters
from intellioptics_edge.stats import EdgeStats
from intellioptics_edge.store import QueryStore

from .conftest import jpeg

DEVICE_TOKEN = "devicetoken_0123456789abcdefghij"
DETECTOR = "det_" + "S" * 27
ANSWER = {"label": "YES", "confidence": 0.61, "raw_primary_confidence": 0.7, "oodd_in_domain_score": 0.9,
          "primary_model_version": 4, "oodd_model_version": 4,
          "probabilities": {"NO": 0.300004, "YES": 0.699996}}  # fmt: skip


@dataclass
class FakeCloud:
    """Stores image queries by id like the real cloud: a retry of a known id is a 200."""

    status: int | None = None  # force this status for every request
    code: str = "x"  # the error body's code with ``status``
    headers: dict[str, str] = field(default_factory=dict)  # with ``status``
    down: bool = False
    stored: dict[str, dict] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if self.status is not None:
            body = {"detail": f"forced {self.status}", "code": self.code}
            return httpx.Response(self.status, json=body, headers=self.headers)
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


def sent_metadata(cloud: FakeCloud, image_query_id: str) -> dict:
    """The ``metadata`` query parameter the cloud received for a query, decoded."""
    encoded = cloud.stored[image_query_id]["params"]["metadata"]
    return json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))


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
    metadata = sent_metadata(cloud, "iq_one")
    assert metadata["camera"] == "line-3"  # the caller's own metadata passes through
    assert metadata["is_from_edge"] is True and metadata["escalation_reason"] == "low_confidence"
    assert metadata["edge_result"]["label"] == "YES" and metadata["edge_result"]["confidence"] == 0.61
    assert metadata["edge_result"]["edge_id"] == "edge_test"
    # The reviewer's panel: the version that answered and its score per class (4 places).
    assert metadata["edge_result"]["primary_model_version"] == 4
    assert metadata["edge_result"]["probabilities"] == {"NO": 0.3, "YES": 0.7}
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


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (400, "invalid_input", "invalid_request"),
        (410, "gone", "gone"),
        (413, "image_too_large", "image_too_large"),
        (415, "unsupported_media_type", "unsupported_media_type"),
        (422, "validation_error", "invalid_request"),
        (409, "image_query_id_taken", "image_query_id_taken"),
    ],
)
def test_permanent_refusals_become_dead_letters(outbox: Outbox, status: int, code: str, reason: str) -> None:
    enqueue(outbox, "iq_bad")
    enqueue(outbox, "iq_next")
    cloud, clock = FakeCloud(status=status, code=code), Clock()
    sender = make_sender(outbox, cloud, clock)
    deliveries = asyncio.run(sender.run_once())
    assert [d.outcome for d in deliveries] == ["dead", "dead"]
    assert f"HTTP {status}" in deliveries[0].detail
    summary = outbox.summary()
    assert summary.dead == 2 and summary.pending_escalations == 0
    assert summary.dead_letters == {reason: 2}
    assert outbox.dead_letters()[0][0] == "iq_next"
    assert outbox.dead_letters()[0].reason == reason
    cloud.status = None
    clock.now += 10**6
    assert asyncio.run(sender.run_once()) == []  # never retried by itself


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "x"), (403, "x"), (408, "x"), (429, "x"), (500, "x"), (503, "x"), (409, "detector_off"), (404, "x")],
)
def test_transient_refusals_are_retried(outbox: Outbox, status: int, code: str) -> None:
    enqueue(outbox, "iq_later")
    cloud, clock = FakeCloud(status=status, code=code), Clock()
    sender = make_sender(outbox, cloud, clock)
    assert [d.outcome for d in asyncio.run(sender.run_once())] == ["retry"]
    assert outbox.summary().retrying == 1
    cloud.status = None
    clock.now += 1.0
    assert [d.outcome for d in asyncio.run(sender.run_once())] == ["delivered"]
    assert outbox.summary().dead == 0 and outbox.summary().retrying == 0


def test_a_detector_off_for_hours_loses_nothing(outbox: Outbox) -> None:
    """Finding 3 of issue 11: 409 while the detector is OFF parked every item for good."""
    for index in range(10):
        enqueue(outbox, f"iq_off{index}")
    cloud, clock = FakeCloud(status=409, code="detector_off"), Clock()
    sender = make_sender(outbox, cloud, clock, cap=300.0)
    for _ in range(40):  # 40 passes, the clock moved to each next attempt: hours of OFF
        asyncio.run(sender.run_once())
        clock.now = min(_next_attempt(outbox, seq) for seq in _seqs(outbox))
    assert outbox.summary().dead == 0 and outbox.summary().pending_escalations == 10
    cloud.status = None  # turned ON again
    clock.now += 300.0
    assert [d.outcome for d in asyncio.run(sender.run_once())] == ["delivered"] * 10
    assert sorted(cloud.stored) == sorted(f"iq_off{index}" for index in range(10))


def test_a_404_is_retried_within_the_grace_then_parked(outbox: Outbox) -> None:
    enqueue(outbox, "iq_syncing")
    cloud, clock = FakeCloud(status=404, code="not_found"), Clock()
    sender = make_sender(outbox, cloud, clock)
    sender._not_found_grace_s = 100.0
    assert [d.outcome for d in asyncio.run(sender.run_once())] == ["retry"]
    clock.now += 101.0
    deliveries = asyncio.run(sender.run_once())
    assert [d.outcome for d in deliveries] == ["dead"]
    assert outbox.summary().dead_letters == {"detector_not_found": 1}


def test_429_waits_at_least_its_retry_after(outbox: Outbox) -> None:
    enqueue(outbox, "iq_limited")
    cloud, clock = FakeCloud(status=429, code="rate_limited", headers={"retry-after": "42"}), Clock()
    asyncio.run(make_sender(outbox, cloud, clock).run_once())
    assert _next_attempt(outbox, _seqs(outbox)[0]) - clock.now == 42.0  # not the 1 s of the backoff


def test_dead_letters_are_kept_then_resent_or_discarded_with_a_reason(outbox: Outbox) -> None:
    for name in ("iq_d1", "iq_d2", "iq_d3"):
        enqueue(outbox, name)
    cloud, clock = FakeCloud(status=400, code="invalid_input"), Clock()
    sender = make_sender(outbox, cloud, clock)
    asyncio.run(sender.run_once())
    assert len(outbox.dead_letters()) == 3
    outbox.forget_finished(older_than=time.time() + 10**6)  # old dead letters are not forgotten
    letters = {letter.image_query_id: letter for letter in outbox.dead_letters()}
    assert set(letters) == {"iq_d1", "iq_d2", "iq_d3"}
    assert outbox.resend([letters["iq_d1"].seq]) == 1
    assert outbox.discard(letters["iq_d2"].seq, "operator: test image") is True
    assert outbox.discard(letters["iq_d2"].seq, "twice") is False  # no longer a dead letter
    cloud.status = None
    clock.now += 1.0
    deliveries = asyncio.run(sender.run_once())
    assert [(d.image_query_id, d.outcome) for d in deliveries] == [("iq_d1", "delivered")]
    summary = outbox.summary()
    assert summary.dead_letters == {"invalid_request": 1} and summary.resent == 1 and summary.discarded == 1
    assert outbox.resend(reason="invalid_request") == 1
    assert [d.image_query_id for d in asyncio.run(sender.run_once())] == ["iq_d3"]
    assert sorted(cloud.stored) == ["iq_d1", "iq_d3"] and outbox.dead_letters() == []


@dataclass
class SlowCloud:
    """Answers after a pause and records how many requests were in flight at once."""

    order: list[str] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.01)  # a real pause: it is what lets requests overlap
        self.order.append(request.url.params["image_query_id"])
        self.in_flight -= 1
        return httpx.Response(201, json={"id": request.url.params["image_query_id"]})


def test_delivery_is_concurrent_and_keeps_the_order_of_one_query(outbox: Outbox) -> None:
    for index in range(12):
        enqueue(outbox, f"iq_c{index}")
    # Two items about one query (an escalation, then an audit of it): the second waits.
    enqueue(outbox, "iq_c0", OutboxKind.AUDIT, image=b"")
    cloud, clock = SlowCloud(), Clock()
    client = httpx.AsyncClient(base_url="http://cloud.test", transport=httpx.MockTransport(cloud.handle))
    sender = OutboxSender(
        outbox, client, DEVICE_TOKEN, policy=RetryPolicy(), keep_finished_s=0, batch_size=20, concurrency=4, clock=clock
    )
    deliveries = asyncio.run(sender.run_once())
    assert [d.outcome for d in deliveries] == ["delivered"] * 12
    assert cloud.most_in_flight == 4
    assert cloud.order.count("iq_c0") == 1
    assert [(d.image_query_id, d.outcome) for d in asyncio.run(sender.run_once())] == [("iq_c0", "delivered")]
    assert cloud.order[-1] == "iq_c0" and outbox.summary().delivered == 13


@dataclass
class BatchCloud(FakeCloud):
    """FakeCloud with ``POST /v1/image-queries/batch``: each item answered as alone."""

    batches: list[int] = field(default_factory=list)
    refuse: dict[str, tuple[int, str]] = field(default_factory=dict)  # id -> (status, code)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v1/image-queries/batch":
            return super().handle(request)
        self.requests.append(request)
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if self.status is not None:
            return httpx.Response(self.status, json={"detail": f"forced {self.status}", "code": self.code})
        items = json.loads(request.content)["items"]
        self.batches.append(len(items))
        results = []
        for item in items:
            iq_id = item["image_query_id"]
            if iq_id in self.refuse:
                status, code = self.refuse[iq_id]
                results.append({"image_query_id": iq_id, "status": status, "code": code, "detail": "no"})
                continue
            created = iq_id not in self.stored
            self.stored.setdefault(iq_id, {"id": iq_id, "params": item, "bytes": len(base64.b64decode(item["image"]))})
            results.append({"image_query_id": iq_id, "status": 201 if created else 200})
        return httpx.Response(200, json={"results": results})


def _batch_sender(outbox: Outbox, cloud: FakeCloud, clock: Clock) -> OutboxSender:
    client = httpx.AsyncClient(base_url="http://cloud.test", transport=httpx.MockTransport(cloud.handle))
    return OutboxSender(
        outbox, client, DEVICE_TOKEN, policy=RetryPolicy(), keep_finished_s=0, batch_size=100,
        items_per_request=20, concurrency=2, jitter=lambda: 1.0, clock=clock,
    )  # fmt: skip


def test_batches_carry_what_single_requests_carry_and_each_item_gets_its_verdict(outbox: Outbox) -> None:
    for index in range(45):
        enqueue(outbox, f"iq_b{index:02d}")
    cloud, clock = BatchCloud(), Clock()
    cloud.stored["iq_b07"] = {"id": "iq_b07"}  # an earlier attempt reached it: 200, delivered
    cloud.refuse = {"iq_b10": (409, "detector_off"), "iq_b11": (400, "invalid_input")}
    deliveries = asyncio.run(_batch_sender(outbox, cloud, clock).run_once())
    assert sorted(cloud.batches) == [5, 20, 20]
    outcomes = {d.image_query_id: d.outcome for d in deliveries}
    assert outcomes.pop("iq_b10") == "retry" and outcomes.pop("iq_b11") == "dead"
    assert set(outcomes.values()) == {"delivered"} and len(outcomes) == 43
    item = cloud.stored["iq_b00"]["params"]
    assert (
        item["detector_id"] == DETECTOR and item["confidence_threshold"] == "0.9" and item["inspection_id"] == "insp_1"
    )
    assert cloud.stored["iq_b00"]["bytes"] == len(jpeg(200))
    summary = outbox.summary()
    assert summary.delivered == 43 and summary.retrying == 1 and summary.dead_letters == {"invalid_request": 1}


def test_a_cloud_without_the_batch_route_gets_one_item_per_request(outbox: Outbox) -> None:
    for index in range(3):
        enqueue(outbox, f"iq_old{index}")
    cloud, clock = FakeCloud(), Clock()  # answers 404/405 to the batch path: an older cloud
    original = cloud.handle

    def old_cloud(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/batch"):
            return httpx.Response(405, json={"detail": "Method Not Allowed", "code": "method_not_allowed"})
        return original(request)

    cloud.handle = old_cloud  # type: ignore[method-assign]
    deliveries = asyncio.run(_batch_sender(outbox, cloud, clock).run_once())
    assert [d.outcome for d in deliveries] == ["delivered"] * 3
    assert sorted(cloud.stored) == ["iq_old0", "iq_old1", "iq_old2"]


def test_a_batch_to_an_unreachable_cloud_is_retried_with_the_backoff(outbox: Outbox) -> None:
    for index in range(30):
        enqueue(outbox, f"iq_down{index:02d}")
    cloud, clock = BatchCloud(down=True), Clock()
    deliveries = asyncio.run(_batch_sender(outbox, cloud, clock).run_once())
    assert {d.outcome for d in deliveries} == {"retry"} and len(deliveries) <= 30
    cloud.down = False
    clock.now += 1.0
    asyncio.run(_batch_sender(outbox, cloud, clock).run_once())
    assert outbox.summary().pending_escalations == 0 and len(cloud.stored) == 30


def _seqs(outbox: Outbox) -> list[int]:
    database = outbox._db
    with database.lock:
        return [row[0] for row in database.connection.execute("SELECT seq FROM outbox ORDER BY seq")]


def test_a_missing_image_is_a_dead_letter(outbox: Outbox, tmp_path: Path) -> None:
    enqueue(outbox, "iq_gone")
    (tmp_path / "images" / "iq_gone").unlink()
    deliveries = asyncio.run(make_sender(outbox, FakeCloud(), Clock()).run_once())
    assert deliveries[0].outcome == "dead" and "missing" in deliveries[0].detail


def test_full_outbox_drops_oldest_audits_and_never_an_escalation(outbox: Outbox) -> None:
    for index in range(3):
        enqueue(outbox, f"iq_esc{index}")
        enqueue(outbox, f"iq_aud{index}", OutboxKind.AUDIT)
    clock = Clock()
    # Room for 4: the two oldest audits go, every escalation stays.
    dropped = outbox.enforce_limits(max_items=4, max_bytes=10**9)
    assert dropped == {"escalation": 0, "audit": 2}
    assert outbox.full is False  # an audit is left to make room
    assert {i.image_query_id for i in outbox.pending(now=clock.now + 10**6)} == {
        "iq_esc0", "iq_esc1", "iq_esc2", "iq_aud2"
    }  # fmt: skip
    # Room for 2: the last audit goes; the escalations stay and the outbox is full.
    housekeeper = Housekeeper(outbox, EdgeStats(), HourlyCounters(outbox._db), max_items=2, max_bytes=10**9)
    assert asyncio.run(housekeeper.run_once()) == {"escalation": 0, "audit": 1}
    summary = outbox.summary()
    assert (summary.dropped_audits, summary.dropped_escalations) == (3, 0)
    assert {i.image_query_id for i in outbox.pending(now=clock.now + 10**6)} == {"iq_esc0", "iq_esc1", "iq_esc2"}
    assert outbox.full is True
    outbox.enforce_limits(max_items=10, max_bytes=10**9)
    assert outbox.full is False  # cleared once there is room


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
    metadata = sent_metadata(cloud, "iq_big_meta")
    assert "notes" not in metadata and metadata["caller_metadata_omitted"] is True
    assert metadata["edge_result"]["label"] == "YES"  # the edge's report always arrives


def test_per_class_scores_make_room_for_the_callers_metadata(outbox: Outbox) -> None:
    """Many classes' scores and the caller's metadata do not fit the cloud's 1 KiB: the
    scores (a courtesy to reviewers) are left out, the caller's keys arrive."""
    many = {**ANSWER, "probabilities": {f"class_{n:02d}": 0.02 for n in range(40)}}
    outbox.enqueue(
        kind=OutboxKind.ESCALATION,
        image_query_id="iq_many_classes",
        detector_id=DETECTOR,
        image=jpeg(200),
        edge_answer=many,
        metadata={"escalation_reason": "low_confidence", "metadata": {"notes": "x" * 300}},
    )
    cloud = FakeCloud()
    asyncio.run(make_sender(outbox, cloud, Clock()).run_once())
    metadata = sent_metadata(cloud, "iq_many_classes")
    assert metadata["notes"] == "x" * 300 and "caller_metadata_omitted" not in metadata
    assert "probabilities" not in metadata["edge_result"] and metadata["edge_result"]["label"] == "YES"


def _escalate_with_depth(store: QueryStore, name: str, depth: bytes) -> None:
    entry = OutboxEntry(OutboxKind.ESCALATION, ANSWER, {"escalation_reason": "low_confidence"})
    assert store.save(
        image_query_id=name, detector_id=DETECTOR, done_processing=False, body="{}", image=jpeg(90),
        content_type="image/jpeg", outbox=[entry], depth=depth,
    )  # fmt: skip


def test_a_depth_map_travels_with_its_image_and_a_lost_one_does_not_hold_the_image(tmp_path: Path) -> None:
    database = EdgeDatabase(tmp_path / "edge.sqlite3")
    outbox, store = Outbox(database), QueryStore(database, max_queries=100, max_age_s=3600)
    npy_bytes = b"\x93NUMPY" + b"\x00" * 40
    _escalate_with_depth(store, "iq_depth", npy_bytes)
    _escalate_with_depth(store, "iq_lost", b"\x89PNG depth")
    (database.images_dir / "iq_lost-depth").unlink()  # a disk fault took the depth file
    cloud, clock = FakeCloud(), Clock()
    deliveries = asyncio.run(make_sender(outbox, cloud, clock).run_once())
    assert sorted(d.outcome for d in deliveries) == ["delivered", "delivered"]
    sent = {request.url.params["image_query_id"]: request for request in cloud.requests}
    multipart = sent["iq_depth"]
    assert multipart.headers["content-type"].startswith("multipart/form-data")
    assert b'name="depth"' in multipart.content and npy_bytes in multipart.content
    assert b"application/x-npy" in multipart.content and b'name="image"' in multipart.content
    assert sent["iq_lost"].headers["content-type"] == "image/jpeg"  # the image alone, not a dead letter

    batch = BatchCloud()
    _escalate_with_depth(store, "iq_batch_a", npy_bytes)
    _escalate_with_depth(store, "iq_batch_b", b"\x89PNG depth")
    assert [d.outcome for d in asyncio.run(_batch_sender(outbox, batch, clock).run_once())] == ["delivered"] * 2
    items = {item["image_query_id"]: item for item in json.loads(batch.requests[0].content)["items"]}
    assert base64.b64decode(items["iq_batch_a"]["depth"]) == npy_bytes
    assert base64.b64decode(items["iq_batch_b"]["depth"]) == b"\x89PNG depth"
