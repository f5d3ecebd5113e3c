"""Prometheus exposition of this service's own registry."""

from __future__ import annotations

from fastapi import APIRouter, Response

from intellioptics_inference.deps import InferenceDep
from intellioptics_inference.metrics import CONTENT_TYPE

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(service: InferenceDep) -> Response:
    return Response(service.metrics.render(), media_type=CONTENT_TYPE)
