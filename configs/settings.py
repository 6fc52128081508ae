"""One settings object for every Elpis process.

Defaults live in `config.yaml` beside this file (or the file named by `ELPIS_CONFIG`);
`ELPIS_*` environment variables override them (`ELPIS_MODEL__THREADS=2` for nested keys).
Unknown keys and bad values raise `ConfigError` naming the key, so a typo stops the program
at start instead of being silently ignored.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from configs.errors import ElpisError

DEFAULT_CONFIG = Path(__file__).with_name("config.yaml")
ENV_PREFIX = "ELPIS_"
# Environment variables that are not settings keys but are read by Elpis or its tests.
_NON_KEY_ENV = {"ELPIS_CONFIG"}
# The names webhook secrets are known by in deployments; each sets a nested key (below the
# ELPIS_WEBHOOKS__<PROVIDER>__SECRET spelling, above config.yaml).
ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "ELPIS_GITHUB_WEBHOOK_SECRET": ("webhooks", "github", "secret"),
    "ELPIS_GITLAB_WEBHOOK_TOKEN": ("webhooks", "gitlab", "secret"),
    "ELPIS_GITEA_WEBHOOK_SECRET": ("webhooks", "gitea", "secret"),
}


class ConfigError(ElpisError):
    """A configuration problem, phrased for the person who has to fix it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSettings(_Section):
    backend: Literal["llama", "scripted", "openai"] = "llama"
    # A catalogue model (`elpis models`) or hf:REPO/FILE; model.path, when set, wins.
    name: str = Field("qwen2.5-coder-1.5b", min_length=1)
    path: str = ""
    n_ctx: int = Field(4096, ge=256)
    threads: int = Field(1, ge=1)
    share_idle_cores: bool = True
    chat_format: str = ""
    gpu_layers: int = Field(0, ge=-1)
    script: str = ""
    warmup: bool = True
    seed: int = 0
    lazy_grammar: bool = True
    # backend "openai": an OpenAI-compatible server (llama-server, vLLM, Ollama, llama_cpp.server).
    base_url: str = ""
    api_key: SecretStr = SecretStr("")
    server_model: str = ""
    schema_format: Literal["json_schema", "json_object"] = "json_schema"
    request_timeout: float = Field(300, gt=0)
    request_retries: int = Field(3, ge=0, le=10)

    @model_validator(mode="after")
    def _server_named(self) -> ModelSettings:
        if self.backend == "openai" and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(
                "model.base_url must be the server's http(s) URL (e.g. http://gpu-host:8080/v1) when "
                "model.backend is openai"
            )
        return self


class GenerationSettings(_Section):
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=8)
    reflect_max_tokens: int = Field(96, ge=8)
    one_call_per_turn: bool = True
    compose_finish: bool = True
    history_thoughts: bool = False
    fresh_look_on_replan: bool = True


class BudgetSettings(_Section):
    max_steps: int = Field(12, ge=1)
    max_tokens: int = Field(60000, ge=100)
    max_seconds: float = Field(900, gt=0)


class SandboxLimitSettings(_Section):
    """Per-command rlimits inside the sandbox (0 = no limit); see tools.limits in config.yaml."""

    cpu_seconds: int = Field(120, ge=0)
    memory_mb: int = Field(2048, ge=0)
    processes: int = Field(256, ge=0)
    file_size_mb: int = Field(64, ge=0)


class ToolSettings(_Section):
    workspace_dir: str = "workspaces"
    command_timeout: float = Field(60, gt=0)
    output_cap: int = Field(8000, ge=256)
    read_cap: int = Field(16000, ge=256)
    exclude_repeats: bool = True
    repair_first: bool = True
    undo_regressions: bool = True
    undo_revisits: bool = True
    review_before_finish: bool = True
    check_on_review: bool = True
    probe_on_review: bool = True
    sandbox: Literal["bwrap", "none"] = "bwrap"
    # REST tasks may name a path or file:// URL on the workers (off where the API faces other people).
    allow_local_repos: bool = True
    network: bool = False
    limits: SandboxLimitSettings = SandboxLimitSettings()


class RetrievalWeights(_Section):
    similarity: float = Field(0.6, ge=0.0)
    recency: float = Field(0.1, ge=0.0)
    importance: float = Field(0.2, ge=0.0)
    salience: float = Field(0.1, ge=0.0)


