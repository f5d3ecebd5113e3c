"""Edges (hubs): register, heartbeat, list, hourly metrics."""

from __future__ import annotations

from fastapi import APIRouter, status

from intellioptics_cloud.deps import EdgeDevice, Reader, SessionDep
from intellioptics_cloud.models import EdgeRow
from intellioptics_cloud.schemas import EdgeHeartbeat, EdgeHourly, EdgeMetricsReport, EdgeOut, EdgeRegister
from intellioptics_cloud.services import edges

router = APIRouter(tags=["edges"])


def edge_out(row: EdgeRow, hourly: list | None = None) -> EdgeOut:
    return EdgeOut(
        id=row.id,
        name=row.name,
        last_seen=row.last_seen,
        software_version=row.software_version,
        detector_ids=row.detector_ids,
        detectors=row.detectors,
        counters=row.counters,
        created_at=row.created_at,
        hourly=[EdgeHourly(detector_id=h.detector_id, hour=h.hour, counters=h.counters) for h in hourly or []],
    )


@router.post("/edges/register", response_model=EdgeOut, status_code=status.HTTP_201_CREATED)
def register(body: EdgeRegister, principal: EdgeDevice, session: SessionDep) -> EdgeOut:
    return edge_out(edges.register(session, principal, body))


@router.post("/edges/{edge_id}/heartbeat", response_model=EdgeOut)
def heartbeat(edge_id: str, body: EdgeHeartbeat, principal: EdgeDevice, session: SessionDep) -> EdgeOut:
    return edge_out(edges.heartbeat(session, principal, edge_id, body))


@router.get("/edges", response_model=list[EdgeOut])
def list_edges(principal: Reader, session: SessionDep) -> list[EdgeOut]:
    return [edge_out(row) for row in edges.list_edges(session, principal)]


@router.get("/edges/{edge_id}", response_model=EdgeOut)
def get_edge(edge_id: str, principal: Reader, session: SessionDep) -> EdgeOut:
    row = edges.get_edge(session, principal, edge_id)
    return edge_out(row, edges.hourly(session, row.id))


@router.post("/edge/report-metrics", status_code=status.HTTP_202_ACCEPTED)
def report_metrics(body: EdgeMetricsReport, principal: EdgeDevice, session: SessionDep) -> dict[str, int]:
    return {"accepted": edges.report_metrics(session, principal, body)}
