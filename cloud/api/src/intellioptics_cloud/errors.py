"""Cloud API errors and the one handler table that turns every error into ``ErrorBody``.

Hierarchy (on top of :mod:`intellioptics_common.errors`)::

    IntelliOpticsError
    ├── InvalidInputError        400  (common)
    │   └── UnsupportedModeError 400  detector mode not supported yet
    ├── AuthenticationError      401  (common) missing or unknown token
    ├── PermissionDeniedError    403  (common) role does not allow the call
    ├── NotFoundError            404  (common) also for another account's objects
    │   └── NoDepthError         404  the image query came without a depth map
    ├── ConflictError            409  (common)
    │   ├── DuplicateNameError   409  detector/group name already used
    │   ├── ClaimError           409  review claim missing or expired
    │   ├── DetectorOffError     409  the detector is OFF (an edge retries: it can be turned ON)
    │   └── ImageQueryIdTakenError 409  image_query_id used by another account (an edge gives up)
    └── ServiceUnavailableError  503  (common) database or blob store down

SQLAlchemy's OperationalError/InterfaceError (database down or restarting) also map
to 503 ``database_unavailable``; RateLimitedError errors with ``retry_after_s`` (429
after repeated refused tokens) carry a Retry-After header.

Another account's object answers 404, never 403: its existence is not leaked.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from intellioptics_common.errors import (
    AuthenticationError,
    ConflictError,
    IntelliOpticsError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
)
from intellioptics_common.schemas import ErrorBody

__all__ = [
    "AuthenticationError",
    "ClaimError",
    "ConflictError",
    "DetectorOffError",
    "DuplicateNameError",
    "ImageQueryIdTakenError",
    "IntelliOpticsError",
    "InvalidInputError",
    "NoDepthError",
    "NotFoundError",
    "PermissionDeniedError",
    "ServiceUnavailableError",
    "UnsupportedModeError",
    "install_error_handlers",
]

logger = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
}


class UnsupportedModeError(InvalidInputError):
    code = "unsupported_mode"


class DuplicateNameError(ConflictError):
    code = "duplicate_name"


class ClaimError(ConflictError):
    code = "claim_required"


class DetectorOffError(ConflictError):
    code = "detector_off"


class ImageQueryIdTakenError(ConflictError):
    code = "image_query_id_taken"


class NoDepthError(NotFoundError):
    code = "no_depth"


def _body(status: int, detail: str, code: str, request: Request, errors: list | None = None) -> JSONResponse:
    body = ErrorBody(detail=detail, code=code, request_id=request.headers.get("x-request-id"), errors=errors)
    return JSONResponse(status_code=status, content=body.model_dump(exclude_none=True))


def _describe(errors: list[dict]) -> str:
    parts = []
    for error in errors[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IntelliOpticsError)
    if exc.status_code >= 500:
        logger.error("%s %s failed: %s", request.method, request.url.path, exc)
    response = _body(exc.status_code, exc.public_message, exc.code, request)
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]
    return _body(422, f"Invalid request: {_describe(errors)}", "validation_error", request, errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else "Request failed"
    response = _body(exc.status_code, detail, _HTTP_CODES.get(exc.status_code, "http_error"), request)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """A dropped or refused database connection is an outage, not a bug: 503, so that
    clients retry; pool_pre_ping replaces the dead connections once the database is back."""
    logger.error("%s %s: database unavailable: %s", request.method, request.url.path, str(exc).splitlines()[0])
    response = _body(503, "The database is unavailable; retry shortly.", "database_unavailable", request)
    response.headers["Retry-After"] = "5"
    return response


async def _unexpected_error(request: Request, _exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return _body(500, "Internal server error; the request was not applied.", "internal_error", request)


def install_error_handlers(app: FastAPI) -> None:
    """The single handler table: domain errors, validation, HTTP errors, anything else."""
    app.add_exception_handler(IntelliOpticsError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(InterfaceError, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)
