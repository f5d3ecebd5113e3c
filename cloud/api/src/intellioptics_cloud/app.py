"""The cloud API application: resources made in ``lifespan``, routes under ``/v1`` and
``/device-api/v1`` (the SDK's base path), edge routes under ``/edge-api/v1``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from intellioptics_cloud.blobs import make_blob_store
from intellioptics_cloud.db import make_engine, make_session_factory, run_migrations
from intellioptics_cloud.errors import install_error_handlers
from intellioptics_cloud.inference import ModelRunner
from intellioptics_cloud.metrics import Metrics, install_metrics
from intellioptics_cloud.resources import Resources
from intellioptics_cloud.routes import (
    detectors,
    edges,
    health,
    identity,
    image_queries,
    labels,
    models,
    review,
    training,
)
from intellioptics_cloud.security import install_security
from intellioptics_cloud.services import accounts
from intellioptics_cloud.services.triggers import RetrainScheduler
from intellioptics_cloud.settings import CloudSettings, get_settings
from intellioptics_cloud.web import install_fallback
from intellioptics_cloud.workqueue import DatabaseWorkQueue, ServiceBusWorkQueue, WorkQueue
from intellioptics_common.imaging import ImageLimits
from intellioptics_common.ratelimit import FailedAuthLimiter

logger = logging.getLogger("intellioptics_cloud")

API_ROUTERS = (
    identity.router,
    detectors.router,
    image_queries.router,
    labels.router,
    review.router,
    models.router,
    edges.router,
    training.router,
)


def build_resources(settings: CloudSettings) -> Resources:
    engine = make_engine(settings.resolved_database_url)
    run_migrations(engine)
    sessions = make_session_factory(engine)
    with sessions() as session:
        generated = accounts.bootstrap(session, settings.bootstrap_token)
    if generated:
        # Printed once, on the first start only, for the operator (not logged); it is stored hashed.
        print(f"IntelliOptics bootstrap admin token (shown once): {generated}", flush=True)  # noqa: T201
    blobs = make_blob_store(
        settings.blob_backend,
        root=settings.resolved_blob_dir,
        connection_string=settings.azure_storage_connection_string,
        container=settings.azure_container,
    )
    queue: WorkQueue
    if settings.queue_backend == "servicebus":
        if not settings.servicebus_connection_string:
            raise ValueError("INTELLIOPTICS_SERVICEBUS_CONNECTION_STRING is required for the servicebus queue backend")
        queue = ServiceBusWorkQueue.from_connection_string(settings.servicebus_connection_string)
    else:
        queue = DatabaseWorkQueue(sessions)
    limits = ImageLimits(max_bytes=settings.max_image_bytes)
    return Resources(
        settings=settings,
        engine=engine,
        sessions=sessions,
        blobs=blobs,
        queue=queue,
        runner=ModelRunner(blobs, limits),
        limits=limits,
    )


def create_app(settings: CloudSettings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = build_resources(settings)
        app.state.resources = resources
        scheduler = RetrainScheduler(resources.sessions, resources.queue, settings.retrain_schedule_s)
        scheduler.start()
        try:
            yield
        finally:
            scheduler.stop()
            resources.engine.dispose()

    app = FastAPI(
        title="IntelliOptics cloud API",
        version="0.1.0",
        description="Groundlight-compatible detectors and image queries, review queue, model registry, edges.",
        lifespan=lifespan,
    )
    app.state.metrics = Metrics()
    app.state.auth_limiter = FailedAuthLimiter(settings.auth_max_failures, settings.auth_failure_window_s)
    app.state.trusted_proxies = settings.trusted_proxy_networks
    install_error_handlers(app)
    install_metrics(app, app.state.metrics)
    install_security(app, settings)
    app.include_router(health.router)
    for router in API_ROUTERS:
        app.include_router(router, prefix="/v1")
        # The SDK's base path; the same handlers, kept out of the schema to avoid duplicates.
        app.include_router(router, prefix="/device-api/v1", include_in_schema=False)
    app.include_router(models.edge_router, prefix="/edge-api/v1")
    app.include_router(models.edge_router, prefix="/v1/edge", include_in_schema=False)
    app.include_router(models.edge_router, prefix="/device-api/v1/edge", include_in_schema=False)
    web_dir = settings.web_dir if settings.web_dir is not None and settings.web_dir.is_dir() else None
    install_fallback(app, web_dir)  # last: what no route above answers
    return app
