"""FastAPI dependencies: resources from app.state, a session per request, the caller."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from intellioptics_cloud.auth import Permission, Principal, hash_token
from intellioptics_cloud.resources import Resources
from intellioptics_cloud.services import accounts
from intellioptics_common.errors import AuthenticationError, PermissionDeniedError
from intellioptics_common.ratelimit import CALLER_HEADER, VOUCHER_HEADER, FailedAuthLimiter, client_address


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


def failure_keys(request: Request, session: Session) -> list[str]:
    """What a refused token counts against: the client's address; or, when an edge asks on
    a caller's behalf (``CALLER_HEADER``, vouched for by a valid edge token in
    ``VOUCHER_HEADER``), that caller's address as that edge saw it and the token tried,
    never the edge's own address: a guesser at an edge must not lock the edge out."""
    limiter: FailedAuthLimiter = request.app.state.auth_limiter
    peer = client_address(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        request.app.state.trusted_proxies,
    )
    caller, voucher = request.headers.get(CALLER_HEADER), request.headers.get(VOUCHER_HEADER)
    if not caller or not voucher:
        return [peer]
    limiter.check(peer)  # a refused voucher counts against the peer: check it first
    try:
        edge = accounts.authenticate(session, voucher.strip())
    except AuthenticationError:
        limiter.record_failure(peer)
        raise AuthenticationError(
            f"The {VOUCHER_HEADER} header is not a valid token: an edge vouches for its callers with its device token."
        ) from None
    if not edge.allows(Permission.EDGE):
        raise PermissionDeniedError(f"Only an edge's device or admin token may send {CALLER_HEADER}.")
    raw = _raw_token(request) or ""
    return [f"edge {edge.token_id} caller {caller.strip()[:64]}", f"token {hash_token(raw)}"]


def get_principal(request: Request, session: SessionDep) -> Principal:
    checked = getattr(request.state, "principal", None)
    if isinstance(checked, Principal):  # by the TokenFirstMiddleware, before the body was read
        return checked
    limiter: FailedAuthLimiter = request.app.state.auth_limiter
    keys = failure_keys(request, session)
    for key in keys:
        limiter.check(key)  # before the lookup: a blocked client costs no query
    raw = _raw_token(request)
    try:
        principal = accounts.authenticate(session, raw)
    except AuthenticationError:
        if raw:  # a missing token is a mistake, a wrong one may be a guess
            for key in keys:
                limiter.record_failure(key)
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
