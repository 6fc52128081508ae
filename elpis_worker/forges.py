"""What Elpis trusts about a Git provider (a forge) beyond its signed webhooks: where a repository lives,
how its REST API is called, and what role a user holds in a repository.

A webhook payload is signed by the provider, but a URL in it still names whatever host or path its
fields say (a local path, `file://`, another server): so a repository's clone and push URL is built
from the operator's `webhooks.<provider>.web_url` and the repository's full name, and the full name
must be a plain `owner/name` (GitLab: `group/.../project`). Roles come from the provider's API with
the token the results publisher uses; an answer that cannot be had is an error, never a permission.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import httpx

from configs.settings import WebhookProviderSettings, WebhookSettings
from models.webhooks import Provider

__all__ = [
    "ForgeError",
    "ROLE_NONE",
    "api_headers",
    "clone_url",
    "commenter_role",
    "full_name_problem",
]

ROLE_NONE = "NONE"
# One path segment of a repository's full name: what GitHub, GitLab and Gitea allow in owner, group and
# repository names. No '/', ':', '%', '@', '\', whitespace or control characters can get through.
_SEGMENT = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,99}")
_MAX_FULL_NAME = 255
# GitLab's access levels, as the names of GitHub's author_association (the comment_associations lists):
# Owner, Maintainer (MEMBER) and Developer (COLLABORATOR) can push; Reporter, Guest and Minimal cannot.
_GITLAB_ROLES = {50: "OWNER", 40: "MEMBER", 30: "COLLABORATOR"}
# Gitea's repository permissions, the same way: owner, admin and write can push; read and none cannot.
_GITEA_ROLES = {"owner": "OWNER", "admin": "MEMBER", "write": "COLLABORATOR"}


class ForgeError(Exception):
    """A repository has no URL to build (a bad name, no web_url), or a provider could not be asked or
    answered something unusable; the message says which and why."""


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


# --- the REST API ---------------------------------------------------------------------------------------


def api_headers(provider: Provider, token: str) -> dict[str, str]:
    """Each provider's own way of taking a token (none sent when `token` is empty)."""
    headers = {"Accept": "application/json", "User-Agent": "elpis"}
    if provider == Provider.github:
        headers.update({"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"})
        if token:
            headers["Authorization"] = f"Bearer {token}"
    elif provider == Provider.gitlab:
        if token:
            headers["PRIVATE-TOKEN"] = token
    elif token:
        headers["Authorization"] = f"token {token}"
    return headers


def commenter_role(
    settings: WebhookSettings,
    provider: Provider,
    *,
    repository: str,
    project_id: str | None,
    user: str | int,
) -> str:
    """The role `user` holds in `repository`, in the names of GitHub's author_association (OWNER,
    MEMBER, COLLABORATOR, or NONE for anyone who cannot push), as GitLab's or Gitea's API says it:
    GitLab by user id (GET projects/:id/members/all/:user_id, inherited memberships included), Gitea by
    user name (GET repos/:owner/:repo/collaborators/:name/permission). A 404 (not a member, no such
    user) is NONE; anything else the API cannot answer raises ForgeError, so no one is let in because
    the provider could not be reached."""
    ps = provider_settings(settings, provider)
    api = ps.api_url.rstrip("/")
    if not api:
        raise ForgeError(f"webhooks.{provider.value}.api_url is not set")
    who = quote(str(user), safe="")
    if provider == Provider.gitlab:
        url = f"{api}/projects/{project_id or quote(repository, safe='')}/members/all/{who}"
    elif provider == Provider.gitea:
        url = f"{api}/repos/{quote(repository, safe='/')}/collaborators/{who}/permission"
    else:
        raise ForgeError(f"{provider.value} roles come from the payload's author_association")
    data = _get(url, api_headers(provider, ps.api_token.get_secret_value()), settings.api_timeout)
    if data is None:
        return ROLE_NONE
    if provider == Provider.gitlab:
        level = data.get("access_level")
        if isinstance(level, bool) or not isinstance(level, int):
            raise ForgeError(f"GET {url} answered without an access_level")
        return _gitlab_role(level)
    permission = data.get("permission")
    if not isinstance(permission, str):
        raise ForgeError(f"GET {url} answered without a permission")
    return _GITEA_ROLES.get(permission.lower(), ROLE_NONE)


def _gitlab_role(level: int) -> str:
    """A custom role is at least its base level, so the highest named level at or below it counts."""
    for floor in sorted(_GITLAB_ROLES, reverse=True):
        if level >= floor:
            return _GITLAB_ROLES[floor]
    return ROLE_NONE


def _get(url: str, headers: dict[str, str], timeout: float) -> dict[str, Any] | None:
    """GET a JSON object; None for a 404. Every other failure is a ForgeError naming the URL."""
    try:
        response = httpx.get(url, headers=headers, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise ForgeError(f"GET {url} failed: {exc or type(exc).__name__}") from exc
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        denied = response.status_code in (401, 403)
        hint = " (check the provider's api_token and its rights)" if denied else ""
        raise ForgeError(f"GET {url} answered {response.status_code}{hint}: {response.text[:200]}")
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ForgeError(f"GET {url} did not answer a JSON object")
    return data
