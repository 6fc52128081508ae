"""Dependencies: handlers get a session, never build one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from elpis_api.tokens import Principal, authenticate_token
from models import Task, TokenScope, session_scope, sessionmaker_for


def get_session(request: Request) -> Iterator[Session]:
    with sessionmaker_for(request.app.state.database_url)() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

# Ids are positive BIGINTs; a larger number is a 422 like any other bad parameter, not a database error
# (found by tests/integration/test_api_fuzz.py: GET /v1/batches/9223372036854775808 was a 500).
MAX_ID = 2**63 - 1
DbId = Annotated[int, Path(ge=1, le=MAX_ID)]
# A step's seq is an INTEGER column: a cursor past 2**31 - 1 was a database error too (same test found it).
MAX_SEQ = 2**31 - 1


def task_or_404(session: Session, task_id: int) -> Task:
    task = session.get(Task, task_id)
    if task is None:
        raise HTTPException(404, f"task {task_id} not found (GET /v1/tasks lists the known tasks)")
    return task


# --- authentication ----------------------------------------------------------------------------------
# The pages keep the token in this cookie (HttpOnly, SameSite=Strict) after a login.
TOKEN_COOKIE = "elpis_token"
HOW_TO_GET_A_TOKEN = (
    "send `Authorization: Bearer <token>`; an admin makes one with `elpis token create NAME --scope read` "
    "(`elpis up` keeps its own admin token in $ELPIS_HOME/api_token)"
)
_bearer = HTTPBearer(auto_error=False, description="an Elpis API token (`elpis token create NAME`)")


class LoginRequired(HTTPException):
    """A page was asked for without a valid token: answered with the login form (status 401)."""


class PageLogin(Exception):
    """A page was opened with a valid `?token=`: answered by setting the cookie and redirecting to the
    same address without the token (so it stays out of the address bar and the history)."""

    def __init__(self, token: str) -> None:
        self.token = token


def authenticate(request: Request, token: str) -> Principal | None:
    """The principal of `token` (ELPIS_API_TOKEN or a stored token), or None."""
    from configs import get_settings

    configured = get_settings().api_token.get_secret_value()
    with session_scope(request.app.state.database_url) as session:
        return authenticate_token(session, token, configured)


class RequireScope:
    """A dependency: the request carries a token (bearer header; on the pages' GETs also the cookie)
    whose scope is at least `scope`. 401 without a valid token, 403 with one of too low a scope."""

    def __init__(self, scope: TokenScope | str, *, page: bool = False) -> None:
        self.scope = TokenScope(scope)
        self.page = page

    def __call__(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        token, via_query = credentials.credentials if credentials else "", False
        # The cookie only authenticates reads: another site on the same host (same-site for SameSite)
        # must not be able to make a logged-in browser POST.
        if not token and request.method in ("GET", "HEAD"):
            token = request.cookies.get(TOKEN_COOKIE, "")
            if self.page and request.query_params.get("token"):
                token, via_query = request.query_params["token"], True
        principal = authenticate(request, token) if token else None
        if principal is None:
            what = "invalid API token (unknown or revoked)" if token else "missing API token"
            error = LoginRequired if self.page else HTTPException
            raise error(401, f"{what}: {HOW_TO_GET_A_TOKEN}", headers={"WWW-Authenticate": "Bearer"})
        if not principal.scope.allows(self.scope):
            raise HTTPException(
                403,
                f"this needs a token with scope '{self.scope}' (or higher); token '{principal.name}' "
                f"has scope '{principal.scope}' (an admin makes one: "
                f"`elpis token create NAME --scope {self.scope}`)",
            )
        if via_query:
            raise PageLogin(token)
        request.state.principal = principal
        return principal


def require_scope(scope: TokenScope | str, *, page: bool = False) -> RequireScope:
    return RequireScope(scope, page=page)


ReadScope = Annotated[Principal, Depends(require_scope(TokenScope.read))]
SubmitScope = Annotated[Principal, Depends(require_scope(TokenScope.submit))]
AdminScope = Annotated[Principal, Depends(require_scope(TokenScope.admin))]
PageScope = Annotated[Principal, Depends(require_scope(TokenScope.read, page=True))]
