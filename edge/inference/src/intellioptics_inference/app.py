"""The FastAPI application: resources made in ``lifespan``, one error handler table."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from functools import partial

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from intellioptics_common.errors import IntelliOpticsError
from intellioptics_common.runtime import RuntimeOptions, SharedBackbones, default_fuser
from intellioptics_common.schemas import ErrorBody
from intellioptics_inference.cache import DetectorCache, Loader
from intellioptics_inference.errors import DetectorLoadingError
from intellioptics_inference.loader import load_detector
from intellioptics_inference.metrics import InferenceMetrics
from intellioptics_inference.routes import detectors, health, infer, metrics
from intellioptics_inference.service import InferenceService
from intellioptics_inference.settings import InferenceSettings, get_settings

logger = logging.getLogger(__name__)

LoaderFactory = Callable[[InferenceSettings], Loader]


def default_loader(settings: InferenceSettings) -> Loader:
    runtime = RuntimeOptions(
        intra_op_threads=settings.ort_intra_op_threads,
        inter_op_threads=settings.ort_inter_op_threads,
        execution_mode=settings.ort_execution_mode,
        allow_spinning=settings.ort_allow_spinning,
    )
    # One registry per service: detectors on the same backbone share its run (POST /infer/multi).
    backbones = SharedBackbones(runtime)
    return partial(load_detector, settings.models_dir, runtime=runtime, fuser=default_fuser(), backbones=backbones)


def create_app(settings: InferenceSettings | None = None, *, loader_factory: LoaderFactory = default_loader) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = InferenceMetrics()
        cache = DetectorCache(
            settings.models_dir,
            loader_factory(settings),
            registry,
            capacity=settings.inference_cache_size,
            max_bytes=settings.inference_max_memory_mb * 1024 * 1024,
            load_timeout_s=settings.inference_load_timeout_s,
            load_workers=settings.inference_load_workers,
        )
        service = InferenceService(
            settings.models_dir,
            cache,
            registry,
            settings.image_limits,
            settings.inference_workers,
        )
        app.state.settings = settings
        app.state.service = service
        if not service.models_dir_readable():
            logger.warning("models directory %s is not readable yet; /health/ready says 503", settings.models_dir)
        watcher = asyncio.create_task(_watch(cache, settings.model_poll_interval_s), name="model-watcher")
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            service.close()

    app = FastAPI(title="IntelliOptics edge inference", version="0.1.0", lifespan=lifespan)
    for router in (infer.router, health.router, detectors.router, metrics.router):
        app.include_router(router)
    app.add_exception_handler(IntelliOpticsError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    return app


async def _watch(cache: DetectorCache, interval_s: float) -> None:
    """Poll loaded detectors for new versions; the request path also checks cheaply."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(cache.poll)
        except Exception:
            logger.exception("model watcher pass failed")


def _error(
    status: int,
    detail: str,
    code: str,
    errors: list[dict[str, object]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(detail=detail, code=code, errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IntelliOpticsError)
    if exc.status_code >= 500:
        logger.warning("%s %s -> %s: %s", request.method, request.url.path, exc.status_code, exc)
    # A loading model is usually ready within a second or two: say when to come back.
    headers = {"Retry-After": "1"} if isinstance(exc, DetectorLoadingError) else None
    return _error(exc.status_code, exc.public_message, exc.code, headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    locations = [[str(part) for part in err.get("loc", ())] for err in exc.errors()]
    errors: list[dict[str, object]] = [
        {"loc": loc, "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))}
        for loc, err in zip(locations, exc.errors(), strict=True)
    ]
    where = ", ".join(".".join(loc) for loc in locations)
    return _error(422, f"Invalid request parameters: {where}.", "validation_error", errors)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _error(exc.status_code, str(exc.detail), code)


async def _unexpected_error(request: Request, _exc: Exception) -> JSONResponse:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return _error(500, "Internal error in the inference service; see its log.", "internal_error")
