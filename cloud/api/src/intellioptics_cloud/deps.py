"""FastAPI dependencies: resources from app.state, a session per request, the caller."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from intellioptics_cloud.auth import Permission, Principal
from intellioptics_cloud.resources import Resources
from intellioptics_cloud.services import accounts
from intellioptics_common.errors import AuthenticationError
from intellioptics_common.ratelimit import FailedAuthLimiter, client_address


def get_resources(request: Request) -> Resources:
    return request.app.state.resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def get_session(resources: ResourcesDep) -> Iterator[Session]:
    session = resources.sessions()
    try:
        yield session
    finally:
        session.rollback()  # anything a failed request left uncommitted goes
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def _raw_token(request: Request) -> str | None:
    token = request.headers.get("x-api-token")
    if token:
        return token.strip()
    authorization = request.headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def get_principal(request: Request, session: SessionDep) -> Principal:
    limiter: FailedAuthLimiter = request.app.state.auth_limiter
    client = client_address(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        request.app.state.trusted_proxies,
    )
    limiter.check(client)  # before the lookup: a blocked client costs no query
    raw = _raw_token(request)
    try:
        principal = accounts.authenticate(session, raw)
    except AuthenticationError:
        if raw:  # a missing token is a mistake, a wrong one may be a guess
            limiter.record_failure(client)
        raise
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*permissions: Permission) -> Callable[[Principal], Principal]:
    """A dependency that lets the call through when the caller has any of ``permissions``."""

    def check(principal: PrincipalDep) -> Principal:
        if any(principal.allows(p) for p in permissions):
            return principal
        principal.require(permissions[-1])  # raises with a message naming what is missing
        return principal

    return check


Reader = Annotated[Principal, Depends(require(Permission.READ))]
Submitter = Annotated[Principal, Depends(require(Permission.SUBMIT))]
Reviewer = Annotated[Principal, Depends(require(Permission.REVIEW))]
Admin = Annotated[Principal, Depends(require(Permission.MANAGE))]
EdgeDevice = Annotated[Principal, Depends(require(Permission.EDGE))]
Worker = Annotated[Principal, Depends(require(Permission.WORK))]
# Workers register the versions they train (and may activate them under the auto policy).
ModelWriter = Annotated[Principal, Depends(require(Permission.WORK, Permission.MANAGE))]
ModelReader = Annotated[Principal, Depends(require(Permission.EDGE, Permission.WORK, Permission.MANAGE))]
