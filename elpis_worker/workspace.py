"""A task's workspace: a fresh git work tree of the task's repository, and the paths tools may touch.

The workspace is a git clone so that the task's outcome is simply its diff against the starting commit,
and so that a resumed task can get its files back by applying that diff to a new clone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

CLONE_TIMEOUT_S = 120.0
GIT_TIMEOUT_S = 60.0
BASE_REF = "refs/elpis/base"
"""Where the starting commit is kept, so the diff stays right even if the agent commits or checks out."""

SNAPSHOT_IGNORE = shutil.ignore_patterns(
    "__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache", ".ruff_cache"
)
"""Caches left behind by running a plain directory's code locally are not part of its snapshot."""

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SCP_LIKE_RE = re.compile(r"^(?:[^@/\s]+@)?[^/:\s]{2,}:(?!//)")


class WorkspaceError(Exception):
    """The workspace could not be prepared or a path could not be used; the message says why."""


class WorkspaceEscapeError(WorkspaceError):
    """A path that leads outside the workspace (or into its .git directory)."""


def _git_env() -> dict[str, str]:
    """Never wait for a password or a host-key prompt: a worker has no one to answer it."""
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o ConnectTimeout=30")
    env["LC_ALL"] = "C"
    return env


def _git(
    args: list[str],
    cwd: Path | None,
    *,
    input: bytes | None = None,
    timeout: float = GIT_TIMEOUT_S,
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", "-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null", *args],
        cwd=cwd,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        env=_git_env(),
        check=False,
    )


def _last_error_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    lines = [ln.strip() for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else f"git exited with status {proc.returncode}"


def _git_checked(args: list[str], cwd: Path | None, what: str, *, input: bytes | None = None) -> str:
    try:
        proc = _git(args, cwd, input=input)
    except subprocess.TimeoutExpired as exc:
        raise WorkspaceError(f"{what}: git timed out after {GIT_TIMEOUT_S:g} s") from exc
    if proc.returncode != 0:
        raise WorkspaceError(f"{what}: {_last_error_line(proc)}")
    return proc.stdout.decode("utf-8", "replace").strip()


def _is_remote(repo: str) -> bool:
    return bool(_URL_RE.match(repo) or (_SCP_LIKE_RE.match(repo) and not Path(repo).exists()))


def _is_git_repository(path: Path) -> bool:
    """True for a work tree's top level or a bare repository; a plain directory *inside* some other
    repository (like samples/calc inside Elpis's own checkout) is not one."""
    if (path / ".git").exists():
        return True
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


def _remove(dest: Path) -> None:
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)


