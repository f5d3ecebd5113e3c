"""FastAPI dependencies: the app state and the verified caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from intellioptics_common.schemas import Me
from intellioptics_edge.state import EdgeState


def get_state(request: Request) -> EdgeState:
    return request.app.state.edge


StateDep = Annotated[EdgeState, Depends(get_state)]


async def get_token(state: StateDep, x_api_token: Annotated[str | None, Header()] = None) -> str:
    """The caller's token, once checked (401 when missing or refused)."""
    await state.tokens.verify(x_api_token)
    assert x_api_token is not None
    return x_api_token


TokenDep = Annotated[str, Depends(get_token)]


async def get_identity(state: StateDep, x_api_token: Annotated[str | None, Header()] = None) -> Me:
    return await state.tokens.verify(x_api_token)


IdentityDep = Annotated[Me, Depends(get_identity)]
