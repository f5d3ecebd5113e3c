"""DRF-style next/previous links for paginated lists."""

from __future__ import annotations

from fastapi import Request


def page_links(request: Request, page: int, page_size: int, count: int) -> tuple[str | None, str | None]:
    nxt = str(request.url.include_query_params(page=page + 1)) if page * page_size < count else None
    prev = str(request.url.include_query_params(page=page - 1)) if page > 1 else None
    return nxt, prev
