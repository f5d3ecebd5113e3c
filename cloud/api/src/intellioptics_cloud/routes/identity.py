"""Who am I, tokens, accounts."""

from __future__ import annotations

from fastapi import APIRouter, status

from intellioptics_cloud.auth import Role
from intellioptics_cloud.deps import Admin, PrincipalDep, SessionDep
from intellioptics_cloud.models import ApiTokenRow
from intellioptics_cloud.schemas import (
    AccountCreate,
    AccountCreated,
    AccountOut,
    MeOut,
    TokenCreate,
    TokenCreated,
    TokenInfo,
)
from intellioptics_cloud.services import accounts
from intellioptics_common.schemas import ApiToken, Group

router = APIRouter(tags=["identity"])


def _info(row: ApiTokenRow) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        name=row.name,
        role=row.role,
        snippet=row.snippet,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
    )


@router.get("/me", response_model=MeOut)
def me(principal: PrincipalDep) -> MeOut:
    return MeOut(
        email=principal.email,
        username=principal.username,
        group=Group(id=principal.account_id, name=principal.account_name),
        is_superuser=principal.is_superuser,
        role=principal.role.value,
        account_id=principal.account_id,
    )


@router.get("/api-tokens/by-snippet/{snippet}", response_model=ApiToken)
def token_by_snippet(snippet: str, principal: PrincipalDep, session: SessionDep) -> ApiToken:
    row = accounts.token_by_snippet(session, principal, snippet)
    # token_ttl null: the SDK uses the token as-is and never tries to rotate it.
    return ApiToken(
        name=row.name, raw_key_snippet=row.snippet, created_at=row.created_at, last_used_at=row.last_used_at
    )


@router.post("/tokens", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
def create_token(body: TokenCreate, principal: Admin, session: SessionDep) -> TokenCreated:
    issued = accounts.create_token(session, principal, body.name, Role(body.role))
    return TokenCreated(**_info(issued.row).model_dump(), token=issued.raw)


@router.get("/tokens", response_model=list[TokenInfo])
def list_tokens(principal: Admin, session: SessionDep) -> list[TokenInfo]:
    return [_info(row) for row in accounts.list_tokens(session, principal)]


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_token(token_id: str, principal: Admin, session: SessionDep) -> None:
    accounts.delete_token(session, principal, token_id)


@router.post("/accounts", response_model=AccountCreated, status_code=status.HTTP_201_CREATED)
def create_account(body: AccountCreate, principal: Admin, session: SessionDep) -> AccountCreated:
    account, raw = accounts.create_account(session, principal, body.name)
    return AccountCreated(account=AccountOut(id=account.id, name=account.name), admin_token=raw)
