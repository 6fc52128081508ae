"""A small REST client for the `elpis` command: the CLI goes through the API like any other user."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import yaml

from configs import get_settings
from configs.errors import ElpisError


class ClientError(ElpisError):
    """A request failed; the message is the API's own explanation."""


def base_url() -> str:
    settings = get_settings()
    return f"http://{settings.api_host}:{settings.api_port}"


def api_token() -> str:
    """ELPIS_API_TOKEN, else the token `elpis up` keeps in $ELPIS_HOME/api_token ('' when neither)."""
    from elpis_api.tokens import configured_api_token

    return configured_api_token(get_settings())


class ElpisClient:
    def __init__(self, url: str | None = None, timeout: float = 30.0, token: str | None = None) -> None:
        token = api_token() if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url or base_url(), timeout=timeout, headers=headers)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(
                f"cannot reach the Elpis API at {self.http.base_url} ({exc}); is `elpis up` running?"
            ) from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise ClientError(f"{response.status_code}: {detail}")
        return response.json()

    def submit(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/batches", json=batch)

    def batch(self, batch_id: int) -> dict[str, Any]:
        return self._call("GET", f"/v1/batches/{batch_id}")

    def task(self, task_id: int) -> dict[str, Any]:
        return self._call("GET", f"/v1/tasks/{task_id}")

    def tasks(self, **params: Any) -> dict[str, Any]:
        return self._call("GET", "/v1/tasks", params={k: v for k, v in params.items() if v is not None})

    def steps(self, task_id: int, after: int = -1, limit: int = 1000) -> list[dict[str, Any]]:
        return self._call("GET", f"/v1/tasks/{task_id}/steps", params={"after": after, "limit": limit})[
            "items"
        ]

    def emotions(self, task_id: int) -> list[dict[str, Any]]:
        return self._call("GET", f"/v1/tasks/{task_id}/emotions")["items"]

    def cancel(self, task_id: int) -> dict[str, Any]:
        return self._call("POST", f"/v1/tasks/{task_id}/cancel")

    def health(self) -> dict[str, Any]:
        return self.http.get("/healthz").json()


def load_batch_file(path: Path) -> dict[str, Any]:
    """Read a JSON/YAML batch; relative local repo paths are resolved against the file's folder (then the
    current folder), since the API takes URLs or absolute paths only."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ClientError(f"cannot read batch file {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        raise ClientError(f'batch file {path} must hold {{"tasks": [...]}}')
    for task in data["tasks"]:
        if isinstance(task, dict) and isinstance(task.get("repo"), str):
            task["repo"] = absolutize_repo(task["repo"], path.parent)
    return data


def absolutize_repo(repo: str, base: Path) -> str:
    if "://" in repo or repo.startswith("/") or ("@" in repo and ":" in repo):
        return repo
    for candidate in (base / repo, Path.cwd() / repo):
        if candidate.exists():
            return str(candidate.resolve())
    return str((Path.cwd() / repo).resolve())