class MemorySettings(_Section):
    stm_capacity: int = Field(8, ge=1)
    consolidation_interval: float = Field(300, gt=0)
    consolidation_batch: int = Field(200, ge=1)
    embedding_model: str = Field("all-MiniLM-L6-v2", min_length=1, max_length=200)
    embedding_path: str = ""
    embedding_vocab: str = ""
    embedding_threads: int = Field(1, ge=1)
    embedding_max_tokens: int = Field(256, ge=8, le=512)
    retrieval_token_budget: int = Field(400, ge=0)
    top_k: int = Field(5, ge=1, le=100)
    min_similarity: float = Field(0.3, ge=-1.0, le=1.0)
    weights: RetrievalWeights = RetrievalWeights()
    half_life_days: float = Field(14, gt=0)
    dedup_threshold: float = Field(0.92, gt=0.0, le=1.0)
    forget_below: float = Field(0.05, ge=0.0, le=1.0)
    forget_min_access: int = Field(3, ge=0)
    keep_salience: float = Field(0.6, ge=0.0, le=1.0)


class AffectPoint(_Section):
    valence: float = Field(0.1, ge=-1.0, le=1.0)
    arousal: float = Field(0.2, ge=-1.0, le=1.0)


class EmotionSettings(_Section):
    baseline: AffectPoint = AffectPoint()
    decay_rate: float = Field(0.15, ge=0.0, le=1.0)
    modulation: bool = True


class WorkerSettings(_Section):
    queue: str = Field("agent", min_length=1)
    concurrency: int = Field(2, ge=1, le=64)
    heartbeat_interval: float = Field(5, gt=0)
    stale_after: float = Field(60, gt=0)
    visibility_timeout: int = Field(3600, ge=1)
    # The reconciler (beat): how often it runs, and how long a queued task waits before it is sent again.
    reconcile_interval: float = Field(30, gt=0)
    queued_grace: float = Field(300, gt=0)
    # Seconds past a task's wall budget before Celery's soft time limit stops its run.
    time_limit_margin: float = Field(300, ge=0)
    # Publishing a webhook task's result: retries after the first try, first wait and longest wait.
    publish_max_retries: int = Field(8, ge=0, le=100)
    publish_backoff: float = Field(5, gt=0)
    publish_backoff_max: float = Field(600, gt=0)


class WebhookProviderSettings(_Section):
    """One Git provider's webhook secret, where its repositories live, its REST API (comments back,
    roles) and push credentials."""

    # GitHub/Gitea: the HMAC key of the signature header; GitLab: the X-Gitlab-Token value.
    secret: SecretStr = SecretStr("")
    # Webhook tasks clone from and push to <web_url>/<full name>.git, never a URL from the payload.
    web_url: str = ""
    api_url: str = ""
    api_token: SecretStr = SecretStr("")
    push_user: str = "elpis"
    # Empty: push with api_token (when set).
    push_token: SecretStr = SecretStr("")
    # Hosts a push credential may be sent to; a clone URL on any other host is pushed without one.
    push_hosts: list[str] = []
    # Roles (GitHub's author_association names) whose /elpis comments are obeyed; on GitLab and Gitea
    # the commenter's role is asked of the provider's API.
    comment_associations: list[str] = ["OWNER", "MEMBER", "COLLABORATOR"]

    @field_validator("web_url")
    @classmethod
    def _web_url_is_a_base(cls, value: str) -> str:
        """A base URL git may use (its protocol allow-list has https, ssh and file), without
        credentials, a query or a fragment: repositories are found below it by their full names."""
        if not value:
            return value
        if not re.fullmatch(r"(https|ssh)://[^\s/?#]+(/[^\s?#]*)?|file:///[^\s?#]*", value):
            raise ValueError(
                "must be the https://, ssh:// or file:/// URL repositories are found under "
                "(e.g. https://gitea.example.com), without a query or fragment"
            )
        if value.startswith("https://") and "@" in value.split("/")[2]:
            raise ValueError("must not carry credentials: push_token is sent as a header, never in a URL")
        return value


class GithubWebhookSettings(WebhookProviderSettings):
    web_url: str = "https://github.com"
    api_url: str = "https://api.github.com"
    push_user: str = "x-access-token"
    push_hosts: list[str] = ["github.com"]


class GitlabWebhookSettings(WebhookProviderSettings):
    web_url: str = "https://gitlab.com"
    api_url: str = "https://gitlab.com/api/v4"
    push_user: str = "oauth2"
    push_hosts: list[str] = ["gitlab.com"]


class WebhookRepositorySettings(_Section):
    """Rules for one repository, keyed by its full name ("acme/widgets" or "github:acme/widgets")."""

    secret: SecretStr = SecretStr("")
    test_command: str = ""
    # Branch name or glob -> instruction of the task a push to it makes.
    push: dict[str, str] = {}


