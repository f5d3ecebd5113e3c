"""What no route answers: the built web UI (``INTELLIOPTICS_WEB_DIR``) for a browser,
else a JSON 404, or a 405 where the path exists with other methods.

One catch-all route, installed with or without the UI, so that API clients see the same
answers either way:

- a path some route serves with other methods is a 405 whose ``Allow`` names every one
  (Starlette's own 405 names only the first route's, and a GET-only catch-all turned
  POSTs to missing routes into 405s);
- the UI answers only what a browser navigating it asks for: a ``GET`` of a path that
  is no API path, from a client that accepts HTML. The SDK's ``gl.edge`` helpers pointed
  at the cloud get a 404 and raise ``EdgeNotAvailableError``, not a page of HTML;
- everything else is a 404, trailing-slash variants of real paths included: Starlette's
  redirect for those named the address the request arrived at, behind a gateway the
  cloud's own.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from intellioptics_common.errors import NotFoundError

# First path segments of the API, of the bases SDK 1.3.1 accepts (/device-api, /v1..v3)
# and of the edge's own routes (which a client may send to the cloud by mistake): never
# the UI, whatever the client accepts.
NOT_UI = frozenset(
    {
        "v1",
        "v2",
        "v3",
        "device-api",
        "edge-api",
        "health",
        "metrics",
        "docs",
        "openapi.json",
        "redoc",
        "edge-config",
        "edge-detector-readiness",
        "edge-info",
        "edge-outbox",
        "status",
        "status.json",
        "streams",
    }
)
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_HTML_RANGES = ("text/html", "text/*", "*/*")  # most specific first (RFC 9110, 12.5.1)


def accepts_html(request: Request) -> bool:
    """Whether ``text/html`` is acceptable: the most specific matching media range decides,
    ``q=0`` refuses, no Accept header accepts anything. ``*/*`` (curl, requests) counts:
    the path has already ruled out the API."""
    header = request.headers.get("accept")
    if header is None:
        return True
    quality: dict[str, float] = {}
    for item in header.lower().split(","):
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        quality.setdefault(media, q)
    return next((quality[media] > 0 for media in _HTML_RANGES if media in quality), False)


def allowed_methods(app: FastAPI, path: str, fallback: object) -> list[str]:
    """The methods the other routes serve at ``path``. A fresh scope per probe: the
    router's own matching, without the state of the request being served."""
    routes = [route for route in app.router.routes if getattr(route, "endpoint", None) is not fallback]
    return [
        method
        for method in _ALL_METHODS
        if any(
            route.matches({"type": "http", "path": path, "method": method, "root_path": "", "headers": []})[0]
            is Match.FULL
            for route in routes
        )
    ]


def install_fallback(app: FastAPI, web_dir: Path | None) -> None:
    """Add the catch-all last, so that every real route matches first."""
    root = web_dir.resolve() if web_dir is not None else None

    def fallback(request: Request, path: str = "") -> FileResponse:
        allowed = allowed_methods(app, "/" + path, fallback)
        if allowed:
            raise StarletteHTTPException(405, "Method Not Allowed", headers={"Allow": ", ".join(allowed)})
        if request.method not in ("GET", "HEAD") or path.split("/", 1)[0] in NOT_UI:
            raise NotFoundError(f"No route for {request.method} /{path}.")
        if root is None:
            raise NotFoundError(f"No route at /{path}; this cloud API serves no web UI.")
        if "\x00" in path:  # %00: pathlib raises ValueError (was a 500); no file has one
            raise NotFoundError("No file at this path (it contains a NUL byte).")
        candidate = (root / path).resolve()
        if path and candidate.is_file() and candidate.is_relative_to(root):
            return FileResponse(candidate)
        if not accepts_html(request):
            raise NotFoundError(f"No route at /{path}; the web UI answers only clients that accept text/html.")
        index = root / "index.html"
        if not index.is_file():
            raise NotFoundError("The web UI is not built (no index.html).")
        return FileResponse(index, headers={"cache-control": "no-cache"})

    app.add_api_route("/", fallback, methods=_ALL_METHODS, include_in_schema=False)
    app.add_api_route("/{path:path}", fallback, methods=_ALL_METHODS, include_in_schema=False)
