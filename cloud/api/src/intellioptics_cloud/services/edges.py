"""Edges (hubs): registration, heartbeats with model versions and counters, hourly metrics."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from intellioptics_cloud.auth import Principal
from intellioptics_cloud.models import EdgeHourlyRow, EdgeRow, utcnow
from intellioptics_cloud.schemas import EdgeHeartbeat, EdgeMetricsReport, EdgeRegister
from intellioptics_common.errors import NotFoundError
from intellioptics_common.ids import new_id


def get_edge(session: Session, principal: Principal, edge_id: str) -> EdgeRow:
    row = session.get(EdgeRow, edge_id)
    if row is None or row.account_id != principal.account_id:
        raise NotFoundError(f"Edge {edge_id} not found.")
    return row


def register(session: Session, principal: Principal, body: EdgeRegister) -> EdgeRow:
    row = EdgeRow(
        id=new_id("edge"),
        account_id=principal.account_id,
        name=body.name,
        software_version=body.software_version,
        detector_ids=list(body.detector_ids),
        detectors=[],
        counters=None,
        last_seen=utcnow(),
        created_at=utcnow(),
    )
    session.add(row)
    session.commit()
    return row


def heartbeat(session: Session, principal: Principal, edge_id: str, body: EdgeHeartbeat) -> EdgeRow:
    row = get_edge(session, principal, edge_id)
    row.software_version = body.software_version
    row.detectors = [d.model_dump() for d in body.detectors]
    row.detector_ids = sorted({*row.detector_ids, *(d.detector_id for d in body.detectors)})
    if body.counters is not None:
        row.counters = body.counters
    row.last_seen = utcnow()
    session.commit()
    return row


def list_edges(session: Session, principal: Principal) -> list[EdgeRow]:
    return list(
        session.scalars(select(EdgeRow).where(EdgeRow.account_id == principal.account_id).order_by(EdgeRow.name))
    )


def hourly(session: Session, edge_id: str, hours: int = 48) -> list[EdgeHourlyRow]:
    since = utcnow() - timedelta(hours=hours)
    return list(
        session.scalars(
            select(EdgeHourlyRow)
            .where(EdgeHourlyRow.edge_id == edge_id, EdgeHourlyRow.hour >= since)
            .order_by(EdgeHourlyRow.hour, EdgeHourlyRow.detector_id)
        )
    )


def report_metrics(session: Session, principal: Principal, body: EdgeMetricsReport) -> int:
    """Upsert hourly counters: a re-sent hour replaces, never double-counts."""
    edge = get_edge(session, principal, body.edge_id)
    for entry in body.entries:
        hour = entry.hour.replace(minute=0, second=0, microsecond=0)
        existing = session.scalar(
            select(EdgeHourlyRow).where(
                EdgeHourlyRow.edge_id == edge.id,
                EdgeHourlyRow.detector_id == entry.detector_id,
                EdgeHourlyRow.hour == hour,
            )
        )
        if existing is None:
            session.add(
                EdgeHourlyRow(
                    account_id=principal.account_id,
                    edge_id=edge.id,
                    detector_id=entry.detector_id,
                    hour=hour,
                    counters=dict(entry.counters),
                )
            )
            session.flush()
        else:
            existing.counters = dict(entry.counters)
    edge.last_seen = utcnow()
    session.commit()
    return len(body.entries)
