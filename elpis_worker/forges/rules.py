"""The operator's webhook rules (`webhooks.*`) as one provider sees them: its secrets, the repositories'
own rules, the trigger label and command prefix, and who may command."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from configs.settings import WebhookProviderSettings, WebhookRepositorySettings, WebhookSettings
from models.webhooks import Provider

__all__ = ["Rules"]


@dataclass(frozen=True)
class Rules:
    provider: Provider
    settings: WebhookSettings

    @property
    def provider_settings(self) -> WebhookProviderSettings:
        return getattr(self.settings, self.provider.value)

    @property
    def trigger_label(self) -> str:
        return self.settings.trigger_label

    def repository(self, full_name: str | None) -> WebhookRepositorySettings | None:
        """The rules for `full_name`: a "provider:name" key first, then a plain "name" (case-insensitive,
        as repository names are on the providers)."""
        if not full_name:
            return None
        wanted = full_name.lower()
        by_key = {key.lower(): rules for key, rules in self.settings.repositories.items()}
        return by_key.get(f"{self.provider.value}:{wanted}") or by_key.get(wanted)

    def secret_for(self, full_name: str | None) -> str:
        """The repository's own secret when it has one, else the provider's ('' = none configured)."""
        repo = self.repository(full_name)
        if repo is not None and repo.secret.get_secret_value():
            return repo.secret.get_secret_value()
        return self.provider_settings.secret.get_secret_value()

    def candidate_secrets(self) -> list[str]:
        """Every secret a delivery to this provider may be signed with: the provider's and each
        repository's own (keyed for this provider or for any), without duplicates. The signature is
        checked against these before the body is parsed; which repository may use which secret is
        checked after (see `secret_for`)."""
        prefixes = tuple(f"{p.value}:" for p in Provider if p != self.provider)
        secrets = [self.provider_settings.secret.get_secret_value()]
        secrets += [
            rules.secret.get_secret_value()
            for key, rules in self.settings.repositories.items()
            if not key.lower().startswith(prefixes)
        ]
        return list(dict.fromkeys(s for s in secrets if s))

    def any_secret(self) -> bool:
        return bool(self.candidate_secrets())

    def test_command(self, full_name: str) -> str | None:
        repo = self.repository(full_name)
        return (repo.test_command if repo and repo.test_command else self.settings.test_command) or None

    def push_instruction(self, full_name: str, branch: str) -> str | None:
        repo = self.repository(full_name)
        if repo is None:
            return None
        if branch in repo.push:
            return repo.push[branch]
        for pattern, instruction in repo.push.items():
            if fnmatch.fnmatchcase(branch, pattern):
                return instruction
        return None

    def command(self, text: str | None) -> str | None:
        """The instruction of a comment that starts with the command prefix ('/elpis fix the test'), else
        None. Any whitespace may follow the prefix's word, a newline included."""
        if not text:
            return None
        text = text.lstrip()
        word = self.settings.command_prefix.rstrip()
        if not text.startswith(word):
            return None
        rest = text[len(word) :]
        if word != self.settings.command_prefix and rest and not rest[0].isspace():
            return None  # '/elpisfoo' is not the command
        return rest.strip() or None

    def refuses_commenter(self, user: str | None) -> str | None:
        allowed = self.settings.commenters
        if allowed and (user or "").lower() not in {name.lower() for name in allowed}:
            return f"comment by '{user}', who is not in webhooks.commenters"
        return None

    def refuses_role(self, user: str | None, role: str) -> str | None:
        """Why a comment by `user`, who holds `role` (an author_association name), is not obeyed."""
        allowed = {a.upper() for a in self.provider_settings.comment_associations}
        if role.upper() not in allowed:
            return f"comment by '{user}' ({role}), not one of {self.provider.value}.comment_associations"
        return None
