"""What a webhook task gives back to its repository: a branch `elpis/task-<id>` with its change, and a
comment on the issue or pull request it came from.

`prepare_source` runs before the loop (a comment on a GitHub/Gitea pull request learns its head branch
from the provider's API); `publish_result` is one try of the Celery task `elpis.publish_result`, which
runs after the task's outcome is stored and is retried on transient failures. Both do nothing for a task
without a `task_source` row (a REST task). What differs between providers (their API paths and headers,
push credentials, where a repository lives) is asked of the task's forge (`elpis_worker.forges`):
credentials and tokens come from the config only, a push credential is only sent to the configured
`push_hosts`, and a pull request's head repository is cloned from the configured `web_url` and its full
name, never from a URL the API answers.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from sqlalchemy import Integer, cast, func, select, update

from configs.errors import ElpisError
from configs.settings import Settings
from elpis_worker.batches import TaskIn
from elpis_worker.forges import FORGES, ForgeError, ForgeUnavailable
from elpis_worker.store import LostClaim, TaskStore
from elpis_worker.workspace import (
    BASE_REF,
    WorkspaceError,
    is_local_repo,
    prepare_workspace,
    private_git_dir,
    run_git,
)
from models import Task, TaskStatus, get_engine, session_scope
from models.webhooks import CommentStatus, Provider, ResultStatus, TaskSource

log = logging.getLogger(__name__)

GIT_TIMEOUT_S = 120.0
BRANCH_PREFIX = "elpis/task-"
# The advisory-lock space of publishing ("ELPB"): one lock per task id, held by the try in progress.
PUBLISH_LOCK = 0x454C5042
# What git says when the network or the server failed rather than the request: worth another try.
_TRANSIENT_GIT = re.compile(
    r"timed out|could not resolve host|temporary failure in name resolution|failed to connect"
    r"|connection (?:refused|reset|timed out)|the remote end hung up|early eof|unexpected disconnect"
    r"|rpc failed|returned error: (?:429|5\d\d)",
    re.IGNORECASE,
)


class PublishError(ElpisError):
    """A result could not be committed, pushed or reported; the message says why."""


class TransientPublishError(PublishError):
    """A failure worth another try (the network, a 5xx or 429 from the provider, a push that timed
    out); `retry_after` holds the seconds the provider asked to wait (Retry-After), if it said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class PublishOutcome:
    """What one try of `publish_result` did, and when a transient failure is to be tried again
    (`retry_in` seconds; None: nothing is left to try). `state`: published, failed (publishing ended
    with a recorded failure), retrying, busy (another try holds the task), already_published,
    not_finished, no_source (a REST task)."""

    state: str
    retry_in: float | None = None


@dataclass(frozen=True)
class _Source:
    task_id: int
    provider: Provider
    repository: str
    project_id: str | None
    number: int | None
    is_pull_request: bool
    push_url: str
    resolve_head: bool
    published: bool
    # The push part's recorded outcome (result_status, result_branch, result_commit, result_error):
    # empty until it is known, so a later try knows whether to push.
    result: dict[str, Any] = field(default_factory=dict)


def result_branch(task_id: int) -> str:
    return f"{BRANCH_PREFIX}{task_id}"


def _load_source(database_url: str, task_id: int) -> _Source | None:
    with session_scope(database_url) as s:
        row = s.get(TaskSource, task_id)
        if row is None:
            return None
        return _Source(
            task_id,
            row.provider,
            row.repository,
            row.project_id,
            row.number,
            row.is_pull_request,
            row.push_url,
            row.resolve_head,
            row.published_at is not None,
            {
                "result_status": row.result_status,
                "result_branch": row.result_branch,
                "result_commit": row.result_commit,
                "result_error": row.result_error,
            }
            if row.result_status is not None
            else {},
        )


