"""Browser-facing protections: security headers on every response and a CORS allow-list.

The API is called by the SDK (no browser) and by the web UI, which is served from the
same origin; other origins get CORS only when an operator lists them in
``INTELLIOPTICS_CORS_ALLOW_ORIGINS``. Framing is refused everywhere (clickjacking of
the review page would let another site label images with a reviewer's session).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from intellioptics_cloud.settings import CloudSettings

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
)


class SecurityHeadersMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): adds the headers without buffering bodies."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in SECURITY_HEADERS if name not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_security(app: FastAPI, settings: CloudSettings) -> None:
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
