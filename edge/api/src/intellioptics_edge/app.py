"""The edge API application: resources made in ``lifespan``, one error handler table."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from intellioptics_common.errors import IntelliOpticsError
from intellioptics_common.imaging import ImageLimits
from intellioptics_common.ratelimit import FailedAuthLimiter
from intellioptics_common.schemas import ErrorBody
from intellioptics_common.security_headers import SecurityHeadersMiddleware
from intellioptics_edge.auth import EdgeOwnership, TokenVerifier
from intellioptics_edge.background import start_background
from intellioptics_edge.cloud import CloudClient
from intellioptics_edge.cloud_cache import KnownDetectors, VerifiedTokens
from intellioptics_edge.database import EdgeDatabase
from intellioptics_edge.detectors import DetectorDirectory
from intellioptics_edge.edge_config import EdgeConfigManager
from intellioptics_edge.inference_client import InferenceClient
from intellioptics_edge.loopback_http import LoopbackHTTP
from intellioptics_edge.outbox_store import Outbox
from intellioptics_edge.routes import edge, health, identity, image_queries, outbox, status, streams
from intellioptics_edge.service import ImageQueryService
from intellioptics_edge.settings import EdgeSettings, get_settings
from intellioptics_edge.state import EdgeState
from intellioptics_edge.stats import EdgeStats
from intellioptics_edge.store import QueryStore
from intellioptics_edge.streams_status import StreamsStatus

logger = logging.getLogger(__name__)

API_PREFIXES = ("/device-api/v1", "/v1")
_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated"}


def _error(request: Request, status_code: int, detail: str, code: str, errors: list | None = None) -> JSONResponse:
    body = ErrorBody(detail=detail, code=code, request_id=request.headers.get("x-request-id"), errors=errors)
    # Repeated in headers for the gateway, whose error pages replace intercepted bodies
    # (404/405/413); JSON-escaped so that nginx can put it inside its own JSON.
    headers = {"x-intellioptics-error": json.dumps(detail)[1:-1], "x-intellioptics-error-code": code}
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """The single table from errors to status codes and one JSON body."""

    @app.exception_handler(IntelliOpticsError)
    async def domain_error(request: Request, exc: IntelliOpticsError) -> JSONResponse:
        if exc.status_code >= 500:
            logger.warning("%s %s: %s", request.method, request.url.path, exc)
        response = _error(request, exc.status_code, exc.public_message, exc.code)
        retry_after = getattr(exc, "retry_after_s", None)
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # 400, not FastAPI's 422: nginx would send a 422 on to the cloud.
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return _error(request, 400, f"Invalid request: {fields}", "invalid_request", errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        response = _error(request, exc.status_code, detail, code)
        response.headers.update(exc.headers or {})  # a 405's Allow
        return response

    @app.exception_handler(OSError)
    @app.exception_handler(sqlite3.OperationalError)
    async def storage_error(request: Request, exc: Exception) -> JSONResponse:
        # A full or failing data disk is an operator's problem, not a bug: say so, in JSON.
        full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "full" in str(exc)
        if not full and not isinstance(exc, sqlite3.OperationalError):
            return await unexpected_error(request, exc)
        logger.error("%s %s: edge storage failed: %s", request.method, request.url.path, exc)
        if full:
            detail = "The edge's data disk is full; nothing was stored. Free space in the edge data directory."
            return _error(request, 507, detail, "insufficient_storage")
        return _error(request, 503, "The edge's local database is unavailable; retry shortly.", "storage_unavailable")

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, _exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(request, 500, "Internal error in the edge API; see its log.", "internal_error")


def create_app(
    settings: EdgeSettings | None = None,
    *,
    inference_transport: httpx.AsyncBaseTransport | None = None,
    cloud_transport: httpx.AsyncBaseTransport | None = None,
    streams_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the app; the transports let unit tests replace the network (httpx.MockTransport)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = EdgeDatabase(settings.database_path)
        config = EdgeConfigManager(settings.edge_config_path)
        store = QueryStore(database, max_queries=settings.store_max_queries, max_age_s=settings.store_max_age_s)
        limits = ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
        inference_http = httpx.AsyncClient(
            base_url=settings.inference_url,
            timeout=httpx.Timeout(settings.inference_read_timeout_s, connect=settings.inference_connect_timeout_s),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=32),
            transport=inference_transport,
        )
        cloud_http = None
        if not settings.offline:
            cloud_http = httpx.AsyncClient(
                base_url=settings.cloud_base,
                timeout=httpx.Timeout(settings.cloud_read_timeout_s, connect=settings.cloud_connect_timeout_s),
                transport=cloud_transport,
            )
        cloud = CloudClient(cloud_http) if cloud_http is not None else None
        streams_http = None
        if settings.streams_url.strip():
            streams_http = httpx.AsyncClient(
                base_url=settings.streams_url.strip(), timeout=settings.streams_timeout_s, transport=streams_transport
            )
        # A replaced transport (tests) must see every call, so the fast hop is for real networks only.
        infer_http = None
        if inference_transport is None:
            infer_http = LoopbackHTTP.for_url(
                settings.inference_url,
                connect_timeout_s=settings.inference_connect_timeout_s,
                read_timeout_s=settings.inference_read_timeout_s,
            )
        inference = InferenceClient(inference_http, infer_http)
        detectors = DetectorDirectory(
            config, cloud, settings.detector_cache_ttl_s, settings.device_token, known=KnownDetectors(database)
        )
        stats = EdgeStats()
        outbox = Outbox(database)
        background = start_background(
            settings,
            database=database,
            outbox=outbox,
            config=config,
            inference=inference,
            stats=stats,
            transport=cloud_transport,
        )
        app.state.edge = EdgeState(
            settings=settings,
            config=config,
            store=store,
            outbox=outbox,
            inference=inference,
            cloud=cloud,
            tokens=TokenVerifier(
                settings.local_tokens(),
                cloud,
                settings.token_cache_ttl_s,
                FailedAuthLimiter(settings.auth_max_failures, settings.auth_failure_window_s),
                remembered=VerifiedTokens(database),
                ownership=EdgeOwnership(settings.device_token, settings.edge_account_id),
            ),
            detectors=detectors,
            stats=stats,
            service=ImageQueryService(
                config=config,
                detectors=detectors,
                inference=inference,
                cloud=cloud,
                store=store,
                stats=stats,
                limits=limits,
                answer_timeout_s=settings.cloud_answer_timeout_s,
                device_token=settings.device_token,
                outbox_full=lambda: outbox.full,
            ),
            limits=limits,
            background=background,
            streams=StreamsStatus(streams_http),
        )
        # Ask the inference service to load the configured detectors now, not on the first query.
        warm_up = asyncio.create_task(_warm_up(inference, [d.detector_id for d in config.current().detectors]))
        logger.info(
            "edge API ready: %s, inference at %s, edge-config %s",
            "offline" if cloud is None else f"cloud {settings.cloud_base}",
            settings.inference_url,
            settings.edge_config_path,
        )
        try:
            yield
        finally:
            warm_up.cancel()
            await background.stop()
            await inference_http.aclose()
            if infer_http is not None:
                await infer_http.aclose()
            if cloud_http is not None:
                await cloud_http.aclose()
            if streams_http is not None:
                await streams_http.aclose()
            database.close()

    app = FastAPI(title="IntelliOptics edge API", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    for prefix in API_PREFIXES:
        app.include_router(image_queries.router, prefix=prefix)
        app.include_router(identity.router, prefix=prefix)
    app.include_router(edge.router)
    app.include_router(outbox.router)
    app.include_router(health.router)
    app.include_router(status.router)
    app.include_router(streams.router)
    # Outermost, so error responses get them too: the /status page is HTML a browser opens.
    app.add_middleware(SecurityHeadersMiddleware)
    return app


async def _warm_up(inference: InferenceClient, detector_ids: list[str]) -> None:
    """Load the first configured detectors, no more than the inference cache holds
    (loading more would only evict the first ones again)."""
    states = await inference.model_states()
    cache_size = states[0] if states is not None and states[0] else len(detector_ids)
    await asyncio.gather(*(inference.detector_ready(detector_id) for detector_id in detector_ids[:cache_size]))