def unpublished(database_url: str, task_id: int) -> bool:
    """True for a finished webhook task whose result is still to publish."""
    with session_scope(database_url) as s:
        return bool(
            s.scalar(
                select(func.count())
                .select_from(TaskSource)
                .join(Task, Task.id == TaskSource.task_id)
                .where(
                    TaskSource.task_id == task_id,
                    TaskSource.published_at.is_(None),
                    Task.status.in_([status for status in TaskStatus if status.finished]),
                )
            )
        )


def _record(database_url: str, task_id: int, **values: Any) -> None:
    with session_scope(database_url) as s:
        s.execute(update(TaskSource).where(TaskSource.task_id == task_id).values(**values))


# --- before the loop --------------------------------------------------------------------------------


def prepare_source(store: TaskStore, settings: Settings, task_id: int) -> TaskStatus | None:
    """Point a pull-request comment's task at the pull request's head (repository and branch). Returns
    TaskStatus.failed when that cannot be done (the task is then finished with the reason), else None:
    the loop may run."""
    source = _load_source(store.url, task_id)
    if source is None or not source.resolve_head:
        return None
    try:
        clone_url, ref, sha, fork = _pull_request_head(settings, source)
    except (ForgeError, PublishError) as exc:
        reason = f"could not find the head branch of pull request #{source.number}: {exc}"
        log.warning("task %s: %s", task_id, reason)
        try:
            store.finish(task_id, TaskStatus.failed, reason=reason)
        except LostClaim:
            return None
        return TaskStatus.failed
    with session_scope(store.url) as s:
        claimed = s.execute(
            update(Task)
            .where(Task.id == task_id, Task.worker_id == store.worker_id, Task.status == TaskStatus.running)
            .values(repo=clone_url, ref=ref)
        ).rowcount
        if claimed:
            # A pull request from a fork (run because a trusted commenter asked) is published back to the
            # fork: a fork's commits are never pushed into the upstream repository.
            published_to = {"push_url": clone_url} if fork else {}
            s.execute(
                update(TaskSource)
                .where(TaskSource.task_id == task_id)
                .values(resolve_head=False, head_sha=sha, **published_to)
            )
    log.info(
        "task %s: pull request #%s is %s at %s%s",
        task_id,
        source.number,
        ref,
        _redact(clone_url),
        f" (the fork {fork}; the result goes there)" if fork else "",
    )
    return None


def _pull_request_head(settings: Settings, source: _Source) -> tuple[str, str, str | None, str | None]:
    """The pull request's head: clone URL (the configured web_url and the head repository's full name),
    branch, commit, and the fork's full name when the head is in another repository than the pull
    request's own (else None)."""
    if source.number is None:
        raise PublishError("the task's source names no pull request")
    head = FORGES[source.provider].pull_request_head(settings.webhooks, source.repository, source.number)
    try:
        checked = TaskIn(repo=head.clone_url, ref=head.ref, instruction="-")
    except ValidationError as exc:
        raise PublishError(f"{head.source}: bad head: {exc.errors()[0]['msg']}") from None
    fork = head.repository if head.repository.lower() != source.repository.lower() else None
    return checked.repo, checked.ref or head.ref, head.sha, fork


# --- after the loop ---------------------------------------------------------------------------------


def publish_result(database_url: str, settings: Settings, task_id: int) -> PublishOutcome:
    """One try at publishing a finished webhook task's result: push its change, then comment.

    Idempotent: each part's outcome is recorded on the task's source row as soon as it is known (the
    push before the comment), so a later try does only what is left: never a second push or comment,
    and nothing at all once the row has `published_at`. A transient failure is recorded and answered
    with `retry_in`; a permanent one, or the last of `worker.publish_max_retries` retries, ends
    publishing with the reason recorded. The task's own outcome never changes. Two tries never run at
    once: the second finds the first's lock and does nothing."""
    with _publishing_lock(database_url, task_id) as ours:
        if not ours:
            return PublishOutcome("busy")
        source = _load_source(database_url, task_id)
        if source is None:
            return PublishOutcome("no_source")
        if source.published:
            return PublishOutcome("already_published")
        with session_scope(database_url) as s:
            task = s.get_one(Task, task_id)
            s.expunge(task)
        if not task.status.finished:
            return PublishOutcome("not_finished")
        attempt = _start_attempt(database_url, task_id)
        try:
            return _publish(database_url, settings, task, source, attempt)
        except Exception as exc:  # noqa: BLE001 - tried again like a transient failure, within the same bound
            log.exception("task %s: publishing try %s failed", task_id, attempt)
            if attempt > settings.worker.publish_max_retries:
                _record(
                    database_url,
                    task_id,
                    published_at=datetime.now(UTC),
                    publish_retry_at=None,
                    publish_error=_gave_up(attempt, exc),
                )
                return PublishOutcome("failed")
            return _retry_later(database_url, settings, task_id, attempt, exc)


