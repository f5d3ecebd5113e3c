"""FastAPI dependencies: the app state and the verified, authorised caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from intellioptics_common.ratelimit import client_address
from intellioptics_common.roles import Permission
from intellioptics_common.schemas import Me
from intellioptics_edge.auth import LOCAL_IDENTITY
from intellioptics_edge.state import EdgeState


def get_state(request: Request) -> EdgeState:
    return request.app.state.edge


StateDep = Annotated[EdgeState, Depends(get_state)]


def caller_address(request: Request) -> str:
    """The client's IP for the failed-token limiter (through the gateway: its X-Forwarded-For)."""
    state: EdgeState = request.app.state.edge
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.get("x-forwarded-for"), state.settings.trusted_proxy_networks)


@dataclass(frozen=True)
class Caller:
    """A caller the edge checked and allowed: its token (for calls to the cloud) and identity."""

    token: str
    identity: Me

    @property
    def local(self) -> bool:
        return self.identity is LOCAL_IDENTITY


async def authorize(request: Request, permission: Permission) -> Caller:
    """401 when the token is missing or refused, 429 after too many refusals from the
    caller's address, 403 for another account's token or a role without ``permission``."""
    state: EdgeState = request.app.state.edge
    token = request.headers.get("x-api-token")
    identity = await state.tokens.authorize(token, caller_address(request), permission)
    assert token is not None
    return Caller(token, identity)


def allowed(permission: Permission) -> Callable[..., Awaitable[Caller]]:
    # x_api_token is declared so that the OpenAPI shows the header (FastAPI names the header
    # after the parameter, so it keeps its name); authorize reads it.
    async def dependency(request: Request, x_api_token: Annotated[str | None, Header()] = None) -> Caller:  # noqa: ARG001
        return await authorize(request, permission)

    return dependency


Reader = Annotated[Caller, Depends(allowed(Permission.READ))]  # every role of the edge's account
Submitter = Annotated[Caller, Depends(allowed(Permission.SUBMIT))]  # admin, device: new queries
EdgeUser = Annotated[Caller, Depends(allowed(Permission.EDGE))]  # admin, device: gl.edge reads
EdgeAdmin = Annotated[Caller, Depends(allowed(Permission.MANAGE))]  # admin: PUT /edge-config
