"""Roles of API tokens and what each may do: the one table the cloud and the edge enforce.

The cloud checks it on every route; the edge checks it for the routes it answers itself,
from the role the cloud reported for the caller's token (``GET /v1/me``). One table, so
that a reviewer can do on an edge exactly what it can do in the cloud, no more.
"""

from __future__ import annotations

from enum import Enum


class Role(str, Enum):
    ADMIN = "admin"
    REVIEWER = "reviewer"
    DEVICE = "device"
    WORKER = "worker"


class Permission(str, Enum):
    READ = "read"  # detectors, image queries, stats
    SUBMIT = "submit"  # image queries
    REVIEW = "review"  # review queue, labels
    MANAGE = "manage"  # detectors, tokens, models, training jobs; an edge's edge-config
    EDGE = "edge"  # register/heartbeat, fetch models; an edge's gl.edge reads
    WORK = "work"  # claim and report training jobs, read datasets


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.REVIEWER: frozenset({Permission.READ, Permission.REVIEW}),
    Role.DEVICE: frozenset({Permission.READ, Permission.SUBMIT, Permission.EDGE}),
    Role.WORKER: frozenset({Permission.READ, Permission.WORK}),
}


def role_allows(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]


def roles_with(permission: Permission) -> list[str]:
    """The role names that hold ``permission``, in table order (for error messages)."""
    return [role.value for role, allowed in ROLE_PERMISSIONS.items() if permission in allowed]
