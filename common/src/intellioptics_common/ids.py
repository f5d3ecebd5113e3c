"""Identifiers in Groundlight's shape: ``<prefix>_`` + 27 base62 characters (KSUID-like).

The first characters encode the creation second, so ids sort roughly by time.
"""

from __future__ import annotations

import re
import secrets
import time

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LENGTH = 27
_KSUID_EPOCH = 1_400_000_000

DETECTOR_PREFIX = "det"
IMAGE_QUERY_PREFIX = "iq"

# Accepts our own ids and Groundlight's; the strict alphabet also rules out path traversal.
_ID_PATTERN = re.compile(r"^(?P<prefix>[a-z]{2,5})_[A-Za-z0-9]{8,64}$")


def new_id(prefix: str) -> str:
    """A new time-sortable id such as ``det_2Hk…``."""
    payload = int(time.time() - _KSUID_EPOCH).to_bytes(4, "big") + secrets.token_bytes(16)
    number = int.from_bytes(payload, "big")
    chars = []
    while number:
        number, remainder = divmod(number, 62)
        chars.append(_ALPHABET[remainder])
    body = "".join(reversed(chars)).rjust(_BODY_LENGTH, "0")
    return f"{prefix}_{body}"


def is_valid_id(value: str, prefix: str) -> bool:
    match = _ID_PATTERN.match(value)
    return match is not None and match.group("prefix") == prefix