@contextmanager
def _publishing_lock(database_url: str, task_id: int) -> Iterator[bool]:
    """Whether this process may publish the task now: a transaction-scoped advisory lock on a connection
    of its own, held while it pushes and comments, so a retry and a redelivery (or the reconciler's
    message) never publish at once. Released when the try ends, or when a dead worker's connection
    drops. Other sessions still write the task's rows meanwhile: an advisory lock blocks no row."""
    with get_engine(database_url).connect() as conn, conn.begin():
        key = cast(task_id % 2**31, Integer)
        yield bool(conn.scalar(select(func.pg_try_advisory_xact_lock(cast(PUBLISH_LOCK, Integer), key))))


def _start_attempt(database_url: str, task_id: int) -> int:
    with session_scope(database_url) as s:
        return s.execute(
            update(TaskSource)
            .where(TaskSource.task_id == task_id)
            .values(publish_attempts=TaskSource.publish_attempts + 1)
            .returning(TaskSource.publish_attempts)
        ).scalar_one()


def _publish(
    database_url: str, settings: Settings, task: Task, source: _Source, attempt: int
) -> PublishOutcome:
    last_try = attempt > settings.worker.publish_max_retries
    result = dict(source.result)
    if not result:
        try:
            result = _push_result(settings, task, source)
        except TransientPublishError as exc:
            if not last_try:
                return _retry_later(database_url, settings, task.id, attempt, exc)
            result = {"result_status": ResultStatus.push_failed, "result_error": _gave_up(attempt, exc)}
        # Recorded before the comment: a try after this one only comments.
        _record(
            database_url,
            task.id,
            **result,
            result_summary=task.summary,
            result_test_passed=task.test_passed,
        )
    try:
        comment = _post_comment(settings, source, comment_text(task, result))
    except TransientPublishError as exc:
        if not last_try:
            return _retry_later(database_url, settings, task.id, attempt, exc)
        log.warning("task %s: %s", task.id, exc)
        comment = {"comment_status": CommentStatus.failed, "comment_error": _gave_up(attempt, exc)}
    if result["result_status"] == ResultStatus.push_failed:
        error = result.get("result_error")
    elif comment["comment_status"] == CommentStatus.failed:
        error = comment.get("comment_error")
    else:
        error = None
    _record(
        database_url,
        task.id,
        **comment,
        published_at=datetime.now(UTC),
        publish_retry_at=None,
        publish_error=error,
    )
    return PublishOutcome("published" if error is None else "failed")


def _push_result(settings: Settings, task: Task, source: _Source) -> dict[str, Any]:
    """Commit and push the task's change; what to record of it. Raises TransientPublishError when the
    push may work on another try; any other failure is a `push_failed` result."""
    diff = task.workspace_diff or ""
    if task.status == TaskStatus.cancelled:
        return {"result_status": ResultStatus.skipped}
    if not diff.strip():
        return {"result_status": ResultStatus.no_change}
    branch = result_branch(task.id)
    values: dict[str, Any] = {"result_branch": branch}
    try:
        root = _workspace(settings, task)
        # Dated when the task finished: every try (on any host) makes the same commit, so a push that
        # did land before its worker died is not a new one when made again.
        sha = commit_diff(root, diff, _commit_message(task, source), date=task.finished_at)
        values["result_commit"] = sha
        push_env = FORGES[source.provider].push_env(settings.webhooks, source.push_url)
        push_branch(root, sha, branch, source.push_url, push_env)
    except (PublishError, WorkspaceError) as exc:
        if isinstance(exc, TransientPublishError) or _TRANSIENT_GIT.search(str(exc)):
            raise TransientPublishError(str(exc)) from exc
        log.warning("task %s: %s", task.id, exc)
        return values | {"result_status": ResultStatus.push_failed, "result_error": str(exc)}
    log.info("task %s: pushed %s (%s) to %s", task.id, branch, sha[:12], _redact(source.push_url))
    return values | {"result_status": ResultStatus.pushed}


