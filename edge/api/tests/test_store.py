"""The local store: retention keeps what the outbox still needs; the outbox survives restarts."""

from __future__ import annotations

from pathlib import Path

from intellioptics_edge.database import EdgeDatabase
from intellioptics_edge.outbox_store import Outbox, OutboxEntry, OutboxKind
from intellioptics_edge.store import QueryStore


def _save(store: QueryStore, name: str, escalate: bool = False) -> None:
    outbox = [OutboxEntry(OutboxKind.ESCALATION, {"label": "YES"}, {"metadata": None})] if escalate else None
    assert store.save(
        image_query_id=name,
        detector_id="det_x",
        done_processing=not escalate,
        body="{}",
        image=name.encode(),
        content_type="image/jpeg",
        outbox=outbox,
    )


def test_retention_drops_the_oldest_but_keeps_pending_escalations(tmp_path: Path) -> None:
    database = EdgeDatabase(tmp_path / "edge.sqlite3")
    store = QueryStore(database, max_queries=3, max_age_s=3600)
    _save(store, "iq_first", escalate=True)
    for index in range(6):
        _save(store, f"iq_{index}")
    store.prune()
    assert store.get("iq_0") is None and store.image("iq_0") is None
    assert not (database.images_dir / "iq_0").exists()
    assert store.get("iq_5") is not None
    # Still waiting for the cloud: kept, image included.
    assert store.image("iq_first").data == b"iq_first"
    assert store.count() == 4


def test_outbox_survives_a_restart_and_tracks_delivery(tmp_path: Path) -> None:
    database = EdgeDatabase(tmp_path / "edge.sqlite3")
    outbox = Outbox(database)
    seq = outbox.enqueue(
        kind=OutboxKind.AUDIT, image_query_id="iq_audit", detector_id="det_x", image=b"pixels", edge_answer={"a": 1}
    )
    database.close()

    reopened = Outbox(EdgeDatabase(tmp_path / "edge.sqlite3"))
    (item,) = reopened.pending(now=1e12)
    assert (item.seq, item.kind, item.edge_answer) == (seq, OutboxKind.AUDIT, {"a": 1})
    assert reopened.image(item) == b"pixels"
    reopened.mark_failed(seq, "cloud said 500", retry_at=1e11)
    assert reopened.pending(now=1e10) == []
    assert reopened.pending(now=1e12)[0].attempts == 1
    assert reopened.counts() == {"escalation": 0, "audit": 1}
    reopened.mark_delivered(seq)
    assert reopened.pending(now=1e12) == [] and reopened.counts()["audit"] == 0


def test_a_duplicate_id_is_refused_without_touching_the_first_image(tmp_path: Path) -> None:
    store = QueryStore(EdgeDatabase(tmp_path / "edge.sqlite3"), max_queries=10, max_age_s=3600)
    _save(store, "iq_same")
    assert not store.save(
        image_query_id="iq_same", detector_id="d", done_processing=True, body="{}", image=b"other", content_type="x"
    )
    assert store.image("iq_same").data == b"iq_same"


def test_a_depth_map_is_kept_for_the_outbox_only_and_goes_with_its_image(tmp_path: Path) -> None:
    database = EdgeDatabase(tmp_path / "edge.sqlite3")
    store = QueryStore(database, max_queries=1, max_age_s=3600)
    entry = OutboxEntry(OutboxKind.ESCALATION, {"label": "YES"}, {"metadata": None})
    for name, outbox in [("iq_escalated", [entry]), ("iq_answered", None)]:
        assert store.save(
            image_query_id=name,
            detector_id="det_x",
            done_processing=outbox is None,
            body="{}",
            image=b"pixels",
            content_type="image/png",
            outbox=outbox,
            depth=b"depth of " + name.encode(),
        )
    assert not (database.images_dir / "iq_answered-depth").exists()  # nobody would read it
    database.close()

    database = EdgeDatabase(tmp_path / "edge.sqlite3")  # a restart: the pending depth is no orphan
    outbox = Outbox(database)
    (item,) = outbox.pending(now=1e12)
    assert outbox.depth(item) == b"depth of iq_escalated"
    assert outbox.summary().pending_bytes == len(b"pixels") + len(b"depth of iq_escalated")
    outbox.mark_delivered(item.seq)
    outbox.forget_finished(older_than=1e12)
    QueryStore(database, max_queries=0, max_age_s=3600).prune()
    assert sorted(path.name for path in database.images_dir.iterdir()) == []
