"""The built web UI (``INTELLIOPTICS_WEB_DIR``) served at ``/``, with SPA fallback to index.html.

The fallback answers only what a browser navigating the UI asks for: a ``GET`` of a path
that is no API path, from a client that accepts HTML. Everything else that no route
serves is a JSON 404 (or 405 where the path exists with other methods), so that API
clients see what they would see without the UI: the SDK's ``gl.edge`` helpers pointed at
the cloud get a 404 and raise ``EdgeNotAvailableError``, not a page of HTML.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from intellioptics_common.errors import NotFoundError

# Paths of the API and of the edge's own routes (which a client may send to the cloud by
# mistake): never the UI, whatever the client accepts.
API_PREFIXES = (
    "v1/",
    "device-api/",
    "edge-api/",
    "health/",
    "metrics",
    "docs",
    "openapi.json",
    "redoc",
    "edge-config",
    "edge-detector-readiness",
    "edge-info",
    "status",
)
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def accepts_html(request: Request) -> bool:
    """A browser's navigation sends ``text/html``; ``*/*`` (curl, requests) is taken as yes
    too, since the path already rules out the API."""
    accept = request.headers.get("accept", "*/*").lower()
    return "text/html" in accept or "*/*" in accept


def _allowed_methods(app: FastAPI, path: str, fallback: object) -> list[str]:
    """The methods other routes serve at ``path`` (then a 405, not a 404). A fresh scope per
    probe: the router's own matching, without the state of the request being served."""
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


def install_web(app: FastAPI, web_dir: Path) -> None:
    root = web_dir.resolve()
    index = root / "index.html"

    def serve(request: Request, path: str = "") -> FileResponse:
        if request.method not in ("GET", "HEAD"):
            allowed = _allowed_methods(app, request.url.path, serve)
            if allowed:
                raise StarletteHTTPException(405, "Method Not Allowed", headers={"Allow": ", ".join(allowed)})
            raise NotFoundError(f"No route for {request.method} /{path}.")
        if path.startswith(API_PREFIXES) or "\x00" in path:
            raise NotFoundError(f"No API route at /{path}.")
        if "\x00" in path:  # %00: pathlib raises ValueError (was a 500); no file has one
            raise NotFoundError("No file at this path (it contains a NUL byte).")
        candidate = (root / path).resolve()
        if path and candidate.is_file() and candidate.is_relative_to(root):
            return FileResponse(candidate)
        if not accepts_html(request):
            raise NotFoundError(f"No route at /{path}; the web UI answers only clients that accept text/html.")
        if not index.is_file():
            raise NotFoundError("The web UI is not built (no index.html).")
        return FileResponse(index, headers={"cache-control": "no-cache"})

    # Every method: a path no route has is a 404 for any method (Starlette would answer
    # 405 for a GET-only catch-all). Added last, so every real route matches first.
    app.add_api_route("/", serve, methods=_ALL_METHODS, include_in_schema=False)
    app.add_api_route("/{path:path}", serve, methods=_ALL_METHODS, include_in_schema=False)
