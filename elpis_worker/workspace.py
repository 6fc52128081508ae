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

from configs.errors import ElpisError

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


class WorkspaceError(ElpisError):
    """The workspace could not be prepared or a path could not be used; the message says why."""


class WorkspaceEscapeError(WorkspaceError):
    """A path that leads outside the workspace (or into its .git directory)."""


def private_git_dir(root: Path) -> Path:
    """Where the worker keeps a workspace's repository: beside the workspace, never inside it. Commands
    can write anything in the workspace (its `.git` too), so the worker's own git never reads a git
    directory there: a planted hook, `core.fsmonitor` or `url.<x>.insteadOf` would run or redirect
    with the worker's rights. The sandbox binds only the workspace, so commands cannot reach this."""
    root = Path(root)
    return root.parent / f".{root.name}.git"


# Configuration no repository can override: command-line `-c` beats every config file, and with
# GIT_CONFIG_NOSYSTEM / GIT_CONFIG_GLOBAL there are no other files than the worker's private one.
_SAFE_CONFIG = [
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "commit.gpgsign=false",
    "-c", "protocol.allow=never",
    "-c", "protocol.https.allow=always",
    "-c", "protocol.ssh.allow=always",
]  # fmt: skip


def git_env(
    git_dir: Path | None = None, work_tree: Path | None = None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of every git the worker runs: no system or user config, no prompts, and an
    explicit GIT_DIR so git never discovers a repository from the directory it runs in. The worker's
    own GIT_* variables are dropped so they cannot point it elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        {
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o ConnectTimeout=30",
            "LC_ALL": "C",
        }
    )
    if git_dir is not None:
        env["GIT_DIR"] = str(git_dir)
    if work_tree is not None:
        env["GIT_WORK_TREE"] = str(work_tree)
    env.update(extra or {})
    return env


def run_git(
    args: list[str],
    *,
    git_dir: Path | None,
    work_tree: Path | None = None,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    allow_file: bool = False,
    timeout: float = GIT_TIMEOUT_S,
) -> subprocess.CompletedProcess[bytes]:
    """Run git hardened against the repositories it touches (see _SAFE_CONFIG and git_env). `file://`
    and local paths are allowed only when `allow_file` (a local repository the task names)."""
    config = [*_SAFE_CONFIG, "-c", f"protocol.file.allow={'always' if allow_file else 'never'}"]
    cwd = work_tree if work_tree is not None else git_dir
    return subprocess.run(
        ["git", *config, *args],
        cwd=cwd if cwd is not None and Path(cwd).is_dir() else None,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        env=git_env(git_dir, work_tree, env),
        check=False,
    )


