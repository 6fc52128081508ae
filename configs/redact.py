"""Keep secrets out of what Elpis prints: passwords in URLs, token query parameters, and the values of
the secret settings, wherever they turn up (a log line, an error message, a health answer)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from configs.settings import Settings

__all__ = ["MASK", "redact", "redact_url", "settings_secrets"]

MASK = "***"
# scheme://user:password@host -> scheme://user:***@host (the user name is kept: it helps debugging).
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][\w+.-]*://[^\s/:@]*:)(?P<password>[^\s@/]+)(?P<tail>@)")
# ?token=... / &token=... (the pages' one-time login link)
_TOKEN_PARAM = re.compile(r"(?P<head>[?&](?:token|access_token)=)(?P<token>[^\s&#\"']+)")
# Shorter values would mask ordinary words ("elpis", "test").
_MIN_SECRET = 6


def redact_url(url: str) -> str:
    """The URL with its password (if any) replaced by ***."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['tail']}", url)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with URL passwords, token parameters and each of `secrets` replaced by ***."""
    text = redact_url(text)
    text = _TOKEN_PARAM.sub(lambda m: f"{m['head']}{MASK}", text)
    for secret in sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _url_password(url: str) -> str:
    match = _URL_PASSWORD.search(url)
    return match["password"] if match else ""


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret value the settings hold: tokens, webhook secrets, the model server's key, passwords
    in the server URLs."""
    values = [
        settings.api_token.get_secret_value(),
        settings.flower_basic_auth.get_secret_value().partition(":")[2],
        settings.model.api_key.get_secret_value(),
        _url_password(settings.database_url.get_secret_value()),
        _url_password(settings.broker_url.get_secret_value()),
    ]
    hooks = settings.webhooks
    for provider in (hooks.github, hooks.gitlab, hooks.gitea):
        values += [s.get_secret_value() for s in (provider.secret, provider.api_token, provider.push_token)]
    values += [repo.secret.get_secret_value() for repo in hooks.repositories.values()]
    return [v for v in values if v]