def _clone(repo: str, dest: Path) -> None:
    try:
        proc = _git(["clone", "--quiet", "--", repo, str(dest)], None, timeout=CLONE_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        _remove(dest)
        raise WorkspaceError(f"could not clone {repo}: timed out after {CLONE_TIMEOUT_S:g} s") from exc
    if proc.returncode != 0:
        _remove(dest)
        raise WorkspaceError(f"could not clone {repo}: {_last_error_line(proc)}")


def _snapshot(source: Path, dest: Path) -> None:
    """Copy a plain directory and commit it as one snapshot, so it gets a base commit like any clone."""
    dest_real = Path(os.path.realpath(dest))

    def ignore(directory: str, names: list[str]) -> set[str]:
        # dest may lie inside source (workspaces kept under the directory being copied): never copy it.
        skipped = set(SNAPSHOT_IGNORE(directory, names))
        return skipped | {name for name in names if Path(directory, name) == dest_real}

    try:
        shutil.copytree(source, dest, symlinks=True, ignore=ignore)
    except (OSError, shutil.Error) as exc:
        _remove(dest)
        raise WorkspaceError(f"could not copy {source}: {exc}") from exc
    _git_checked(["init", "--quiet"], dest, f"could not initialise a repository in {dest}")
    _set_identity(dest)
    _git_checked(["add", "-A"], dest, f"could not snapshot {source}")
    _git_checked(
        ["commit", "--quiet", "--allow-empty", "--no-verify", "-m", f"elpis: snapshot of {source}"],
        dest,
        f"could not snapshot {source}",
    )


def _set_identity(root: Path) -> None:
    _git_checked(["config", "user.name", "Elpis"], root, "could not configure git")
    _git_checked(["config", "user.email", "elpis@localhost"], root, "could not configure git")


def _checkout(repo: str, ref: str, root: Path) -> None:
    """Check out `ref` (branch, tag or commit); a remote branch becomes a local branch of the same name."""
    if ref.startswith("-"):
        raise WorkspaceError(f"ref '{ref}' is not a valid git ref")
    for candidate in (f"refs/remotes/origin/{ref}", ref):
        proc = _git(["rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"], root)
        if proc.returncode != 0:
            continue
        sha = proc.stdout.decode().strip()
        if candidate.startswith("refs/remotes/"):
            _git_checked(["checkout", "--quiet", "-B", ref, sha], root, f"could not check out '{ref}'")
        else:
            _git_checked(["checkout", "--quiet", "--detach", sha], root, f"could not check out '{ref}'")
        return
    raise WorkspaceError(f"ref '{ref}' not found in {repo}")


def prepare_workspace(repo: str, ref: str | None, dest: Path, diff: str | None = None) -> Path:
    """Make `dest` a fresh git work tree of `repo` at `ref` (None: the default branch), replacing whatever
    was there, and apply `diff` (from workspace_diff) so a resumed task gets its files back.

    `repo` is a git URL, a local git repository (work tree or bare), or a plain local directory, which is
    copied and committed as one snapshot commit.
    """
    dest = Path(dest)
    try:
        _remove(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkspaceError(f"could not prepare the workspace at {dest}: {exc}") from exc

    if _is_remote(repo):
        _clone(repo, dest)
    else:
        source = Path(repo).expanduser()
        if not source.exists():
            raise WorkspaceError(f"could not clone {repo}: no such file or directory")
        if not source.is_dir():
            raise WorkspaceError(f"could not clone {repo}: not a directory")
        if _is_git_repository(source):
            _clone(str(source.resolve()), dest)
        else:
            if ref and ref != "HEAD":
                raise WorkspaceError(
                    f"ref '{ref}' given, but {repo} is a plain directory, not a git repository"
                )
            _snapshot(source.resolve(), dest)

    try:
        if ref and ref != "HEAD":
            _checkout(repo, ref, dest)
        _set_identity(dest)
        base = _git_checked(["rev-parse", "--verify", "HEAD^{commit}"], dest, f"{repo} has no commits")
        _git_checked(["update-ref", BASE_REF, base], dest, "could not record the starting commit")
        if diff:
            _git_checked(
                ["apply", "--binary", "--whitespace=nowarn", "-"],
                dest,
                "could not restore the task's changes",
                input=diff.encode("utf-8", "surrogateescape"),
            )
    except BaseException:
        _remove(dest)
        raise
    return dest


def _base_commit(root: Path) -> str:
    proc = _git(["rev-parse", "--verify", "--quiet", f"{BASE_REF}^{{commit}}"], root)
    if proc.returncode == 0:
        return proc.stdout.decode().strip()
    return _git_checked(
        ["rev-parse", "--verify", "HEAD^{commit}"], root, f"{root} is not a prepared workspace"
    )


_DIFF_ARGS = [
    "diff",
    "--cached",
    "--binary",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-renames",
    "--src-prefix=a/",
    "--dst-prefix=b/",
]


def workspace_diff(root: Path) -> str:
    """Everything changed since the starting commit, new untracked files included, as a patch that
    `git apply --binary` takes back. '' when nothing changed."""
    root = Path(root)
    base = _base_commit(root)
    _git_checked(["add", "-A"], root, "could not stage the workspace's changes")
    proc = _git([*_DIFF_ARGS, base], root)
    if proc.returncode != 0:
        raise WorkspaceError(f"could not diff the workspace: {_last_error_line(proc)}")
    try:
        return proc.stdout.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # A text file that is not UTF-8 would make the diff unstorable as text: diff every file as binary
    # (base85, plain ASCII) instead. Rare, and still exact.
    attributes = root / ".git" / "info" / "attributes"
    previous = attributes.read_bytes() if attributes.exists() else None
    attributes.parent.mkdir(parents=True, exist_ok=True)
    try:
        attributes.write_bytes(b"* binary\n")
        proc = _git([*_DIFF_ARGS, base], root)
    finally:
        if previous is None:
            attributes.unlink(missing_ok=True)
        else:
            attributes.write_bytes(previous)
    if proc.returncode != 0:
        raise WorkspaceError(f"could not diff the workspace: {_last_error_line(proc)}")
    return proc.stdout.decode("utf-8", "replace")


_HUNK_RE = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")


def diff_stats(diff: str) -> int:
    """Added plus removed lines of a unified diff. Hunk headers are followed so a removed line that
    itself starts with '--' is not mistaken for a file header."""
    changed = 0
    old_left = new_left = 0
    for line in diff.splitlines():
        if old_left > 0 or new_left > 0:
            if line.startswith("+"):
                changed += 1
                new_left -= 1
            elif line.startswith("-"):
                changed += 1
                old_left -= 1
            elif line.startswith("\\"):
                pass
            else:
                old_left -= 1
                new_left -= 1
            continue
        match = _HUNK_RE.match(line)
        if match:
            old_left = int(match.group(1)) if match.group(1) is not None else 1
            new_left = int(match.group(2)) if match.group(2) is not None else 1
    return changed


def resolve_inside(root: Path, path: str) -> Path:
    """The real path of a tool-supplied `path` (relative to root, or absolute inside it), symlinks
    followed. Anything that ends up outside root, or in its .git directory, is refused: tools must not
    touch the host, nor rewrite the history the task's diff is measured against."""
    if "\x00" in path:
        raise WorkspaceError(f"{path!r} contains a NUL byte")
    root_real = Path(os.path.realpath(root))
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = root_real / candidate
    try:
        resolved = Path(os.path.realpath(candidate, strict=False))
    except OSError as exc:
        raise WorkspaceError(f"'{path}' cannot be resolved: {exc.strerror or exc}") from exc
    if resolved != root_real and not resolved.is_relative_to(root_real):
        raise WorkspaceEscapeError(f"'{path}' is outside the workspace")
    relative = resolved.relative_to(root_real)
    if any(part.lower() == ".git" for part in relative.parts):
        raise WorkspaceEscapeError(f"'{path}' is outside the workspace")
    return resolved
