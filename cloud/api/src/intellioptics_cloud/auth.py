"""API tokens, and the caller as the services see it (the role table is in
``intellioptics_common.roles``, shared with the edge).

Tokens are 40 random base62 characters after an ``io_`` prefix, so a plain SHA-256 is
the right hash at rest: there is nothing to brute-force that a slow hash would protect
(that is for low-entropy passwords), and lookups stay a single indexed equality.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

from intellioptics_common.errors import PermissionDeniedError
from intellioptics_common.roles import Permission, Role, role_allows

_ALPHABET = string.ascii_letters + string.digits
SNIPPET_LENGTH = 20  # what the SDK sends to /v1/api-tokens/by-snippet


@dataclass(frozen=True)
class Principal:
    """Who is calling: every service call is scoped to ``account_id``."""

    token_id: str
    user_id: str
    account_id: int
    account_name: str
    role: Role
    username: str
    email: str
    is_superuser: bool

    def allows(self, permission: Permission) -> bool:
        return role_allows(self.role, permission)

    def require(self, permission: Permission) -> None:
        if not self.allows(permission):
            raise PermissionDeniedError(f"A {self.role.value} token may not do this (needs '{permission.value}').")


def new_token() -> str:
    return "io_" + "".join(secrets.choice(_ALPHABET) for _ in range(40))


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def snippet(raw: str) -> str:
    return raw[:SNIPPET_LENGTH]


def sign(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def verify_signature(secret: str, message: str, signature: str) -> bool:
    # Bytes, not str: compare_digest raises TypeError on non-ASCII str (a fuzzed URL gave a 500).
    return hmac.compare_digest(sign(secret, message).encode(), signature.encode())
