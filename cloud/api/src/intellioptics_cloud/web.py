"""The built web UI (``INTELLIOPTICS_WEB_DIR``) served at ``/``, with SPA fallback to index.html."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

from intellioptics_common.errors import NotFoundError

API_PREFIXES = ("v1/", "device-api/", "edge-api/", "health/", "metrics", "docs", "openapi.json", "redoc")


def install_web(app: FastAPI, web_dir: Path) -> None:
    root = web_dir.resolve()
    index = root / "index.html"

    def serve(path: str = "") -> FileResponse:
        if path.startswith(API_PREFIXES):
            raise NotFoundError(f"No API route at /{path}.")
        if "\x00" in path:  # %00: pathlib raises ValueError (was a 500); no file has one
            raise NotFoundError("No file at this path (it contains a NUL byte).")
        candidate = (root / path).resolve()
        if path and candidate.is_file() and candidate.is_relative_to(root):
            return FileResponse(candidate)
        if not index.is_file():
            raise NotFoundError("The web UI is not built (no index.html).")
        return FileResponse(index, headers={"cache-control": "no-cache"})

    app.add_api_route("/", serve, methods=["GET"], include_in_schema=False)
    app.add_api_route("/{path:path}", serve, methods=["GET"], include_in_schema=False)