class WebhookSettings(_Section):
    max_body_bytes: int = Field(25 * 1024 * 1024, ge=1024)
    trigger_label: str = Field("elpis", min_length=1)
    command_prefix: str = Field("/elpis ", min_length=1)
    commenters: list[str] = []
    test_command: str = ""
    api_timeout: float = Field(10, gt=0)
    allow_forks: bool = False
    github: GithubWebhookSettings = GithubWebhookSettings()
    gitlab: GitlabWebhookSettings = GitlabWebhookSettings()
    gitea: WebhookProviderSettings = WebhookProviderSettings()
    repositories: dict[str, WebhookRepositorySettings] = {}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    home: Path = Path("./var")
    # Secrets (their passwords): read with .get_secret_value(), masked in every print and repr.
    database_url: SecretStr = SecretStr("")
    broker_url: SecretStr = SecretStr("")
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    # Accepted as an admin token by the API; `elpis up` makes one in $home/api_token when empty.
    api_token: SecretStr = SecretStr("")
    # Host header values the API answers (anything else is a 400: DNS rebinding cannot reach it).
    api_allowed_hosts: list[str] = Field(["127.0.0.1", "localhost"], min_length=1)
    flower_port: int = Field(5555, ge=1, le=65535)
    flower_address: str = "127.0.0.1"
    # "user:password" for Flower's basic auth; `elpis up` / `elpis flower` make one when empty.
    flower_basic_auth: SecretStr = SecretStr("")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["logfmt", "json"] = "logfmt"

    model: ModelSettings = ModelSettings()
    generation: GenerationSettings = GenerationSettings()
    budget: BudgetSettings = BudgetSettings()
    tools: ToolSettings = ToolSettings()
    memory: MemorySettings = MemorySettings()
    emotions: EmotionSettings = EmotionSettings()
    worker: WorkerSettings = WorkerSettings()
    webhooks: WebhookSettings = WebhookSettings()

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if url and not url.startswith("postgresql"):
            raise ValueError("must be a PostgreSQL URL such as postgresql+psycopg://user:pw@host:5432/elpis")
        return value

    @field_validator("broker_url")
    @classmethod
    def _redis_only(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if url and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a Redis URL such as redis://127.0.0.1:6379/0")
        return value

    @field_validator("flower_basic_auth")
    @classmethod
    def _user_colon_password(cls, value: SecretStr) -> SecretStr:
        user, sep, password = value.get_secret_value().partition(":")
        if value.get_secret_value() and not (user and sep and password):
            raise ValueError("must be user:password (or empty to have one generated)")
        return value

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def workspace_root(self) -> Path:
        path = Path(self.tools.workspace_dir).expanduser()
        return path if path.is_absolute() else self.home_dir / path

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _EnvAliasSource(settings_cls), _YamlSource(settings_cls))


class _YamlSource(YamlConfigSettingsSource):
    """config.yaml (or the file $ELPIS_CONFIG names): lowest priority, below the environment. A file
    that is missing, is not YAML or holds no mapping is a `ConfigError`; unknown keys are refused by the
    models (`extra="forbid"`), like those set in the environment."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        path = config_path()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (set ELPIS_CONFIG to a readable YAML file)")
        super().__init__(settings_cls, yaml_file=path)

    def _read_file(self, file_path: Path) -> dict[str, Any]:
        try:
            data = super()._read_file(file_path)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {file_path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(
                f"config file {file_path} must hold a mapping of keys, not {type(data).__name__}"
            )
        return data


class _EnvAliasSource(PydanticBaseSettingsSource):
    """The ENV_ALIASES variables, as nested keys."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name, path in ENV_ALIASES.items():
            if name in os.environ:
                node = data
                for part in path[:-1]:
                    node = node.setdefault(part, {})
                node[path[-1]] = os.environ[name]
        return data


def config_path() -> Path:
    return Path(os.environ.get("ELPIS_CONFIG") or DEFAULT_CONFIG)


def _known_env_names() -> set[str]:
    names = set(_NON_KEY_ENV) | set(ENV_ALIASES)
    for name, field in Settings.model_fields.items():
        names.add(ENV_PREFIX + name.upper())
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            for sub_name, sub_field in sub.model_fields.items():
                names.add(f"{ENV_PREFIX}{name.upper()}__{sub_name.upper()}")
                leaf = sub_field.annotation
                if isinstance(leaf, type) and issubclass(leaf, BaseModel):
                    for leaf_name in leaf.model_fields:
                        names.add(f"{ENV_PREFIX}{name.upper()}__{sub_name.upper()}__{leaf_name.upper()}")
    return names


def _check_env() -> None:
    known = _known_env_names()
    unknown = sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)
    if unknown:
        raise ConfigError(
            f"unknown setting {unknown[0]} in the environment "
            "(nested keys use a double underscore, e.g. ELPIS_MODEL__THREADS; see configs/config.yaml)"
        )


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown config key '{key}' (see configs/config.yaml for the known keys)"
    env_name = ENV_PREFIX + "__".join(str(part).upper() for part in error["loc"])
    return f"bad value for config key '{key}' (config.yaml or {env_name}): {error['msg']}"


def load_settings(**overrides: Any) -> Settings:
    """Build settings from YAML and environment, raising `ConfigError` that names the bad key."""
    _check_env()
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0])) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
