"""Liveness, readiness and Prometheus metrics (no token: for probes and scrapers)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from intellioptics_edge.background import outbox_counters
from intellioptics_edge.deps import StateDep
from intellioptics_edge.outbox_sender import DEAD_LETTER_REASONS

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/health/ready")
async def ready(state: StateDep) -> Response:
    """Ready when the edge can answer: its inference service is up, or a cloud can take over."""
    inference_ready = await state.inference.service_ready()
    ok = inference_ready or state.cloud is not None
    body = {
        "status": "ready" if ok else "not_ready",
        "inference_ready": inference_ready,
        "cloud": "offline" if state.cloud is None else "configured",
        "edge_config_error": state.config.state.error,
    }
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(state: StateDep) -> Response:
    state.stats.set_outbox(await outbox_counters(state.outbox))
    summary = await asyncio.to_thread(state.outbox.summary)
    state.stats.set_dead_letters(summary.dead_letters, DEAD_LETTER_REASONS)
    return Response(generate_latest(state.stats.registry), media_type=CONTENT_TYPE_LATEST)
