"""FastAPI dependencies: the app state and the verified caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from intellioptics_common.ratelimit import client_address
from intellioptics_common.schemas import Me
from intellioptics_edge.state import EdgeState


def get_state(request: Request) -> EdgeState:
    return request.app.state.edge


StateDep = Annotated[EdgeState, Depends(get_state)]


def caller_address(request: Request) -> str:
    """The client's IP for the failed-token limiter (through the gateway: its X-Forwarded-For)."""
    state: EdgeState = request.app.state.edge
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.get("x-forwarded-for"), state.settings.trusted_proxy_networks)


async def get_token(request: Request, state: StateDep, x_api_token: Annotated[str | None, Header()] = None) -> str:
    """The caller's token, once checked (401 when missing or refused, 429 after too many refusals)."""
    await state.tokens.verify(x_api_token, caller_address(request))
    assert x_api_token is not None
    return x_api_token


TokenDep = Annotated[str, Depends(get_token)]


async def get_identity(request: Request, state: StateDep, x_api_token: Annotated[str | None, Header()] = None) -> Me:
    return await state.tokens.verify(x_api_token, caller_address(request))


IdentityDep = Annotated[Me, Depends(get_identity)]