def _retry_later(
    database_url: str, settings: Settings, task_id: int, attempt: int, exc: Exception
) -> PublishOutcome:
    """Record a transient failure and when the next try is due: exponential backoff from
    worker.publish_backoff, at least what the provider's Retry-After asked, at most
    worker.publish_backoff_max."""
    worker = settings.worker
    delay = worker.publish_backoff * 2 ** min(attempt - 1, 30)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        delay = max(delay, retry_after)
    delay = min(delay, worker.publish_backoff_max)
    log.warning("task %s: publishing try %s failed, next try in %.1f s: %s", task_id, attempt, delay, exc)
    _record(
        database_url,
        task_id,
        publish_error=f"try {attempt}: {exc}",
        publish_retry_at=datetime.now(UTC) + timedelta(seconds=delay),
    )
    return PublishOutcome("retrying", retry_in=delay)


def _gave_up(attempt: int, exc: Exception) -> str:
    return f"gave up after {attempt} tries: {exc}"


# --- git --------------------------------------------------------------------------------------------


def _git(
    args: list[str],
    root: Path,
    *,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    allow_file: bool = False,
    what: str,
) -> str:
    """git on the workspace's private repository (never the agent-writable root/.git), hardened."""
    try:
        proc = run_git(
            args,
            git_dir=private_git_dir(root),
            input=input,
            env=env,
            allow_file=allow_file,
            timeout=GIT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise TransientPublishError(f"{what}: git timed out after {GIT_TIMEOUT_S:g} s") from exc
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        raise PublishError(f"{what}: {lines[-1] if lines else f'git exited with {proc.returncode}'}")
    return proc.stdout.decode("utf-8", "replace").strip()


def _workspace(settings: Settings, task: Task) -> Path:
    """The task's workspace, or a fresh clone at its start commit when it is gone (another host ran the
    task, or it was cleaned up): only the start commit is needed, the change comes from the database."""
    root = settings.workspace_root / f"task-{task.id}"
    if private_git_dir(root).is_dir():
        try:
            _git(["rev-parse", "--verify", "--quiet", f"{BASE_REF}^{{commit}}"], root, what="no start commit")
            return root
        except PublishError:
            pass
    return prepare_workspace(task.repo, task.ref, root)


def commit_diff(root: Path, diff: str, message: str, *, date: datetime | None = None) -> str:
    """Commit `diff` (the task's recorded workspace_diff) on top of the start commit and return the sha.
    A private index is used, so whatever the agent left in the work tree or index does not leak in.
    With `date`, the same diff and message always make the same commit."""
    base = _git(["rev-parse", "--verify", f"{BASE_REF}^{{commit}}"], root, what="no start commit")
    index = private_git_dir(root) / "elpis-result-index"
    env = {
        "GIT_INDEX_FILE": str(index),
        "GIT_AUTHOR_NAME": "Elpis",
        "GIT_AUTHOR_EMAIL": "elpis@localhost",
        "GIT_COMMITTER_NAME": "Elpis",
        "GIT_COMMITTER_EMAIL": "elpis@localhost",
    }
    if date is not None:
        stamp = f"@{int(date.timestamp())} +0000"
        env |= {"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
    try:
        _git(["read-tree", base], root, env=env, what="could not read the start commit")
        _git(
            ["apply", "--cached", "--binary", "--whitespace=nowarn", "-"],
            root,
            env=env,
            input=diff.encode("utf-8", "surrogateescape"),
            what="could not apply the task's change to its start commit",
        )
        tree = _git(["write-tree"], root, env=env, what="could not write the result tree")
        return _git(
            ["commit-tree", tree, "-p", base, "-F", "-"],
            root,
            env=env,
            input=message.encode(),
            what="could not commit the result",
        )
    finally:
        index.unlink(missing_ok=True)


def push_branch(root: Path, sha: str, branch: str, push_url: str, env: dict[str, str]) -> None:
    """Force the branch (Elpis's own, one per task) to `sha` in the source repository. Pushed from the
    private repository, so no remote, `url.<x>.insteadOf` or hook the agent wrote is in effect."""
    _git(
        # No redirects: the Authorization header must reach the configured host only.
        ["-c", "http.followRedirects=false", "push", "--force", "--no-verify", "--quiet", "--"]
        + [push_url, f"{sha}:refs/heads/{branch}"],
        root,
        env=env,
        allow_file=is_local_repo(push_url),
        what=f"could not push {branch} to {_redact(push_url)}",
    )


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        return parts._replace(netloc=parts.hostname or "").geturl()
    return url


def _commit_message(task: Task, source: _Source) -> str:
    text = (task.summary or task.instruction or "").strip()
    first = text.splitlines()[0][:72] if text else f"task {task.id}"
    kind = "pull request" if source.is_pull_request else "issue"
    where = f" for {kind} #{source.number}" if source.number else ""
    return f"elpis: {first}\n\nElpis task {task.id}{where} ({source.provider.value} {source.repository}).\n"


# --- the comment ------------------------------------------------------------------------------------


def comment_text(task: Task, values: dict[str, Any]) -> str:
    lines = [f"**Elpis** task {task.id} {task.status.value}."]
    if task.summary:
        lines.append("> " + task.summary.strip().replace("\n", "\n> "))
    if task.failure_reason:
        lines.append(f"Reason: {task.failure_reason}")
    status = values.get("result_status")
    if status == ResultStatus.pushed:
        lines.append(
            f"The change is on branch `{values['result_branch']}` (commit {values['result_commit'][:12]})."
        )
    elif status == ResultStatus.push_failed:
        lines.append(f"The change could not be pushed: {values.get('result_error')}")
    elif status == ResultStatus.skipped:
        lines.append("The task was cancelled; its partial change was not pushed.")
    else:
        lines.append("No files were changed.")
    if task.test_passed is True:
        lines.append("Tests passed.")
    elif task.test_passed is False:
        code = f" (exit {task.test_exit_code})" if task.test_exit_code is not None else ""
        lines.append(f"Tests failed{code}.")
    else:
        lines.append("No tests were run.")
    return "\n\n".join(lines)


def _post_comment(settings: Settings, source: _Source, text: str) -> dict[str, Any]:
    forge = FORGES[source.provider]
    ps = forge.settings(settings.webhooks)
    if source.number is None:
        return {"comment_status": CommentStatus.skipped, "comment_error": "no issue or pull request"}
    token, api_url = ps.api_token.get_secret_value(), ps.api_url.rstrip("/")
    if not token or not api_url:
        missing = "api_token" if not token else "api_url"
        return {
            "comment_status": CommentStatus.skipped,
            "comment_error": f"webhooks.{source.provider.value}.{missing} is not set",
        }
    try:
        link = forge.post_comment(
            settings.webhooks,
            repository=source.repository,
            project_id=source.project_id,
            number=source.number,
            is_pull_request=source.is_pull_request,
            text=text,
        )
    except ForgeUnavailable as exc:
        raise TransientPublishError(str(exc), retry_after=exc.retry_after) from exc
    except ForgeError as exc:
        log.warning("task %s: %s", source.task_id, exc)
        return {"comment_status": CommentStatus.failed, "comment_error": str(exc)}
    return {"comment_status": CommentStatus.posted, "comment_url": link}
