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
