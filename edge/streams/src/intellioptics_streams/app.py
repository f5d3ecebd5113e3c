"""The stream service's HTTP side: status, metrics and probes (port 8719, not published).

``GET /streams`` here is what the edge API serves at ``GET /streams`` behind the gateway
(with the caller's token checked there); this port is reached only inside the edge.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from intellioptics_streams.edge_client import EdgeApiClient
from intellioptics_streams.grabber import SourceFactory, SourceOptions, open_video
from intellioptics_streams.metrics import StreamsCollector
from intellioptics_streams.settings import StreamsSettings, get_settings
from intellioptics_streams.sinks import SinkBackoff
from intellioptics_streams.stream import StreamOptions
from intellioptics_streams.supervisor import Supervisor

logger = logging.getLogger(__name__)


def stream_options(settings: StreamsSettings) -> StreamOptions:
    return StreamOptions(
        source=SourceOptions(
            open_timeout_s=settings.source_open_timeout_s,
            read_timeout_s=settings.source_read_timeout_s,
            backoff_base_s=settings.reconnect_backoff_base_s,
            backoff_cap_s=settings.reconnect_backoff_cap_s,
        ),
        sink_queue_size=settings.sink_queue_size,
        sink_backoff=SinkBackoff(settings.webhook_backoff_base_s, settings.webhook_backoff_cap_s),
    )


def create_app(
    settings: StreamsSettings | None = None,
    *,
    edge_transport: httpx.BaseTransport | None = None,
    open_source: SourceFactory = open_video,
) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        edge = EdgeApiClient(settings.edge_api_base, settings.streams_token, settings.submit_timeout_s, edge_transport)
        supervisor = Supervisor(
            edge, stream_options(settings), settings.config_poll_interval_s, open_source=open_source
        )
        registry = CollectorRegistry()
        registry.register(StreamsCollector(supervisor))
        app.state.supervisor, app.state.registry = supervisor, registry
        supervisor.start()
        logger.info("stream service ready: configuration from %s/edge-config", settings.edge_api_base)
        try:
            yield
        finally:
            supervisor.stop()
            edge.close()

    app = FastAPI(title="IntelliOptics stream service", version="0.1.0", lifespan=lifespan)

    @app.get("/streams")
    def list_streams() -> dict[str, Any]:
        supervisor: Supervisor = app.state.supervisor
        return {
            "streams": supervisor.status(),
            "config_loaded": supervisor.config_loaded,
            "config_error": supervisor.last_poll_error,
        }

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(app.state.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health/live")
    def live() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/health/ready")
    def ready() -> Response:
        supervisor: Supervisor = app.state.supervisor
        if not supervisor.config_loaded:
            detail = supervisor.last_poll_error or "the streams configuration has not been read yet"
            return JSONResponse({"status": "not_ready", "detail": detail}, status_code=503)
        return JSONResponse({"status": "ready"})

    return app
