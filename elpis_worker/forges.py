"""What Elpis trusts about a Git provider (a forge) beyond its signed webhooks: where a repository lives.

A webhook payload is signed by the provider, but a URL in it still names whatever host or path its
fields say (a local path, `file://`, another server): so a repository's clone and push URL is built
from the operator's `webhooks.<provider>.web_url` and the repository's full name, and the full name
must be a plain `owner/name` (GitLab: `group/.../project`).
"""

from __future__ import annotations

import re

from configs.settings import WebhookProviderSettings, WebhookSettings
from models.webhooks import Provider

__all__ = ["ForgeError", "clone_url", "full_name_problem"]

# One path segment of a repository's full name: what GitHub, GitLab and Gitea allow in owner, group and
# repository names. No '/', ':', '%', '@', '\', whitespace or control characters can get through.
_SEGMENT = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,99}")
_MAX_FULL_NAME = 255


class ForgeError(Exception):
    """A repository has no URL to build (a bad name, no web_url); the message says which and why."""


def provider_settings(settings: WebhookSettings, provider: Provider) -> WebhookProviderSettings:
    return getattr(settings, provider.value)


# --- where a repository lives ---------------------------------------------------------------------------


def full_name_problem(provider: Provider, full_name: str) -> str | None:
    """Why `full_name` is not a repository name this provider could have (None when it is one):
    `owner/name` segments (GitLab also `group/subgroup/.../project`), no '..', no scheme, no spaces."""
    if len(full_name) > _MAX_FULL_NAME:
        return f"is longer than {_MAX_FULL_NAME} characters"
    parts = full_name.split("/")
    if provider == Provider.gitlab:
        if len(parts) < 2:
            return f"{full_name!r} is not a project path (group/project, or group/subgroup/.../project)"
    elif len(parts) != 2:
        return f"{full_name!r} is not a repository name (owner/name)"
    for part in parts:
        if not _SEGMENT.fullmatch(part) or ".." in part or part == ".":
            return (
                f"{full_name!r} is not a repository name: each part may hold only letters, digits, "
                "'_', '-' and '.', and no '..'"
            )
    return None


def clone_url(settings: WebhookSettings, provider: Provider, full_name: str) -> str:
    """The URL a repository is cloned from and pushed to: `<web_url>/<full name>.git`, from the
    operator's configuration and a checked name, never from a payload."""
    problem = full_name_problem(provider, full_name)
    if problem:
        raise ForgeError(problem)
    base = provider_settings(settings, provider).web_url
    if not base:
        raise ForgeError(f"webhooks.{provider.value}.web_url is not set (where its repositories live)")
    return f"{base if base.endswith('/') else base + '/'}{full_name}.git"
