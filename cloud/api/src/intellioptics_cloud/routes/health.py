"""Liveness, readiness (database and blob store) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from intellioptics_cloud.deps import ResourcesDep
from intellioptics_cloud.schemas import Health
from intellioptics_common.errors import IntelliOpticsError

router = APIRouter(tags=["health"])


@router.get("/health/live", response_model=Health)
def live() -> Health:
    return Health(status="alive")


@router.get("/health/ready", response_model=Health, responses={503: {"model": Health}})
def ready(resources: ResourcesDep) -> Response:
    checks: dict[str, str] = {}
    try:
        with resources.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready"
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        resources.blobs.check()
        checks["blob_store"] = "ok"
    except (IntelliOpticsError, OSError) as exc:
        checks["blob_store"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    body = Health(status="ready" if ok else "not_ready", checks=checks)
    return JSONResponse(status_code=200 if ok else 503, content=body.model_dump())


@router.get("/metrics", response_class=Response, include_in_schema=True)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
