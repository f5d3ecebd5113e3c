"""Liveness (the process answers) apart from readiness (it can read models)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from intellioptics_inference.deps import InferenceDep
from intellioptics_inference.routes.views import loaded_view
from intellioptics_inference.schemas import Live, Ready

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=Live)
async def live() -> Live:
    return Live()


@router.get("/ready", response_model=Ready, responses={503: {"model": Ready}})
async def ready(service: InferenceDep) -> JSONResponse:
    body = Ready(
        ready=service.models_dir_readable(),
        models_dir=str(service.models_dir),
        loaded=[loaded_view(entry) for entry in service.cache.snapshot()],
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)
