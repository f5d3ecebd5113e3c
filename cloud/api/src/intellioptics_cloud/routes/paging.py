"""Links the cloud puts in its answers, at the address the client used: DRF-style
next/previous links of paginated lists, the base of signed model links."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import URL

from intellioptics_common.ratelimit import is_trusted_peer


def public_url(request: Request) -> URL:
    """The request's URL as the client wrote it.

    Behind a gateway (the edge's nginx forwarding to the cloud, the cloud's nginx), the
    Host is the cloud's own address; the gateway names the one the client used in
    ``X-Forwarded-Host`` / ``X-Forwarded-Proto``. Believed only from a trusted proxy, like
    ``X-Forwarded-For``; the first entry is the client-facing one. The peer must be the
    connection's own, which is why ``python -m intellioptics_cloud`` runs uvicorn without
    its proxy headers.
    """
    url = request.url
    peer = request.client.host if request.client else None
    if not is_trusted_peer(peer, request.app.state.trusted_proxies):
        return url
    host = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    if host:
        url = url.replace(netloc=host)
    if proto in ("http", "https"):
        url = url.replace(scheme=proto)
    return url


def public_base_url(request: Request) -> str:
    """``scheme://host/`` (with the root path) as the client wrote it; see ``public_url``."""
    return str(public_url(request).replace(path=request.scope.get("root_path", "") + "/", query="", fragment=""))


def page_links(request: Request, page: int, page_size: int, count: int) -> tuple[str | None, str | None]:
    """Absolute links (SDK 1.3.1 validates them as URLs) at the address the client used."""
    base = public_url(request)
    nxt = str(base.include_query_params(page=page + 1)) if page * page_size < count else None
    prev = str(base.include_query_params(page=page - 1)) if page > 1 else None
    return nxt, prev
