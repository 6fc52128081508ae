"""One request to a provider's REST API, and what its failures mean: `ForgeUnavailable` when another
try may work (the network, a 5xx or 429, a 403 with Retry-After: GitHub's secondary rate limit),
`ForgeError` for anything else. Redirects are not followed: a token goes to the configured host only."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from typing import Any

import httpx

from elpis_worker.forges.errors import ForgeError, ForgeUnavailable

__all__ = ["NOT_FOUND", "call", "retry_after"]

# What `call` answers for a 404 when asked to (`not_found_ok`): a role lookup's "no such member".
NOT_FOUND: Any = object()


def call(
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    timeout: float,
    body: dict[str, Any] | None = None,
    not_found_ok: bool = False,
) -> Any:
    """The answer's JSON (None when it is not JSON), NOT_FOUND for a 404 when `not_found_ok`."""
    try:
        response = httpx.request(
            method, url, headers=headers, json=body, timeout=timeout, follow_redirects=False
        )
    except httpx.UnsupportedProtocol as exc:
        raise ForgeError(f"{method} {url} failed: {exc}") from exc
    except httpx.TransportError as exc:
        raise ForgeUnavailable(f"{method} {url} failed: {exc or type(exc).__name__}") from exc
    except httpx.HTTPError as exc:
        raise ForgeError(f"{method} {url} failed: {exc or type(exc).__name__}") from exc
    status = response.status_code
    if status == 404 and not_found_ok:
        return NOT_FOUND
    if status >= 400:
        hint = " (check the provider's api_token and its rights)" if status in (401, 403) else ""
        message = f"{method} {url} answered {status}{hint}: {response.text[:200]}"
        wait = retry_after(response)
        if status == 429 or status >= 500 or (status == 403 and wait is not None):
            raise ForgeUnavailable(message, retry_after=wait)
        raise ForgeError(message)
    try:
        return response.json()
    except ValueError:
        return None


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (it may be a number of seconds or an HTTP date), None when absent."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
