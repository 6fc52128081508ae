"""API tokens: make, find, list and revoke them; and the local secrets `elpis up` generates.

A token is `elpis_` + 32 random bytes (urlsafe base64), shown once; the database keeps its sha256.
`api_token` (ELPIS_API_TOKEN) is an admin token that lives in the configuration instead of the
database: it is how `elpis up` and the CLI reach their own API.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from configs import Settings
from configs.errors import ElpisError
from models import ApiToken, TokenScope

__all__ = [
    "CONFIG_TOKEN_NAME",
    "Principal",
    "TokenError",
    "api_token_file",
    "authenticate_token",
    "configured_api_token",
    "create_token",
    "ensure_api_token",
    "ensure_flower_auth",
    "flower_auth_file",
    "hash_token",
    "list_tokens",
    "revoke_token",
]

TOKEN_PREFIX = "elpis_"
CONFIG_TOKEN_NAME = "api_token (config)"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
# last_used_at is written at most this often per token, not on every request.
_TOUCH_EVERY = timedelta(minutes=1)


class TokenError(ElpisError, ValueError):
    """A token cannot be made or revoked; the message says why."""


@dataclass(frozen=True)
class Principal:
    """Who a request authenticated as."""

    name: str
    scope: TokenScope


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, *, name: str, scope: TokenScope) -> tuple[ApiToken, str]:
    """Stage a new token in the session's transaction; returns the row and the token (shown once)."""
    if not _NAME.match(name):
        raise TokenError(
            f"token name {name!r} must be 1-64 letters, digits, '_', '.', '@' or '-', starting with a "
            "letter or digit"
        )
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise TokenError(f"a token named {name!r} exists; revoke it first or choose another name")
    secret = new_secret()
    row = ApiToken(name=name, scope=scope, token_sha256=hash_token(secret))
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:  # made at the same moment by another caller
        raise TokenError(f"a token named {name!r} exists; revoke it first or choose another name") from exc
    return row, secret


def revoke_token(session: Session, *, name: str) -> bool:
    """Delete the named token; False when there was none."""
    return bool(session.execute(delete(ApiToken).where(ApiToken.name == name)).rowcount)


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.name)))


def authenticate_token(session: Session, token: str, configured: str = "") -> Principal | None:
    """The principal `token` stands for, or None. Compared in constant time: a request's timing says
    nothing about how much of a token was right."""
    if not token:
        return None
    if configured and hmac.compare_digest(token.encode(), configured.encode()):
        return Principal(CONFIG_TOKEN_NAME, TokenScope.admin)
    digest = hash_token(token)
    row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == digest))
    if row is None or not hmac.compare_digest(row.token_sha256, digest):
        return None
    now = datetime.now(UTC)
    if row.last_used_at is None or now - row.last_used_at > _TOUCH_EVERY:
        row.last_used_at = now  # committed with the caller's unit of work
    return Principal(row.name, row.scope)


# --- the secrets `elpis up` keeps under $ELPIS_HOME -------------------------------------------------
def api_token_file(settings: Settings) -> Path:
    return settings.home_dir / "api_token"


def flower_auth_file(settings: Settings) -> Path:
    return settings.home_dir / "flower_auth"


def _read_secret(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _write_secret(path: Path, value: str) -> None:
    """Written 0600 from the start: the file is never readable by others, not even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    os.chmod(path, 0o600)


def configured_api_token(settings: Settings) -> str:
    """ELPIS_API_TOKEN / api_token, else the one `elpis up` keeps in $ELPIS_HOME/api_token, else ''."""
    return settings.api_token.get_secret_value() or _read_secret(api_token_file(settings))


def ensure_api_token(settings: Settings) -> tuple[str, Path | None]:
    """The admin token the processes `elpis up` starts share: the configured one, or the one in
    $ELPIS_HOME/api_token (made there on first use). The path is None when it came from the config."""
    if settings.api_token.get_secret_value():
        return settings.api_token.get_secret_value(), None
    path = api_token_file(settings)
    token = _read_secret(path)
    if not token:
        token = new_secret()
        _write_secret(path, token)
    return token, path


def ensure_flower_auth(settings: Settings) -> tuple[str, Path | None]:
    """Flower's "user:password": configured, or kept in $ELPIS_HOME/flower_auth (made on first use)."""
    if settings.flower_basic_auth.get_secret_value():
        return settings.flower_basic_auth.get_secret_value(), None
    path = flower_auth_file(settings)
    auth = _read_secret(path)
    if ":" not in auth:
        auth = f"elpis:{secrets.token_urlsafe(18)}"
        _write_secret(path, auth)
    return auth, path
