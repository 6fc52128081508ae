"""API tokens over REST, for admins: list them, make one (its secret is in this answer only), revoke
one. `elpis token` does the same on the database directly (it is how the first token is made)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field

from elpis_api.deps import AdminScope, SessionDep
from elpis_api.tokens import TokenError, create_token, list_tokens, revoke_token
from models import TokenScope

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(..., min_length=1, max_length=64, description="who or what uses it")
    scope: TokenScope = TokenScope.read


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    scope: TokenScope
    created_at: datetime | None = None
    last_used_at: datetime | None = None


class TokenCreated(TokenOut):
    token: str = Field(..., description="the token itself; shown only in this answer")


@router.get("", response_model=list[TokenOut])
def get_tokens(session: SessionDep, token: AdminScope) -> list[TokenOut]:
    return [TokenOut.model_validate(t) for t in list_tokens(session)]


@router.post("", status_code=201, response_model=TokenCreated)
def post_token(body: TokenIn, session: SessionDep, token: AdminScope) -> TokenCreated:
    with session.begin():
        try:
            row, secret = create_token(session, name=body.name, scope=body.scope)
        except TokenError as exc:
            raise HTTPException(409 if "exists" in str(exc) else 422, str(exc)) from exc
        out = TokenCreated(name=row.name, scope=row.scope, created_at=row.created_at, token=secret)
    return out


@router.delete("/{name}", status_code=204)
def delete_token(name: str, session: SessionDep, token: AdminScope) -> Response:
    with session.begin():
        if not revoke_token(session, name=name):
            raise HTTPException(404, f"no token named '{name}' (GET /v1/tokens lists them)")
    return Response(status_code=204)
