"""What goes wrong between Elpis and a Git provider, in both directions: a delivery that is not signed
with a configured secret or a payload without a field its event needs (inbound), a repository without a
URL to build, or an API that could not be asked or answered something unusable (outbound)."""

from __future__ import annotations

from configs.errors import ElpisError

__all__ = ["ForgeError", "ForgeUnavailable", "PayloadError", "Unverified"]


class PayloadError(ElpisError, ValueError):
    """A verified payload lacks a field its event must have, or holds one that is not usable; the
    message names the payload field (the webhook answers 422 with it)."""


class Unverified(ElpisError):
    """A delivery's signature or token matches none of the configured secrets; the message says why
    (the webhook answers 401 with it)."""


class ForgeError(ElpisError):
    """A repository has no URL to build (a bad name, no web_url), or a provider could not be asked or
    answered something unusable; the message says which and why."""


class ForgeUnavailable(ForgeError):
    """A failure of the provider rather than of the request (the network, a 5xx, a 429, GitHub's
    secondary rate limit): worth another try. `retry_after` holds the seconds the provider asked to
    wait (Retry-After), if it said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
