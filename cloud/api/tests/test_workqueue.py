"""Work queues: the database queue on SQLite and PostgreSQL, and the Azure Service Bus
adapter. No Service Bus emulator runs here, so the adapter is tested against a FAKE of
the ``ServiceBusClient`` API (sender/receiver context managers, peek-lock, complete/abandon)."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import pytest
from sqlalchemy.orm import Session

from intellioptics_cloud.db import make_engine, make_session_factory
from intellioptics_cloud.workqueue import DatabaseWorkQueue, ServiceBusWorkQueue


@pytest.fixture
def db_queue(database_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    yield DatabaseWorkQueue(sessions), sessions
    engine.dispose()


def _send(queue, sessions, topic: str, body: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    with sessions() as session:
        queue.send(topic, body, session)
        session.commit()


def test_database_queue_completes_abandons_and_relocks(db_queue) -> None:
    queue, sessions = db_queue
    _send(queue, sessions, "t", {"n": 1})
    _send(queue, sessions, "t", {"n": 2})
    with queue.receive("other", lock_s=30) as nothing:
        assert nothing is None
    with queue.receive("t", lock_s=30) as first:
        assert first is not None and first.body == {"n": 1} and first.attempts == 1
        with queue.receive("t", lock_s=30) as second:  # the first is locked: the next comes
            assert second is not None and second.body == {"n": 2}
    with queue.receive("t", lock_s=30) as empty:
        assert empty is None
    _send(queue, sessions, "t", {"n": 3})
    with pytest.raises(RuntimeError), queue.receive("t", lock_s=30) as failing:
        assert failing is not None
        raise RuntimeError("consumer crashed")
    with queue.receive("t", lock_s=30) as again:  # abandoned: visible again at once
        assert again is not None and again.body == {"n": 3} and again.attempts == 2


def test_database_queue_lock_expires_for_a_dead_consumer(db_queue) -> None:
    queue, sessions = db_queue
    _send(queue, sessions, "t", {"n": 1})
    taken = queue._take("t", lock_s=0.0)  # a consumer that took it and died
    assert taken is not None
    with queue.receive("t", lock_s=30) as retried:
        assert retried is not None and retried.id == taken.id and retried.attempts == 2


def test_database_queue_hands_each_message_to_one_consumer(db_queue) -> None:
    queue, sessions = db_queue
    for n in range(20):
        _send(queue, sessions, "t", {"n": n})
    seen: list[int] = []
    lock = threading.Lock()

    def consume() -> None:
        while True:
            with queue.receive("t", lock_s=30) as message:
                if message is None:
                    return
                with lock:
                    seen.append(message.body["n"])

    threads = [threading.Thread(target=consume) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == list(range(20))


def test_database_send_rolls_back_with_the_transaction(db_queue) -> None:
    queue, sessions = db_queue
    with sessions() as session:
        queue.send("t", {"n": 1}, session)
        session.rollback()
    with queue.receive("t", lock_s=30) as message:
        assert message is None


# --- Service Bus (fake client) ------------------------------------------------------


class FakeMessage:
    def __init__(self, body: str, message_id: str) -> None:
        self.body_text = body
        self.message_id = message_id
        self.delivery_count = 0

    def __str__(self) -> str:
        return self.body_text


class FakeServiceBus:
    """In-memory stand-in for azure.servicebus.ServiceBusClient (peek-lock semantics)."""

    def __init__(self) -> None:
        self.queues: dict[str, deque[FakeMessage]] = {}
        self.completed: list[str] = []

    def get_queue_sender(self, queue_name: str):  # type: ignore[no-untyped-def]
        bus = self

        class Sender:
            def __enter__(self):  # type: ignore[no-untyped-def]
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def send_messages(self, message: FakeMessage) -> None:
                bus.queues.setdefault(queue_name, deque()).append(message)

        return Sender()

    def get_queue_receiver(self, queue_name: str, max_wait_time: float):  # type: ignore[no-untyped-def]
        bus = self

        class Receiver:
            def __enter__(self):  # type: ignore[no-untyped-def]
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def receive_messages(self, max_message_count: int, max_wait_time: float) -> list[FakeMessage]:
                queue = bus.queues.get(queue_name)
                if not queue:
                    return []
                message = queue.popleft()
                return [message]

            def complete_message(self, message: FakeMessage) -> None:
                bus.completed.append(message.message_id)

            def abandon_message(self, message: FakeMessage) -> None:
                message.delivery_count += 1
                bus.queues[queue_name].appendleft(message)

        return Receiver()


def test_service_bus_sends_only_after_commit_and_completes_or_abandons(tmp_path) -> None:
    bus = FakeServiceBus()
    queue = ServiceBusWorkQueue(bus, message_factory=lambda body, message_id: FakeMessage(body, message_id))
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with Session(engine) as session:
        queue.send("training-1", {"job_id": "tj_rolledback"}, session)
        session.rollback()
        queue.send("training-1", {"job_id": "tj_1"}, session)
        assert "training-1" not in bus.queues  # nothing sent before the commit
        session.commit()
        session.commit()  # a second commit sends nothing twice
    assert [str(m) for m in bus.queues["training-1"]] == ['{"job_id": "tj_1"}']
    with pytest.raises(RuntimeError), queue.receive("training-1", lock_s=30) as message:
        assert message is not None and message.body == {"job_id": "tj_1"} and message.attempts == 1
        raise RuntimeError("worker failed")
    with queue.receive("training-1", lock_s=30) as message:
        assert message is not None and message.attempts == 2
    assert len(bus.completed) == 1
    with queue.receive("training-1", lock_s=30) as message:
        assert message is None
    engine.dispose()


def test_training_jobs_flow_through_service_bus(admin, client) -> None:
    """The API's training claim on the Service Bus adapter (again the FAKE client)."""
    import dataclasses

    bus = FakeServiceBus()
    queue = ServiceBusWorkQueue(bus, message_factory=lambda body, message_id: FakeMessage(body, message_id))
    client.app.state.resources = dataclasses.replace(client.app.state.resources, queue=queue)
    detector = admin.create_detector()
    job = admin.post(f"/v1/detectors/{detector['id']}/training-jobs", json={}).json()
    account_id = admin.get("/v1/me").json()["account_id"]
    assert [str(m) for m in bus.queues[f"training-{account_id}"]] == [json_body(job["id"])]
    worker = admin.new_token("worker")
    claimed = worker.post("/v1/training-jobs/claim")
    assert claimed.status_code == 200 and claimed.json()["id"] == job["id"]
    assert worker.post("/v1/training-jobs/claim").status_code == 204
    assert len(bus.completed) == 1


def json_body(job_id: str) -> str:
    return '{"job_id": "' + job_id + '"}'
