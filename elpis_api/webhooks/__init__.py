"""Git provider webhooks: verify a delivery, read its event, and make at most one task of it.

`ADAPTERS` maps each provider to the code that knows its headers and payloads; `intake` writes the
delivery, its batch and task rows in one transaction.
"""

from elpis_api.webhooks.common import (
    Interpretation,
    PayloadError,
    ProviderAdapter,
    Rules,
    TaskPlan,
    vet_commenter,
)
from elpis_api.webhooks.gitea import Gitea
from elpis_api.webhooks.github import GitHub
from elpis_api.webhooks.gitlab import GitLab
from models.webhooks import Provider

ADAPTERS: dict[Provider, ProviderAdapter] = {
    Provider.github: GitHub(),
    Provider.gitlab: GitLab(),
    Provider.gitea: Gitea(),
}

__all__ = [
    "ADAPTERS",
    "Interpretation",
    "PayloadError",
    "ProviderAdapter",
    "Rules",
    "TaskPlan",
    "vet_commenter",
]