def _last_error_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    lines = [ln.strip() for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else f"git exited with status {proc.returncode}"


def _git_checked(
    args: list[str],
    what: str,
    *,
    git_dir: Path | None,
    work_tree: Path | None = None,
    input: bytes | None = None,
    allow_file: bool = False,
) -> str:
    try:
        proc = run_git(args, git_dir=git_dir, work_tree=work_tree, input=input, allow_file=allow_file)
    except subprocess.TimeoutExpired as exc:
        raise WorkspaceError(f"{what}: git timed out after {GIT_TIMEOUT_S:g} s") from exc
    if proc.returncode != 0:
        raise WorkspaceError(f"{what}: {_last_error_line(proc)}")
    return proc.stdout.decode("utf-8", "replace").strip()


def _is_remote(repo: str) -> bool:
    return bool(_URL_RE.match(repo) or (_SCP_LIKE_RE.match(repo) and not Path(repo).exists()))


def is_local_repo(repo: str) -> bool:
    """A path or file:// URL: the only repositories git may reach over its `file` protocol."""
    return repo.lower().startswith("file://") or not _is_remote(repo)


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


def _clone(repo: str, dest: Path, git_dir: Path, *, allow_file: bool) -> None:
    """Clone into the private git dir, with `dest` as its work tree (a gitfile in dest/.git for now)."""
    try:
        proc = run_git(
            ["clone", "--quiet", f"--separate-git-dir={git_dir}", "--", repo, str(dest)],
            git_dir=None,
            allow_file=allow_file,
            timeout=CLONE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        _remove(dest)
        _remove(git_dir)
        raise WorkspaceError(f"could not clone {repo}: timed out after {CLONE_TIMEOUT_S:g} s") from exc
    if proc.returncode != 0:
        _remove(dest)
        _remove(git_dir)
        raise WorkspaceError(f"could not clone {repo}: {_last_error_line(proc)}")


def _snapshot(source: Path, dest: Path, git_dir: Path) -> None:
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
    _git_checked(["init", "--quiet"], f"could not initialise a repository for {dest}", git_dir=git_dir)
    _set_identity(git_dir)
    _git_checked(["add", "-A"], f"could not snapshot {source}", git_dir=git_dir, work_tree=dest)
    _git_checked(
        ["commit", "--quiet", "--allow-empty", "--no-verify", "-m", f"elpis: snapshot of {source}"],
        f"could not snapshot {source}",
        git_dir=git_dir,
        work_tree=dest,
    )


def _set_identity(git_dir: Path) -> None:
    _git_checked(["config", "user.name", "Elpis"], "could not configure git", git_dir=git_dir)
    _git_checked(["config", "user.email", "elpis@localhost"], "could not configure git", git_dir=git_dir)


def _checkout(repo: str, ref: str, root: Path, git_dir: Path) -> None:
    """Check out `ref` (branch, tag or commit); a remote branch becomes a local branch of the same name."""
    if ref.startswith("-"):
        raise WorkspaceError(f"ref '{ref}' is not a valid git ref")
    for candidate in (f"refs/remotes/origin/{ref}", ref):
        proc = run_git(["rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"], git_dir=git_dir)
        if proc.returncode != 0:
            continue
        sha = proc.stdout.decode().strip()
        what = f"could not check out '{ref}'"
        if candidate.startswith("refs/remotes/"):
            _git_checked(["checkout", "--quiet", "-B", ref, sha], what, git_dir=git_dir, work_tree=root)
        else:
            _git_checked(["checkout", "--quiet", "--detach", sha], what, git_dir=git_dir, work_tree=root)
        return
    raise WorkspaceError(f"ref '{ref}' not found in {repo}")


def _agent_repository(dest: Path, git_dir: Path) -> None:
    """Give the agent a repository of its own in dest/.git (so `git diff` or `git log` in a command
    work): a copy of the private one, never linked to it (no hardlinks, no alternates), so whatever a
    command writes there stays there. The worker never reads it."""
    staging = dest.parent / f".{dest.name}.agent-clone"
    _remove(staging)
    gitfile = dest / ".git"
    if gitfile.is_file() or gitfile.is_symlink():
        gitfile.unlink()
    try:
        _git_checked(
            ["clone", "--quiet", "--no-checkout", "--no-hardlinks", "--", str(git_dir), str(staging)],
            "could not copy the repository into the workspace",
            git_dir=None,
            allow_file=True,
        )
        (staging / ".git").rename(gitfile)
    finally:
        _remove(staging)
    head = _git_checked(["rev-parse", "--verify", "HEAD^{commit}"], "no HEAD", git_dir=git_dir)
    branch = run_git(["symbolic-ref", "--quiet", "--short", "HEAD"], git_dir=git_dir)
    what = "could not set up the workspace's repository"
    if branch.returncode == 0 and branch.stdout.strip():
        name = branch.stdout.decode().strip()
        _git_checked(["update-ref", f"refs/heads/{name}", head], what, git_dir=gitfile)
        _git_checked(["symbolic-ref", "HEAD", f"refs/heads/{name}"], what, git_dir=gitfile)
    else:
        _git_checked(["update-ref", "--no-deref", "HEAD", head], what, git_dir=gitfile)
    _git_checked(["reset", "--quiet", "--mixed", head], what, git_dir=gitfile, work_tree=dest)
    _git_checked(["remote", "remove", "origin"], what, git_dir=gitfile)
    _set_identity(gitfile)


def prepare_workspace(repo: str, ref: str | None, dest: Path, diff: str | None = None) -> Path:
    """Make `dest` a fresh git work tree of `repo` at `ref` (None: the default branch), replacing whatever
    was there, and apply `diff` (from workspace_diff) so a resumed task gets its files back.

    `repo` is a git URL, a local git repository (work tree or bare), or a plain local directory, which is
    copied and committed as one snapshot commit. The repository the worker uses lives beside the
    workspace (private_git_dir); dest/.git is a copy for the agent that the worker never reads.
    """
    dest = Path(dest)
    git_dir = private_git_dir(dest)
    try:
        _remove(dest)
        _remove(git_dir)
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkspaceError(f"could not prepare the workspace at {dest}: {exc}") from exc

    if _is_remote(repo):
        _clone(repo, dest, git_dir, allow_file=is_local_repo(repo))
    else:
        source = Path(repo).expanduser()
        if not source.exists():
            raise WorkspaceError(f"could not clone {repo}: no such file or directory")
        if not source.is_dir():
            raise WorkspaceError(f"could not clone {repo}: not a directory")
        if _is_git_repository(source):
            _clone(str(source.resolve()), dest, git_dir, allow_file=True)
        else:
            if ref and ref != "HEAD":
                raise WorkspaceError(
                    f"ref '{ref}' given, but {repo} is a plain directory, not a git repository"
                )
            _snapshot(source.resolve(), dest, git_dir)

    try:
        if ref and ref != "HEAD":
            _checkout(repo, ref, dest, git_dir)
        _set_identity(git_dir)
        base = _git_checked(
            ["rev-parse", "--verify", "HEAD^{commit}"], f"{repo} has no commits", git_dir=git_dir
        )
        _git_checked(["update-ref", BASE_REF, base], "could not record the starting commit", git_dir=git_dir)
        _agent_repository(dest, git_dir)
        if diff:
            _git_checked(
                ["apply", "--binary", "--whitespace=nowarn", "-"],
                "could not restore the task's changes",
                git_dir=git_dir,
                work_tree=dest,
                input=diff.encode("utf-8", "surrogateescape"),
            )
    except BaseException:
        _remove(dest)
        _remove(git_dir)
        raise
    return dest


def _base_commit(root: Path) -> str:
    git_dir = private_git_dir(root)
    if not git_dir.is_dir():
        raise WorkspaceError(f"{root} is not a prepared workspace (no {git_dir})")
    proc = run_git(["rev-parse", "--verify", "--quiet", f"{BASE_REF}^{{commit}}"], git_dir=git_dir)
    if proc.returncode == 0:
        return proc.stdout.decode().strip()
    return _git_checked(
        ["rev-parse", "--verify", "HEAD^{commit}"], f"{root} is not a prepared workspace", git_dir=git_dir
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
    `git apply --binary` takes back. '' when nothing changed. Staged in the private repository's index,
    so nothing under the workspace's own .git is read or changed."""
    root = Path(root)
    git_dir = private_git_dir(root)
    base = _base_commit(root)
    _git_checked(["add", "-A"], "could not stage the workspace's changes", git_dir=git_dir, work_tree=root)
    proc = run_git([*_DIFF_ARGS, base], git_dir=git_dir, work_tree=root)
    if proc.returncode != 0:
        raise WorkspaceError(f"could not diff the workspace: {_last_error_line(proc)}")
    try:
        return proc.stdout.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # A text file that is not UTF-8 would make the diff unstorable as text: diff every file as binary
    # (base85, plain ASCII) instead. Rare, and still exact.
    attributes = git_dir / "info" / "attributes"
    previous = attributes.read_bytes() if attributes.exists() else None
    attributes.parent.mkdir(parents=True, exist_ok=True)
    try:
        attributes.write_bytes(b"* binary\n")
        proc = run_git([*_DIFF_ARGS, base], git_dir=git_dir, work_tree=root)
    finally:
        if previous is None:
            attributes.unlink(missing_ok=True)
        else:
            attributes.write_bytes(previous)
    if proc.returncode != 0:
        raise WorkspaceError(f"could not diff the workspace: {_last_error_line(proc)}")
    return proc.stdout.decode("utf-8", "replace")


def diff_stats(diff: str) -> int:
    """Added plus removed lines of a patch as git counts them (`git apply --numstat`, which reads the
    patch and applies nothing; a binary file counts 0). The agent has the diff as text, not always a
    workspace in that state, so the patch is what is counted."""
    if not diff:
        return 0
    proc = run_git(["apply", "--numstat", "-"], git_dir=None, input=diff.encode("utf-8", "replace"))
    if proc.returncode != 0:
        raise WorkspaceError(f"could not count the diff's lines: {_last_error_line(proc)}")
    counts = (line.split("\t", 2)[:2] for line in proc.stdout.decode("utf-8", "replace").splitlines())
    return sum(int(n) for pair in counts for n in pair if n.isdigit())


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
