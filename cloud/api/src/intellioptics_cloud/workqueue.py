"""Work queue for background work (training requests): a small interface, two backends.

``receive`` is a context manager: the message is locked (invisible to other consumers)
while the block runs, completed when it exits cleanly and abandoned (visible again) when
it raises. A consumer that dies without either loses its lock after ``lock_s``.

* :class:`DatabaseWorkQueue` (default) keeps messages in ``queue_messages``. A message
  is taken with ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL plus a compare-and-set
  on ``available_at`` (the only guard on SQLite), so two consumers never get the same one.
  ``send`` joins the caller's session, so the message commits with the row it is about.
* :class:`ServiceBusWorkQueue` uses Azure Service Bus queues (peek-lock). The lock
  duration is the queue's own setting there. ``send`` runs after the caller's commit.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import delete, event, select, update
from sqlalchemy.orm import Session, sessionmaker

from intellioptics_cloud.db import rows_changed
from intellioptics_cloud.models import QueueMessageRow, utcnow


@dataclass(frozen=True)
class QueueMessage:
    id: str
    topic: str
    body: dict[str, Any]
    attempts: int


class WorkQueue(Protocol):
    def send(self, topic: str, body: dict[str, Any], session: Session) -> None: ...

    def receive(self, topic: str, lock_s: float) -> Any:
        """Context manager yielding a :class:`QueueMessage` or None when the topic is empty."""


class DatabaseWorkQueue:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._sessions = session_factory

    def send(self, topic: str, body: dict[str, Any], session: Session) -> None:
        session.add(QueueMessageRow(topic=topic, body=body, available_at=utcnow(), attempts=0))

    def _take(self, topic: str, lock_s: float) -> QueueMessage | None:
        with self._sessions() as session:
            for _ in range(10):
                now = utcnow()
                row = session.scalars(
                    select(QueueMessageRow)
                    .where(QueueMessageRow.topic == topic, QueueMessageRow.available_at <= now)
                    .order_by(QueueMessageRow.id)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                ).first()
                if row is None:
                    session.rollback()
                    return None
                taken = rows_changed(
                    session,
                    update(QueueMessageRow)
                    .where(QueueMessageRow.id == row.id, QueueMessageRow.available_at == row.available_at)
                    .values(available_at=now + timedelta(seconds=lock_s), attempts=QueueMessageRow.attempts + 1)
                    .execution_options(synchronize_session=False),
                )
                session.commit()
                if taken == 1:
                    return QueueMessage(str(row.id), topic, dict(row.body), row.attempts + 1)
            return None

    @contextmanager
    def receive(self, topic: str, lock_s: float) -> Iterator[QueueMessage | None]:
        message = self._take(topic, lock_s)
        if message is None:
            yield None
            return
        try:
            yield message
        except BaseException:
            with self._sessions() as session:
                session.execute(
                    update(QueueMessageRow).where(QueueMessageRow.id == int(message.id)).values(available_at=utcnow())
                )
                session.commit()
            raise
        with self._sessions() as session:
            session.execute(delete(QueueMessageRow).where(QueueMessageRow.id == int(message.id)))
            session.commit()


_PENDING = "intellioptics_servicebus_pending"
_HOOKED = "intellioptics_servicebus_hooked"


class ServiceBusWorkQueue:
    """``client`` is an ``azure.servicebus.ServiceBusClient`` (or an object with its methods)."""

    def __init__(self, client: Any, message_factory: Callable[..., Any] | None = None) -> None:
        self._client = client
        if message_factory is None:
            from azure.servicebus import ServiceBusMessage

            message_factory = ServiceBusMessage
        self._message = message_factory

    @classmethod
    def from_connection_string(cls, connection_string: str) -> ServiceBusWorkQueue:
        from azure.servicebus import ServiceBusClient

        return cls(ServiceBusClient.from_connection_string(connection_string))

    def _send_now(self, topic: str, body: dict[str, Any]) -> None:
        with self._client.get_queue_sender(queue_name=topic) as sender:
            sender.send_messages(self._message(json.dumps(body), message_id=uuid.uuid4().hex))

    def send(self, topic: str, body: dict[str, Any], session: Session) -> None:
        """Held on the session until it commits (then sent); a rollback drops it."""
        pending: list[tuple[str, dict[str, Any]]] = session.info.setdefault(_PENDING, [])
        if not session.info.get(_HOOKED):
            session.info[_HOOKED] = True

            def flush_pending(_session: Session) -> None:
                while pending:
                    self._send_now(*pending.pop(0))

            event.listen(session, "after_commit", flush_pending)
            event.listen(session, "after_soft_rollback", lambda _session, _previous: pending.clear())
        session.connection()  # begin the transaction now, so its rollback is seen even if nothing else ran
        pending.append((topic, body))

    @contextmanager
    # lock_s: the queue interface; Service Bus sets the lock duration on the queue itself.
    def receive(self, topic: str, lock_s: float) -> Iterator[QueueMessage | None]:  # noqa: ARG002
        with self._client.get_queue_receiver(queue_name=topic, max_wait_time=1) as receiver:
            messages = receiver.receive_messages(max_message_count=1, max_wait_time=1)
            if not messages:
                yield None
                return
            raw = messages[0]
            body = json.loads(str(raw))  # str() of a received message is its body text
            message = QueueMessage(str(raw.message_id), topic, body, int(raw.delivery_count or 0) + 1)
            try:
                yield message
            except BaseException:
                receiver.abandon_message(raw)
                raise
            receiver.complete_message(raw)
