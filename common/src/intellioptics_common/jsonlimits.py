"""JSON bodies with limits: a size and a nesting depth, refused with a 400 that says so.

Python's ``json`` recurses once per nesting level: about a thousand ``[`` raise
``RecursionError`` (a 500 where it is not caught), and a few hundred levels that do
parse can still blow up a later recursive step (serialising, storing, validating).
Real bodies here (edge-config, model manifests) nest fewer than ten levels.
"""

from __future__ import annotations

import json
from typing import Any

from intellioptics_common.errors import InvalidInputError

MAX_JSON_DEPTH = 32
MAX_JSON_BYTES = 1024 * 1024


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed value (a scalar is 0, ``{}`` and ``[]`` are 1); iterative."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_json_depth(value: Any, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    if json_depth(value) > max_depth:
        raise InvalidInputError(f"{what} is nested more than {max_depth} levels deep; send a flatter document.")
    return value


def loads_limited(
    raw: bytes | str, what: str, *, max_depth: int = MAX_JSON_DEPTH, max_bytes: int = MAX_JSON_BYTES
) -> Any:
    """``json.loads`` that refuses oversized, too deeply nested or malformed input with
    :class:`InvalidInputError` (400) naming ``what``."""
    if len(raw) > max_bytes:
        raise InvalidInputError(f"{what} is over {max_bytes} bytes; send a smaller document.")
    try:
        value = json.loads(raw)
    except RecursionError:
        raise InvalidInputError(
            f"{what} is nested more than {max_depth} levels deep; send a flatter document."
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{what} is not valid JSON: {exc}") from None
    return check_json_depth(value, what, max_depth)


class JsonBodyLimitMiddleware:
    """Pure ASGI: a JSON request body over ``max_bytes`` is refused with 413 from its
    Content-Length, before a byte of it is read; a chunked one (no length) is cut at the
    limit, so the route sees an unterminated document and answers its usual 400.

    Other bodies (images, multipart uploads) have their own limits and pass untouched, as
    do the paths in ``exempt`` (routes that read their JSON body within a limit of their own).
    """

    def __init__(self, app: Any, max_bytes: int = MAX_JSON_BYTES, exempt: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            detail = f"The JSON body is {length} bytes, over the limit of {self.max_bytes}; send a smaller document."
            body = json.dumps({"detail": detail, "code": "payload_too_large"}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 413, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        seen = 0

        async def bounded_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        await self.app(scope, bounded_receive, send)


def _header(scope: Any, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def _is_json(scope: Any) -> bool:
    content_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
    return content_type == "application/json" or content_type.endswith("+json")
