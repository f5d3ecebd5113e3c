"""Accounts, users and API tokens; authentication of a raw token into a Principal."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from intellioptics_cloud.auth import Principal, Role, hash_token, new_token, snippet
from intellioptics_cloud.models import Account, ApiTokenRow, User, utcnow
from intellioptics_common.errors import AuthenticationError, ConflictError, NotFoundError, PermissionDeniedError
from intellioptics_common.ids import new_id

logger = logging.getLogger(__name__)

DEFAULT_ACCOUNT = "default"


@dataclass(frozen=True)
class IssuedToken:
    row: ApiTokenRow
    raw: str


def _issue(session: Session, account_id: int, user: User, name: str, role: Role, raw: str | None = None) -> IssuedToken:
    raw = raw or new_token()
    row = ApiTokenRow(
        id=new_id("tok"),
        account_id=account_id,
        user_id=user.id,
        name=name,
        role=role.value,
        token_hash=hash_token(raw),
        snippet=snippet(raw),
        created_at=utcnow(),
    )
    session.add(row)
    return IssuedToken(row, raw)


def _new_user(session: Session, account: Account, username: str, *, superuser: bool = False) -> User:
    slug = "".join(c if c.isalnum() else "-" for c in username.lower()).strip("-") or "user"
    user = User(
        id=new_id("usr"),
        account_id=account.id,
        username=username,
        email=f"{slug}@{account.name}.intellioptics.local",
        is_superuser=superuser,
        created_at=utcnow(),
    )
    session.add(user)
    session.flush()
    return user


def bootstrap(session: Session, configured_token: str | None) -> str | None:
    """On the very first start: the default account and its superuser admin token.

    Returns the raw token when one was generated (the caller prints it once), else None.
    """
    if session.scalar(select(func.count()).select_from(Account)):
        return None
    try:
        account = Account(name=DEFAULT_ACCOUNT, created_at=utcnow())
        session.add(account)
        session.flush()
        user = _new_user(session, account, "admin", superuser=True)
        issued = _issue(session, account.id, user, "bootstrap", Role.ADMIN, configured_token)
        session.commit()
    except IntegrityError:
        # Another replica bootstrapped between our check and our insert.
        session.rollback()
        return None
    return None if configured_token else issued.raw


def authenticate(session: Session, raw: str | None) -> Principal:
    if not raw:
        raise AuthenticationError("Send an API token in the x-api-token header (or Authorization: Bearer).")
    row = session.execute(
        select(ApiTokenRow, User, Account)
        .join(User, User.id == ApiTokenRow.user_id)
        .join(Account, Account.id == ApiTokenRow.account_id)
        .where(ApiTokenRow.token_hash == hash_token(raw))
    ).first()
    if row is None:
        raise AuthenticationError("The API token is not valid (unknown or revoked).")
    token, user, account = row
    now = utcnow()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        # Throttled so that reads do not each become a write.
        token.last_used_at = now
        session.commit()
    return Principal(
        token_id=token.id,
        user_id=user.id,
        account_id=account.id,
        account_name=account.name,
        role=Role(token.role),
        username=user.username,
        email=user.email,
        is_superuser=user.is_superuser,
    )


def create_account(session: Session, principal: Principal, name: str) -> tuple[Account, str]:
    if not principal.is_superuser:
        raise PermissionDeniedError("Only a superuser token may create accounts.")
    account = Account(name=name, created_at=utcnow())
    session.add(account)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise ConflictError(f"An account named {name!r} already exists.") from None
    user = _new_user(session, account, "admin")
    issued = _issue(session, account.id, user, "admin", Role.ADMIN)
    session.commit()
    return account, issued.raw


def create_token(session: Session, principal: Principal, name: str, role: Role) -> IssuedToken:
    """A token for a new user of the caller's account (each reviewer is a person)."""
    account = session.get(Account, principal.account_id)
    assert account is not None
    user = _new_user(session, account, name)
    issued = _issue(session, account.id, user, name, role)
    session.commit()
    return issued


def list_tokens(session: Session, principal: Principal) -> list[ApiTokenRow]:
    return list(
        session.scalars(
            select(ApiTokenRow).where(ApiTokenRow.account_id == principal.account_id).order_by(ApiTokenRow.created_at)
        )
    )


def delete_token(session: Session, principal: Principal, token_id: str) -> None:
    row = session.get(ApiTokenRow, token_id)
    if row is None or row.account_id != principal.account_id:
        raise NotFoundError(f"Token {token_id} not found.")
    if row.id == principal.token_id:
        raise ConflictError("A token cannot delete itself; use another admin token.")
    session.delete(row)
    session.commit()


def token_by_snippet(session: Session, principal: Principal, value: str) -> ApiTokenRow:
    row = session.scalars(
        select(ApiTokenRow).where(ApiTokenRow.account_id == principal.account_id, ApiTokenRow.snippet == value)
    ).first()
    if row is None:
        raise NotFoundError("No token with that snippet.")
    return row
