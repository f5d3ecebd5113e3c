"""Browser-facing protections: security headers on every response (the table shared with
the edge, in ``intellioptics_common.security_headers``) and a CORS allow-list.

The API is called by the SDK (no browser) and by the web UI, which is served from the
same origin; other origins get CORS only when an operator lists them in
``INTELLIOPTICS_CORS_ALLOW_ORIGINS``. Framing is refused everywhere (clickjacking of
the review page would let another site label images with a reviewer's session).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from intellioptics_cloud.settings import CloudSettings
from intellioptics_common.security_headers import SecurityHeadersMiddleware


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
