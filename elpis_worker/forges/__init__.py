"""Forges: one adapter per Git provider (GitHub, GitLab, Gitea), covering both directions.

Inbound, a webhook delivery is verified, read through pydantic payload models and made into at most one
task (`Forge.interpret`, then `Forge.vet_commenter` where the commenter's role must be asked of the API).
Outbound, the same adapter builds clone and push URLs and push credentials from the configuration, looks
up a pull request's head, and comments back (`elpis_worker.results` uses it). `FORGES[provider]` is the
adapter; base.py holds what every provider shares, each provider's module what is its own.
"""

from elpis_worker.forges.base import ROLE_NONE, Forge, PullRequestHead
from elpis_worker.forges.errors import ForgeError, ForgeUnavailable, PayloadError, Unverified
from elpis_worker.forges.gitea import Gitea
from elpis_worker.forges.github import GitHub
from elpis_worker.forges.gitlab import GitLab
from elpis_worker.forges.plans import Commenter, Interpretation, TaskPlan
from elpis_worker.forges.rules import Rules
from models.webhooks import Provider

FORGES: dict[Provider, Forge] = {
    Provider.github: GitHub(),
    Provider.gitlab: GitLab(),
    Provider.gitea: Gitea(),
}

__all__ = [
    "FORGES",
    "ROLE_NONE",
    "Commenter",
    "Forge",
    "ForgeError",
    "ForgeUnavailable",
    "Interpretation",
    "PayloadError",
    "PullRequestHead",
    "Rules",
    "TaskPlan",
    "Unverified",
]
