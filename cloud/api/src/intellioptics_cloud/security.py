"""Browser-facing protections: security headers on every response (the table shared with
the edge, in ``intellioptics_common.security_headers``) and a CORS allow-list.

The API is called by the SDK (no browser) and by the web UI, which is served from the
same origin; other origins get CORS only when an operator lists them in
``INTELLIOPTICS_CORS_ALLOW_ORIGINS``. Framing is refused everywhere (clickjacking of
the review page would let another site label images with a reviewer's session).
"""

from __future__ import annotations

import anyio
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from intellioptics_cloud.auth import Principal
from intellioptics_cloud.deps import get_principal
from intellioptics_cloud.settings import CloudSettings
from intellioptics_common.jsonlimits import JsonBodyLimitMiddleware
from intellioptics_common.security_headers import SecurityHeadersMiddleware

_API_PREFIXES = ("/v1/", "/device-api/v1/", "/edge-api/v1/")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_WEB_CATCH_ALL = frozenset({"/", "/{path:path}"})


class TokenFirstMiddleware:
    """The token of a request that may carry a body is checked before the body is read.

    FastAPI reads (and for multipart, spools to disk) a route's body before it solves the
    route's dependencies, so without this a caller with no valid token could make the
    server take in a whole upload before the 401. Here the caller is authenticated
    exactly as :func:`~intellioptics_cloud.deps.get_principal` does (limiter included),
    and the route's own dependency reuses that principal. Every API route with a body
    needs a token, so a refusal here is the answer the route would give.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_api_call_with_body(scope):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            await anyio.to_thread.run_sync(_authenticate, request)
        except Exception as exc:
            response = await _handled(request, exc)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _is_api_call_with_body(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] not in _BODY_METHODS or not scope["path"].startswith(_API_PREFIXES):
        return False
    # Only a route that will run: an unknown path or method keeps its 404 / 405 (the web
    # UI's catch-all, web.py, matches every path and only ever answers 404 to a body).
    return any(
        route.matches(scope)[0] is Match.FULL
        for route in scope["app"].router.routes
        if getattr(route, "path", None) not in _WEB_CATCH_ALL
    )


def _authenticate(request: Request) -> Principal:
    session = request.app.state.resources.sessions()
    try:
        return get_principal(request, session)  # sets request.state.principal
    finally:
        session.rollback()
        session.close()


async def _handled(request: Request, exc: Exception) -> Response:
    """The app's own answer to ``exc``: the one handler table (errors.py), found by MRO."""
    handlers = request.app.exception_handlers
    for kind in type(exc).__mro__:
        if kind in handlers:
            return await handlers[kind](request, exc)
    raise exc


def install_security(app: FastAPI, settings: CloudSettings) -> None:
    # Innermost: JSON bodies over 1 MiB get 413 from their Content-Length, after the token
    # check and before anything reads them. The edge's outbox batch reads its own (64 MiB).
    app.add_middleware(JsonBodyLimitMiddleware, exempt=frozenset({"/v1/image-queries/batch"}))
    # Then the token: refusals these answer still get CORS and security headers.
    app.add_middleware(TokenFirstMiddleware)
    origins = settings.cors_origins
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            allow_headers=["x-api-token", "authorization", "content-type", "x-request-id"],
            max_age=600,
        )
    # Added last, so outermost: error responses and CORS preflights get the headers too.
    app.add_middleware(SecurityHeadersMiddleware)
