"""Workspaces and the agent's tools: clones, diff round trips, confinement, timeouts, caps, the sample repo.

No database needed: everything happens in tmp_path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import wait_gone

from elpis_worker.merge import same_program
from elpis_worker.tools import (
    ASSERT_FAILED,
    JUNIT_REPORT,
    PYTHON_CODE_CHARS,
    TOOL_DESCRIPTIONS,
    TOOL_SCHEMAS,
    Toolbox,
    ToolResult,
    failing_tests,
    is_check,
    is_command_line,
    junit_failures,
    parse_test_failures,
    regression_between,
)
from elpis_worker.workspace import (
    WorkspaceError,
    WorkspaceEscapeError,
    diff_stats,
    prepare_workspace,
    resolve_inside,
    workspace_diff,
)

ELPIS_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ELPIS_ROOT / "samples"
SAMPLE_REPO = SAMPLES / "calc"


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@localhost",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@localhost",
    }
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root except .git, by relative path."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def make_toolbox(
    root: Path, test_command: str | None = None, protected: list[str] | None = None, **overrides: float
) -> Toolbox:
    settings = {"command_timeout": 20.0, "output_cap": 4000, "read_cap": 2000, **overrides}
    return Toolbox(
        root,
        test_command=test_command,
        command_timeout=float(settings["command_timeout"]),
        output_cap=int(settings["output_cap"]),
        read_cap=int(settings["read_cap"]),
        protected=protected,
    )


@pytest.fixture
def plain_source(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    (source / "pkg" / "__pycache__").mkdir(parents=True)
    (source / "pkg" / "__init__.py").write_text("")
    (source / "pkg" / "mod.py").write_text("def f():\n    return 1\n")
    (source / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\x00junk")
    (source / "README.md").write_text("hello\n")
    (source / "old.txt").write_text("to be deleted\n")
    return source


@pytest.fixture
def git_source(tmp_path: Path) -> tuple[Path, str, str]:
    """A repository with a commit on main and a second one on branch `feature`."""
    repo = tmp_path / "upstream"
    repo.mkdir()
    git(repo, "init", "--quiet", "-b", "main")
    (repo / "a.txt").write_text("one\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "--quiet", "-m", "first")
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "--quiet", "-b", "feature")
    (repo / "a.txt").write_text("two\n")
    (repo / "b.txt").write_text("feature only\n")
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "second")
    second = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "--quiet", "main")
    return repo, first, second


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("def greet():\n    return 'hello'\n")
    (root / "notes.txt").write_text("first line\nneedle here\n")
    git(root, "init", "--quiet")
    return root


# --- prepare_workspace -------------------------------------------------------------------------------------


def test_prepare_plain_directory_makes_snapshot_commit(plain_source: Path, tmp_path: Path) -> None:
    dest = prepare_workspace(str(plain_source), None, tmp_path / "dest")

    assert (dest / ".git").is_dir()
    assert tree(dest) == {
        "README.md": b"hello\n",
        "old.txt": b"to be deleted\n",
        "pkg/__init__.py": b"",
        "pkg/mod.py": b"def f():\n    return 1\n",
    }
    assert git(dest, "log", "--format=%s") == f"elpis: snapshot of {plain_source.resolve()}"
    assert git(dest, "status", "--porcelain") == ""
    assert git(dest, "config", "user.name") == "Elpis"
    assert git(dest, "config", "user.email") == "elpis@localhost"
    assert workspace_diff(dest) == ""
    assert (plain_source / "pkg" / "__pycache__").exists()  # the source itself is untouched


def test_prepare_local_repository_at_ref(git_source: tuple[Path, str, str], tmp_path: Path) -> None:
    repo, first, second = git_source

    feature = prepare_workspace(str(repo), "feature", tmp_path / "feature")
    assert (feature / "a.txt").read_text() == "two\n"
    assert (feature / "b.txt").exists()
    assert git(feature, "rev-parse", "HEAD") == second
    assert git(feature, "config", "user.name") == "Elpis"

    default = prepare_workspace(str(repo), None, tmp_path / "default")
    assert (default / "a.txt").read_text() == "one\n"
    assert not (default / "b.txt").exists()

    by_sha = prepare_workspace(str(repo), first, tmp_path / "by_sha")
    assert git(by_sha, "rev-parse", "HEAD") == first

    by_url = prepare_workspace(f"file://{repo}", "feature", tmp_path / "by_url")
    assert (by_url / "a.txt").read_text() == "two\n"


def test_prepare_bare_repository(git_source: tuple[Path, str, str], tmp_path: Path) -> None:
    repo, _, second = git_source
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(repo), str(bare)], check=True)

    dest = prepare_workspace(str(bare), "feature", tmp_path / "dest")
    assert git(dest, "rev-parse", "HEAD") == second
    assert (dest / "a.txt").read_text() == "two\n"


def test_prepare_unknown_ref_fails_clearly(git_source: tuple[Path, str, str], tmp_path: Path) -> None:
    repo, _, _ = git_source
    with pytest.raises(WorkspaceError, match="ref 'no-such-branch' not found"):
        prepare_workspace(str(repo), "no-such-branch", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("repo", ["file:///nonexistent/repo.git", "/nonexistent/local/repo"])
def test_prepare_unreachable_repository_fails_clearly(repo: str, tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match=f"could not clone {repo}: .+") as caught:
        prepare_workspace(repo, None, tmp_path / "dest")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "dest").exists()


def test_prepare_replaces_what_was_at_dest(plain_source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "stale").mkdir(parents=True)
    (dest / "stale" / "junk.txt").write_text("old run")

    prepare_workspace(str(plain_source), None, dest)
    assert not (dest / "stale").exists()
    assert (dest / "README.md").exists()


def test_prepare_plain_directory_into_itself(plain_source: Path) -> None:
    dest = prepare_workspace(str(plain_source), None, plain_source / "workspaces" / "1")
    assert (dest / "README.md").exists()
    assert not (dest / "workspaces" / "1").exists()


def test_diff_restores_changes_in_a_new_workspace(plain_source: Path, tmp_path: Path) -> None:
    first = prepare_workspace(str(plain_source), None, tmp_path / "first")
    (first / "pkg" / "mod.py").write_text("def f():\n    return 2\n")
    (first / "pkg" / "new.py").write_text("NEW = True\n")
    (first / "data" / "deep").mkdir(parents=True)
    (first / "data" / "deep" / "blob.bin").write_bytes(bytes(range(256)) * 4)
    (first / "old.txt").unlink()
    git(first, "commit", "--quiet", "-am", "the agent committed")  # the diff is still against the start

    diff = workspace_diff(first)
    assert "pkg/new.py" in diff and "GIT binary patch" in diff
    assert ".git/" not in diff
    assert diff_stats(diff) == 4  # mod.py -1 +1, new.py +1, old.txt -1

    second = prepare_workspace(str(plain_source), None, tmp_path / "second", diff=diff)
    assert tree(second) == tree(first)
    assert workspace_diff(second) == diff


def test_diff_of_non_utf8_file_round_trips(plain_source: Path, tmp_path: Path) -> None:
    first = prepare_workspace(str(plain_source), None, tmp_path / "first")
    (first / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))

    diff = workspace_diff(first)
    diff.encode("utf-8")  # storable as text
    second = prepare_workspace(str(plain_source), None, tmp_path / "second", diff=diff)
    assert (second / "latin1.txt").read_bytes() == b"caf\xe9\n"


def test_bad_diff_fails_clearly(plain_source: Path, tmp_path: Path) -> None:
    bad = "diff --git a/nope.txt b/nope.txt\n--- a/nope.txt\n+++ b/nope.txt\n@@ -1 +1 @@\n-x\n+y\n"
    with pytest.raises(WorkspaceError, match="could not restore the task's changes"):
        prepare_workspace(str(plain_source), None, tmp_path / "dest", diff=bad)


def test_diff_stats_counts_changed_lines_only() -> None:
    diff = (
        "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,3 +1,3 @@\n keep\n--- removed dashes\n+++ added pluses\n"
        " keep\n\\ No newline at end of file\n"
        "diff --git a/y b/y\nnew file mode 100644\n--- /dev/null\n+++ b/y\n@@ -0,0 +1,2 @@\n+a\n+b\n"
    )
    assert diff_stats(diff) == 4
    assert diff_stats("") == 0


# --- confinement -------------------------------------------------------------------------------------------


def test_resolve_inside(workspace: Path) -> None:
    root = workspace.resolve()
    assert resolve_inside(workspace, "src/app.py") == root / "src" / "app.py"
    assert resolve_inside(workspace, str(root / "notes.txt")) == root / "notes.txt"
    assert resolve_inside(workspace, "src/../new/file.txt") == root / "new" / "file.txt"
    assert resolve_inside(workspace, ".") == root
    for bad in ("..", "../x", "/etc/passwd", ".git", ".git/config", "src/../.git/HEAD", "sub/../../x"):
        with pytest.raises(WorkspaceEscapeError, match="is outside the workspace"):
            resolve_inside(workspace, bad)


ESCAPES = ["../../etc/passwd", "/etc/passwd", "etc_link/passwd", ".git/config", "src/../../outside.txt"]


@pytest.mark.parametrize("path", ESCAPES)
def test_file_tools_refuse_paths_outside(workspace: Path, tmp_path: Path, path: str) -> None:
    (workspace / "etc_link").symlink_to("/etc")
    config_before = (workspace / ".git" / "config").read_bytes()
    tools = make_toolbox(workspace)

    calls: list[tuple[str, dict[str, str]]] = [
        ("read_file", {"path": path}),
        ("write_file", {"path": path, "content": "pwned\n"}),
        ("list_dir", {"path": path}),
        ("search", {"pattern": "root", "path": path}),
    ]
    for name, args in calls:
        result = tools.call(name, args)
        assert not result.ok, (name, result.output)
        assert result.error_kind == "escape"
        assert result.output == f"refused: '{path}' is outside the workspace"
        assert "root:" not in result.output

    assert not (tmp_path / "outside.txt").exists()
    assert (workspace / ".git" / "config").read_bytes() == config_before
    assert "pwned" not in Path("/etc/passwd").read_text()


def test_symlink_to_outside_directory_is_refused_for_writes(workspace: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside_dir"
    outside.mkdir()
    (workspace / "out").symlink_to(outside)
    (workspace / "dangling").symlink_to(tmp_path / "created_by_agent.txt")
    tools = make_toolbox(workspace)

    assert tools.call("write_file", {"path": "out/x.txt", "content": "x"}).error_kind == "escape"
    assert tools.call("write_file", {"path": "dangling", "content": "x"}).error_kind == "escape"
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "created_by_agent.txt").exists()


def test_search_does_not_follow_symlinks_out(workspace: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("needle in the host\n")
    (workspace / "leak.txt").symlink_to(secret)
    result = make_toolbox(workspace).call("search", {"pattern": "needle"})
    assert result.ok
    assert "notes.txt:2:needle here" in result.output
    assert "host" not in result.output


# --- file tools --------------------------------------------------------------------------------------------


def test_write_then_read_round_trip(workspace: Path) -> None:
    tools = make_toolbox(workspace)
    content = "print('héllo')\n\n    indented\n"

    written = tools.call("write_file", {"path": "new/deep/notes.txt", "content": content})
    assert written.ok and written.changed_files
    assert (workspace / "new" / "deep" / "notes.txt").read_text(encoding="utf-8") == content

    read = tools.call("read_file", {"path": "new/deep/notes.txt"})
    assert read.ok and not read.changed_files
    # Shown with line numbers, so an edit can name what it changes.
    assert read.output == "   1| print('héllo')\n   2| \n   3|     indented"


def test_read_file_errors_and_cap(workspace: Path) -> None:
    tools = make_toolbox(workspace, read_cap=2000)
    missing = tools.call("read_file", {"path": "nope.py"})
    assert not missing.ok and missing.error_kind == "not_found"
    assert tools.call("read_file", {"path": "src"}).error_kind == "bad_args"

    (workspace / "big.txt").write_text("".join(f"line {n}\n" for n in range(1, 5001)))
    big = tools.call("read_file", {"path": "big.txt"})
    assert big.ok
    assert len(big.output) < 2200
    assert big.output.startswith("   1| line 1\n")
    assert "read_file with start_line=" in big.output.splitlines()[-1]
    # The rest is one ranged call away.
    rest = tools.call("read_file", {"path": "big.txt", "start_line": 4999, "end_line": 6000})
    assert rest.ok and rest.output == "4999| line 4999\n5000| line 5000"
    assert tools.call("read_file", {"path": "big.txt", "start_line": 6000}).error_kind == "bad_args"


def test_file_tools_refuse_special_files(workspace: Path) -> None:
    os.mkfifo(workspace / "pipe")
    tools = make_toolbox(workspace)
    assert tools.call("read_file", {"path": "pipe"}).error_kind == "bad_args"
    assert tools.call("write_file", {"path": "pipe", "content": "x"}).error_kind == "bad_args"
    assert tools.call("run", {"command": "echo \x00"}).error_kind == "bad_args"
    assert tools.call("read_file", {"path": "a\x00b"}).error_kind == "bad_args"


def test_list_dir(workspace: Path) -> None:
    tools = make_toolbox(workspace)
    listing = tools.call("list_dir", {})
    assert listing.ok
    assert listing.output.splitlines() == ["notes.txt", "src/"]
    assert tools.call("list_dir", {"path": "src"}).output == "app.py"
    assert tools.call("list_dir", {"path": "nope"}).error_kind == "not_found"


def test_search_finds_a_line(workspace: Path) -> None:
    tools = make_toolbox(workspace)
    found = tools.call("search", {"pattern": r"def \w+\(\)"})
    assert found.ok
    assert found.output == "src/app.py:1:def greet():"

    assert (
        tools.call("search", {"pattern": "needle", "path": "notes.txt"}).output == "notes.txt:2:needle here"
    )
    assert "no matches" in tools.call("search", {"pattern": "absent-text"}).output
    literal = tools.call("search", {"pattern": "greet("})  # not a valid regex: searched literally
    assert literal.ok and "src/app.py:1:def greet():" in literal.output
    # Seen in the eval: `self.balance += amount` as a regex matches `self.balance = amount`, so the
    # model's search for a line it had read found nothing. No match as a regex: searched as text.
    (workspace / "acc.py").write_text("x = 1\nself.balance += amount\n")
    as_text = tools.call("search", {"pattern": "self.balance += amount", "path": "acc.py"})
    assert as_text.output == "(no match as a regular expression; as text:)\nacc.py:2:self.balance += amount"
    assert tools.call("search", {"pattern": "x = 1", "path": "acc.py"}).output == "acc.py:1:x = 1"
    assert "no matches" in tools.call("search", {"pattern": "self.total += 1", "path": "acc.py"}).output


def test_search_output_is_capped(workspace: Path) -> None:
    (workspace / "many.txt").write_text("match line\n" * 5000)
    result = make_toolbox(workspace, output_cap=1000).call("search", {"pattern": "match"})
    assert result.ok
    assert len(result.output) < 1200
    assert "more matches not shown" in result.output


# --- run and run_tests -------------------------------------------------------------------------------------


def test_run_command_in_workspace(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELPIS_SECRET_TOKEN", "s3cret")
    tools = make_toolbox(workspace)

    result = tools.call("run", {"command": "pwd; echo $HOME; env; echo err >&2"})
    assert result.ok and result.exit_code == 0 and result.changed_files
    lines = result.output.splitlines()
    assert lines[0] == str(workspace.resolve())
    assert lines[1] == str(workspace.resolve())
    assert "err" in lines
    assert "s3cret" not in result.output

    which = tools.call("run", {"command": "python -c 'import sys; print(sys.executable)'"})
    assert Path(which.output.strip()).parent == Path(sys.executable).parent


def test_run_nonzero_exit(workspace: Path) -> None:
    result = make_toolbox(workspace).call("run", {"command": "echo oops; exit 3"})
    assert not result.ok
    assert result.exit_code == 3
    assert result.error_kind == "nonzero_exit"
    assert result.output == "oops\n[exit code 3]"


def test_only_code_that_asserts_something_is_a_check() -> None:
    """A `python` call checks a change only when it asserts something; a word "assert" in a string or a
    comment is none, and code that does not parse is read line by line."""
    assert is_check("from m import f\nassert f(2) == 4")
    assert is_check("for x in [1, 2]:\n    assert f(x) > 0")
    assert not is_check("def f(x):\n    return x\nprint(f(2))")
    assert not is_check("print('assert f(2) == 4')  # assert nothing")
    assert is_check("assert f(2) == 4\nthis line ( does not parse")
    assert not is_check("print(f(2))\nthis line ( does not parse")


def test_python_runs_code_against_the_workspace_modules(workspace: Path) -> None:
    """The review turn's check: the code imports the workspace's modules; a silent success says every
    assert held; a failed one-line assert of a comparison shows its line and both sides' values (and
    says the expectation may be the wrong part), any other error its traceback; quotes need no shell
    escaping; protected files stay as they were."""
    tools = make_toolbox(workspace, protected=["notes.txt"])
    held = tools.call("python", {"code": "from src.app import greet\nassert greet() == 'hello', greet()"})
    assert held.ok and held.output == "(no output: the code ran without an error, every assert held)"

    failed = tools.call("python", {"code": 'from src.app import greet\nassert greet() == "Hi", "greeting"'})
    assert not failed.ok and failed.error_kind == "nonzero_exit" and failed.exit_code == 3
    assert failed.output.splitlines()[:2] == [
        'line 2: assert greet() == "Hi", "greeting"',
        "AssertionError: greeting: the left side is 'hello', the right side 'Hi'",
    ]
    assert "Either the code or the value an assert expects is wrong" in failed.output

    # Every top-level assert runs: one that expected a wrong value does not hide the next one's failure.
    code = "\n".join(
        [
            "from src.app import greet",
            "assert greet() == 'Hello'",
            "assert greet().upper() == 'hello'",
            "assert greet() == 'hello'",
        ]
    )
    several = tools.call("python", {"code": code})
    assert several.exit_code == 3 and several.output.splitlines()[:5] == [
        "line 2: assert greet() == 'Hello'",
        "AssertionError: the left side is 'hello', the right side 'Hello'",
        "line 3: assert greet().upper() == 'hello'",
        "AssertionError: the left side is 'HELLO', the right side 'hello'",
        "2 of 3 asserts failed; the others held.",
    ]
    # A line that does not parse is skipped, said so, and the other lines still run.
    broken = "\n".join(["from src.app import greet", "assert greet() == 'hello", "assert greet() == 'Hi'"])
    skipped = tools.call("python", {"code": broken})
    assert skipped.exit_code == 3 and skipped.output.splitlines()[:4] == [
        "line 2: assert greet() == 'hello",
        "SyntaxError: unterminated string literal; this line was skipped",
        "line 3: assert greet() == 'Hi'",
        "AssertionError: the left side is 'hello', the right side 'Hi'",
    ]
    only_broken = tools.call("python", {"code": "from src.app import greet\nassert greet() == 'hello"})
    assert only_broken.exit_code == 1 and "this line was skipped" in only_broken.output
    # Two lists (or two long strings) that differ: where they first part, and their sizes if they differ.
    lists = "assert [2, 3, 4] == [1, 2, 3]\nassert [1, 2] == [1, 2, 3]\n"
    lists += "assert 'a-b-c-d-e-f-g' == 'a-b-c-d-e-f-h'"
    parted = tools.call("python", {"code": lists}).output.splitlines()
    assert parted[1] == (
        "AssertionError: the left side is [2, 3, 4], the right side [1, 2, 3]; "
        "they first differ at index 0: 2 on the left, 1 on the right"
    )
    assert parted[3].endswith("[1, 2, 3]; the left has 2 items, the right 3")
    assert parted[5].endswith("they first differ at index 12: 'g' on the left, 'h' on the right")
    # An assert inside a loop still stops the code at its first failure, as Python does.
    looped = tools.call("python", {"code": "for x in [1, 2]:\n    assert x == 0\nprint('after')"})
    assert looped.exit_code == 3 and looped.output.splitlines()[0] == "line 2: assert x == 0"
    assert "after" not in looped.output

    crashed = tools.call("python", {"code": "x = 1\nraise KeyError(x)"})
    assert (
        crashed.exit_code == 1
        and 'File "<code>", line 2' in crashed.output
        and "KeyError: 1" in crashed.output
    )
    assert "Either the code" not in crashed.output

    printed = tools.call("python", {"code": "print(6 * 7)"})
    assert printed.ok and printed.output == "42"

    tampered = tools.call("python", {"code": "open('notes.txt', 'w').write('gone')"})
    assert (
        "protected" in tampered.output
        and (workspace / "notes.txt").read_text() == "first line\nneedle here\n"
    )

    # A line the grammar's length cap cut is left out, and the result says so; a shorter broken line is
    # the model's own syntax error.
    long = "x = 1\nassert x == 1\nassert [x] != [" + "2, " * PYTHON_CODE_CHARS
    capped = tools.call("python", {"code": long[:PYTHON_CODE_CHARS]})
    assert capped.ok and capped.output.startswith("(the last line was cut off at")
    # A string literal a JSON-decoded newline split is joined again with a \\n escape.
    split = tools.call("python", {"code": "assert len('a\nb'.splitlines()) == 2\nprint('ok')"})
    assert split.ok and split.output == "ok", split.output
    broken = tools.call("python", {"code": "x = 1\nassert x =="})
    assert not broken.ok and "SyntaxError" in broken.output and "cut off" not in broken.output

    empty = tools.call("python", {"code": "  "})
    assert not empty.ok and empty.error_kind == "bad_args" and "'code' is empty" in empty.output


def test_run_timeout_kills_command(workspace: Path) -> None:
    result = make_toolbox(workspace, command_timeout=1).call("run", {"command": "echo started; sleep 30"})
    assert not result.ok
    assert result.error_kind == "timeout"
    assert result.exit_code is None
    assert result.output.startswith("started")
    assert result.output.endswith("[killed after 1.0 s timeout]")


def test_run_timeout_kills_grandchildren(workspace: Path) -> None:
    tools = make_toolbox(workspace, command_timeout=2)
    result = tools.call("run", {"command": "sh -c 'sleep 30.0417 & wait'"})
    assert result.error_kind == "timeout"
    assert wait_gone("sleep 30.0417") == [], "a grandchild survived the timeout"


def test_run_kills_leftover_background_processes(workspace: Path) -> None:
    result = make_toolbox(workspace).call("run", {"command": "sleep 30.0419 & echo done"})
    assert result.ok and result.output == "done"
    assert wait_gone("sleep 30.0419") == [], "a background process outlived its command"


def test_run_output_is_capped(workspace: Path) -> None:
    tools = make_toolbox(workspace, output_cap=4000)
    result = tools.call("run", {"command": "python -c \"print('a' * 50000 + 'b' * 50000)\""})
    assert result.ok
    assert len(result.output) <= 4000 + 100
    assert "[... " in result.output and " bytes cut ...]" in result.output
    assert result.output.startswith("a") and result.output.endswith("b")


def test_run_tests_on_sample_repo_before_and_after_fix(tmp_path: Path) -> None:
    root = prepare_workspace(str(SAMPLE_REPO), None, tmp_path / "calc")
    tools = make_toolbox(root, test_command="python -m pytest -q", command_timeout=120, output_cap=8000)

    before = tools.call("run_tests", {})
    assert before.tests_run
    assert before.tests_passed is False
    assert before.failures == 1, before.output
    assert "test_subtract" in before.output

    script = json.loads((SAMPLES / "fix_script.json").read_text())
    assert [step["tool"] for step in script][-1] == "finish"
    results: list[ToolResult] = [tools.call(step["tool"], step["args"]) for step in script]
    assert all(r.ok for r in results[1:]), [r.output for r in results]

    after = tools.call("run_tests", {})
    assert after.tests_run and after.tests_passed is True and after.failures == 0, after.output
    assert results[-1].finished and results[-1].summary

    diff = workspace_diff(root)
    assert "diff --git a/calc/ops.py b/calc/ops.py" in diff
    assert diff.count("diff --git") == 1  # no caches or other stray files in the task's diff
    assert diff_stats(diff) == 2


def test_python_says_a_redefined_function_changed_no_file(workspace: Path) -> None:
    """Code that defines a function a source file defines (the eval: format_price rewritten in `python`
    three turns running) is told that no file changed and which tool would change it; a test file's
    names and a new name get no such note."""
    (workspace / "tests").mkdir()
    (workspace / "tests" / "test_app.py").write_text("def test_greet():\n    pass\n")
    tools = make_toolbox(workspace)
    redefined = tools.call("python", {"code": "def greet():\n    return 'hi'\nprint(greet())"})
    assert redefined.ok and redefined.output.splitlines() == [
        "hi",
        "Defining greet here only ran it in a scratch interpreter: src/app.py did not change. "
        "To change a file, call edit_file or write_file.",
    ]
    assert (workspace / "src" / "app.py").read_text() == "def greet():\n    return 'hello'\n"
    for code in ("def test_greet():\n    pass", "def wave():\n    return 1"):
        assert "scratch" not in tools.call("python", {"code": code}).output


def test_python_says_where_an_error_was_raised(workspace: Path) -> None:
    """An error raised inside a workspace file is the code's, not the check's (the eval: transpose([])
    raised IndexError and the model finished); one raised in the check's own lines gets no such note."""
    (workspace / "src" / "div.py").write_text("def half(x):\n    return 10 // x\n")
    tools = make_toolbox(workspace)
    raised = tools.call("python", {"code": "from src.div import half\nassert half(0) == 0"})
    assert (
        raised.exit_code == 1
        and raised.check_failed
        and raised.output.endswith(
            "ZeroDivisionError: integer division or modulo by zero\n[exit code 1]\n"
            "The error was raised in src/div.py (in half), not in the check's own code: "
            "the code fails for this input."
        )
    )
    own = tools.call("python", {"code": "from src.div import half\nassert half(1) == 10 // 0"})
    assert own.exit_code == 1 and "ZeroDivisionError" in own.output and "raised in" not in own.output
    assert not own.check_failed


@pytest.mark.parametrize(
    "body",
    ["    if x < 0:\n        raise ValueError('negative')\n", "    if x < 0: raise ValueError('negative')\n"],
)
def test_python_says_when_the_code_raised_on_purpose(workspace: Path, body: str) -> None:
    """An error from a raise statement in a workspace file is the code refusing the input, which may be
    what the task asks (the eval: a right overdraft fix, checked by comparing the refused payment with a
    string, was then "fixed" by taking the raise out). The note says so and blames neither side."""
    (workspace / "src" / "sign.py").write_text(f"def root(x):\n{body}    return x ** 0.5\n")
    tools = make_toolbox(workspace)
    raised = tools.call("python", {"code": "from src.sign import root\nassert root(-4) == 2"})
    assert raised.exit_code == 1 and not raised.check_failed
    assert raised.output.endswith(
        "ValueError: negative\n[exit code 1]\n"
        "The code raised this on purpose, with a raise statement in src/sign.py (in root). If the task "
        "says this input must raise it, the code is right and the check is wrong (expect the error with "
        "try/except); if not, fix the code."
    )
    assert "not in the check's own code" not in raised.output


def test_python_says_when_the_check_itself_raised(workspace: Path) -> None:
    """Seen in the eval: `Cart().add('apple', 2).total()` (add returns None) ended in a bare AttributeError,
    taken for a fault of the right code under check. An error whose traceback ends in the check's own line
    names that line; one raised inside a workspace file does not."""
    (workspace / "src" / "cart.py").write_text(
        "class Cart:\n    def __init__(self):\n        self.lines = []\n\n"
        "    def add(self, price):\n        self.lines.append(price)\n\n"
        "    def total(self):\n        return sum(self.lines)\n"
    )
    tools = make_toolbox(workspace)
    code = "from src.cart import Cart\nassert Cart().total() == 0\nassert Cart().add(2).total() == 2"
    chained = tools.call("python", {"code": code})
    assert chained.exit_code == 1 and not chained.check_failed
    assert chained.output.endswith(
        "[exit code 1]\nThe error was raised by line 3 of the check itself (`assert Cart().add(2).total() "
        "== 2`), not inside the code under check."
    )
    inside = tools.call(
        "python", {"code": "from src.cart import Cart\nc = Cart()\nc.lines = [1, 'a']\nc.total()"}
    )
    assert inside.check_failed and "of the check itself" not in inside.output
    assert "The error was raised in src/cart.py (in total)" in inside.output


def test_python_imports_the_usual_check_helpers_it_uses(workspace: Path) -> None:
    """Seen in the eval: a review check `assert fahrenheit_to_celsius(212) == pytest.approx(100)` ended
    in a NameError, and the review's one check was spent. pytest, math, re and json are there when the
    code uses them; the code's own line numbers stay."""
    tools = make_toolbox(workspace)
    code = "assert 0.1 + 0.2 == pytest.approx(0.3)\nassert math.isclose(math.pi, 3.14159, rel_tol=1e-3)"
    assert tools.call("python", {"code": code}).ok
    failed = tools.call("python", {"code": "x = 1\nassert re.match('a', 'b')"})
    assert failed.exit_code == ASSERT_FAILED and failed.output.startswith("line 2: assert re.match")
    # A name the code does not use as a module is not imported for it.
    unknown = tools.call("python", {"code": "print(pytest)"})
    assert unknown.exit_code == 1 and "NameError: name 'pytest' is not defined" in unknown.output


def test_python_imports_the_changed_modules_first(tmp_path: Path) -> None:
    """In a prepared workspace the names of the modules changed so far (tests left out) are there
    without an import, and the code's own line numbers stay in its traceback."""
    root = prepare_workspace(str(SAMPLE_REPO), None, tmp_path / "calc")
    tools = make_toolbox(root)
    before = tools.call("python", {"code": "subtract(5, 3)"})
    assert not before.ok and "NameError: name 'subtract' is not defined" in before.output
    (root / "tests" / "test_ops.py").write_text("import calc.ops\n")  # a changed test: not imported
    tools.call(
        "edit_file",
        {
            "path": "calc/ops.py",
            "search": "return a + b\n\n\ndef multiply",
            "replace": "return a - b\n\n\ndef multiply",
        },
    )
    held = tools.call("python", {"code": "assert subtract(5, 3) == 2\nassert add(2, 2) == 4"})
    assert held.ok and held.output == "(no output: the code ran without an error, every assert held)"
    failed = tools.call("python", {"code": "x = 1\nassert subtract(1, 1) == 5"})
    assert not failed.ok and "line 2: assert subtract(1, 1) == 5" in failed.output
    assert "the left side is 0, the right side 5" in failed.output
    assert "test_ops" not in tools.call("python", {"code": "print(sorted(globals()))"}).output


def test_sample_batch_tasks_fail_before_and_pass_after(tmp_path: Path) -> None:
    tasks = yaml.safe_load((SAMPLES / "batch.yaml").read_text())["tasks"]
    assert len(tasks) >= 3
    assert all(t["repo"] == "samples/calc" and t["test_command"] and t["instruction"] for t in tasks)

    fixes = [
        {"calc/ops.py": ("return a + b\n\n\ndef multiply", "return a - b\n\n\ndef multiply")},
        {
            "calc/ops.py": (
                "    return a / b\n",
                "    return a / b\n\n\ndef power(base, exponent):\n    return base ** exponent\n",
            ),
            "tests/test_power.py": (
                "",
                "from calc.ops import power\n\n\ndef test_power():\n    assert power(2, 3) == 8\n",
            ),
        },
        {"calc/text.py": ("def slugify(text):\n", 'def slugify(text):\n    """Return a URL slug."""\n')},
    ]
    for number, (task, fix) in enumerate(zip(tasks[:3], fixes, strict=True)):
        root = prepare_workspace(str(ELPIS_ROOT / task["repo"]), task["ref"], tmp_path / f"task{number}")
        tools = make_toolbox(root, test_command=task["test_command"], command_timeout=120)
        assert not tools.call("run_tests", {}).tests_passed, task["instruction"]
        for path, (old, new) in fix.items():
            file = root / path
            text = file.read_text() if file.exists() else ""
            assert old in text
            file.write_text(text.replace(old, new, 1) if old else new)
        passed = tools.call("run_tests", {})
        assert passed.tests_passed, passed.output
    # Seen in `make run`: the docstring task passed with "Text helpers.", which says nothing of what
    # slugify returns; the check now asks for that.
    root = prepare_workspace(str(ELPIS_ROOT / tasks[2]["repo"]), None, tmp_path / "vague")
    text = root / "calc" / "text.py"
    text.write_text(
        text.read_text().replace("def slugify(text):\n", 'def slugify(text):\n    """Text helpers."""\n')
    )
    vague = make_toolbox(root, test_command=tasks[2]["test_command"], command_timeout=120)
    assert not vague.call("run_tests", {}).tests_passed


def test_run_tests_counts_failures_from_pytests_junit_report(tmp_path: Path) -> None:
    """The count comes from pytest's JUnit XML (asked for through PYTEST_ADDOPTS, the command as the
    task wrote it), so it holds where the output has no summary line to read; the report stays out of
    the task's diff, and one left by an earlier run does not count for a command that wrote none."""
    source = tmp_path / "source"
    (source / "tests").mkdir(parents=True)
    (source / "tests" / "test_x.py").write_text(
        "import pytest\n\n"
        "def test_a():\n    assert 1 == 2\n\n"
        "def test_b():\n    assert 'a' == 'b'\n\n"
        "def test_c():\n    pass\n\n"
        "@pytest.fixture\ndef broken():\n    raise RuntimeError('fixture')\n\n"
        "def test_d(broken):\n    pass\n"
    )
    root = prepare_workspace(str(source), None, tmp_path / "ws")

    quiet = make_toolbox(root, test_command="python -m pytest -q > /dev/null", command_timeout=120)
    result = quiet.call("run_tests", {})
    assert not result.tests_passed
    assert parse_test_failures(result.output) is None, result.output  # nothing for the regex to read
    assert result.failures == 3, result.output  # two failures and the fixture's error
    assert (root / JUNIT_REPORT).is_file()
    assert workspace_diff(root) == ""

    other = make_toolbox(root, test_command="echo no runner here; exit 1").call("run_tests", {})
    assert not other.tests_passed and other.failures is None, other.output


def test_junit_failures_reads_every_suite_and_refuses_what_is_no_report(tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    assert junit_failures(report) is None  # none written
    report.write_text(
        '<testsuites><testsuite name="a" tests="3" failures="1" errors="0"/>'
        '<testsuite name="b" tests="2" failures="0" errors="2"/></testsuites>'
    )
    assert junit_failures(report) == 3
    report.write_text('<testsuite name="a" tests="4" failures="0" errors="0"/>')
    assert junit_failures(report) == 0
    for junk in ("<testsuites><testsuite", "<html/>", '<testsuite failures="many"/>'):
        report.write_text(junk)
        assert junit_failures(report) is None, junk


def test_a_toolbox_may_be_made_before_its_workspace(tmp_path: Path) -> None:
    """The agent makes its tools with the rest of its state; the workspace is prepared after."""
    root = tmp_path / "not-yet"
    tools = make_toolbox(root)
    missing = tools.call("list_dir", {})
    assert not missing.ok and missing.error_kind == "os_error"
    assert missing.output == f"workspace {root} is not a directory"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    assert tools.call("list_dir", {}).ok


def test_run_tests_without_test_command(workspace: Path) -> None:
    result = make_toolbox(workspace, test_command=None).call("run_tests", {})
    assert not result.ok
    assert result.output == "no test command for this task"


@pytest.mark.parametrize(
    ("output", "failures"),
    [
        ("F....\n1 failed, 4 passed in 0.03s", 1),
        ("=== 2 failed, 1 passed, 3 errors in 1.20s ===", 5),
        ("ERROR tests/x.py\n!!! Interrupted: 1 error during collection !!!\n1 error in 0.10s", 1),
        ("5 passed in 0.01s", 0),
        ("Ran 3 tests in 0.001s\n\nFAILED (failures=1, errors=2)", 3),
        ("Ran 3 tests in 0.001s\n\nFAILED (errors=1, skipped=1)", 1),
        ("Ran 3 tests in 0.001s\n\nOK", 0),
        ("Traceback (most recent call last):\nSyntaxError: invalid syntax", None),
        ("", None),
    ],
)
def test_parse_test_failures(output: str, failures: int | None) -> None:
    assert parse_test_failures(output) == failures


# --- dispatch ----------------------------------------------------------------------------------------------


def test_unknown_tool_and_bad_args(workspace: Path) -> None:
    tools = make_toolbox(workspace)

    unknown = tools.call("delete_everything", {})
    assert not unknown.ok and unknown.error_kind == "unknown_tool"
    assert "read_file" in unknown.output

    bad_calls: list[tuple[str, object]] = [
        ("read_file", {}),
        ("read_file", {"path": 3}),
        ("read_file", {"path": "a", "mode": "rb"}),
        ("write_file", {"path": "a.txt"}),
        ("run", {"command": ""}),
        ("finish", "done"),
    ]
    for name, args in bad_calls:
        result = tools.call(name, args)  # type: ignore[arg-type]
        assert not result.ok, (name, args)
        assert result.error_kind == "bad_args", (name, args, result.output)
        assert result.output.startswith(f"bad arguments for {name}")
    assert not (workspace / "a.txt").exists()


def test_finish(workspace: Path) -> None:
    result = make_toolbox(workspace).call("finish", {"summary": "did it"})
    assert result.ok and result.finished and result.summary == "did it"
    # Seen in the eval: a summary that ran on, repeating itself, until max_tokens cut the reply. The
    # grammar caps it (the schema's maxLength) and the arguments' validation says so.
    assert TOOL_SCHEMAS["finish"]["properties"]["summary"]["maxLength"] == 300
    long = make_toolbox(workspace).call("finish", {"summary": "x" * 301})
    assert not long.ok and long.error_kind == "bad_args" and "summary" in long.output


def test_schemas_and_descriptions_cover_every_tool(workspace: Path) -> None:
    tools = make_toolbox(workspace)
    assert set(TOOL_SCHEMAS) == set(TOOL_DESCRIPTIONS)
    for name, schema in TOOL_SCHEMAS.items():
        assert schema["type"] == "object"
        assert schema["additionalProperties"] is False
        assert set(schema["required"]) <= set(schema["properties"])
        assert tools.call(name, {"no_such_argument": "x"}).error_kind == "bad_args"


# --- edit_file, ranges, protected paths, the guards that keep a small model from breaking files ---------


def test_edit_file_replaces_exact_text_and_shows_the_result(workspace: Path) -> None:
    tools = make_toolbox(workspace)
    edited = tools.call(
        "edit_file", {"path": "src/app.py", "search": "def greet():", "replace": "def hello():"}
    )
    assert edited.ok and edited.changed_files
    assert "   1| def hello():" in edited.output
    assert (workspace / "src" / "app.py").read_text().startswith("def hello():")


def test_edit_file_not_found_shows_the_closest_lines(workspace: Path) -> None:
    (workspace / "m.py").write_text(
        "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n"
    )
    before = (workspace / "m.py").read_text()
    tools = make_toolbox(workspace)
    missed = tools.call("edit_file", {"path": "m.py", "search": "return a + b", "replace": "x"})
    assert not missed.ok and missed.error_kind == "not_found"
    assert "   2|     return a - b" in missed.output  # the line the model meant, numbered
    assert (workspace / "m.py").read_text() == before


def test_lines_written_under_a_method_def_line_go_in_at_its_indentation(workspace: Path) -> None:
    """Seen in the eval (overdraft_error): `search` the method's def line, `replace` that line and a
    check under it written as if the def were at column 0. The literal edit does not parse; the merge
    took the snippet for the whole method and dropped its body. The lines go under the def line, after
    its docstring, at the method's indentation."""
    source = (
        "class Wallet:\n"
        "    def pay(self, amount):\n"
        '        """Pay `amount`."""\n'
        "        self.balance -= amount\n"
        "        return self.balance\n"
    )
    (workspace / "w.py").write_text(source)
    tools = make_toolbox(workspace)
    check = "def pay(self, amount):\n    if amount > self.balance:\n        raise ValueError('too much')"
    edited = tools.call("edit_file", {"path": "w.py", "search": "def pay(self, amount):", "replace": check})
    assert edited.ok and "(its lines indented as the search's line)" in edited.output, edited.output
    assert (workspace / "w.py").read_text() == (
        "class Wallet:\n"
        "    def pay(self, amount):\n"
        '        """Pay `amount`."""\n'
        "        if amount > self.balance:\n"
        "            raise ValueError('too much')\n"
        "        self.balance -= amount\n"
        "        return self.balance\n"
    )
    # Written at the file's own indentation, the literal edit parses and is made as it stands.
    (workspace / "w.py").write_text(source.replace('        """Pay `amount`."""\n', ""))
    absolute = "def pay(self, amount):\n        if amount < 0:\n            raise ValueError('negative')"
    literal = tools.call(
        "edit_file", {"path": "w.py", "search": "def pay(self, amount):", "replace": absolute}
    )
    assert literal.ok and "indented as" not in literal.output
    assert "    def pay(self, amount):\n        if amount < 0:\n" in (workspace / "w.py").read_text()


def test_edit_occurrence_changes_the_one_place_it_is_given(workspace: Path) -> None:
    """The runner's way to try an ambiguous edit at each place (not a tool the model calls)."""
    text = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a + b\n"
    (workspace / "m.py").write_text(text)
    tools = make_toolbox(workspace)
    second = tools.edit_occurrence("m.py", "return a + b", "return a - b", 1)
    assert second.ok and "(at line 6, one of the 2 places where 'search' occurs)" in second.output
    assert (workspace / "m.py").read_text() == (
        "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
    )
    (workspace / "m.py").write_text(text)
    first = tools.edit_occurrence("m.py", "return a + b", "return a - b", 0)
    assert first.ok and (workspace / "m.py").read_text() == (
        "def add(a, b):\n    return a - b\n\n\ndef sub(a, b):\n    return a + b\n"
    )
    (workspace / "m.py").write_text(text)
    beyond = tools.edit_occurrence("m.py", "return a + b", "return a - b", 5)
    assert not beyond.ok and beyond.error_kind == "bad_args"
    assert (workspace / "m.py").read_text() == text
    assert "edit_occurrence" not in TOOL_SCHEMAS  # never offered to the model


def test_edit_file_not_found_never_adds_a_line_as_a_new_module_level_name(workspace: Path) -> None:
    """A method's line whose search is not found is not taken for a new top-level constant (the eval's
    `count = len(self.lines)`, added at the top level); a constant the file has is still replaced."""
    source = "LIMIT = 3\n\n\nclass Cart:\n    def count(self):\n        n = 0\n        return n\n"
    (workspace / "cart.py").write_text(source)
    tools = make_toolbox(workspace)
    inside = {"path": "cart.py", "search": "n = sum(self.lines)", "replace": "        n = len(self.lines)"}
    missed = tools.call("edit_file", inside)
    assert not missed.ok and missed.error_kind == "not_found" and "   6|         n = 0" in missed.output
    assert (workspace / "cart.py").read_text() == source
    limit = tools.call("edit_file", {"path": "cart.py", "search": "LIMIT = 4", "replace": "LIMIT = 5"})
    assert limit.ok and (workspace / "cart.py").read_text().startswith("LIMIT = 5\n")


def test_edit_file_ambiguous_search_names_each_occurrence(workspace: Path) -> None:
    (workspace / "m.py").write_text(
        "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a + b\n"
    )
    tools = make_toolbox(workspace)
    twice = tools.call("edit_file", {"path": "m.py", "search": "return a + b", "replace": "return a - b"})
    assert not twice.ok and "occurs 2 times" in twice.output and twice.occurrences == 2
    assert "   5| def sub(a, b):" in twice.output and "   1| def add(a, b):" in twice.output
    # Each occurrence names its function, and the answer says how to change just one.
    assert "in add (line 2):" in twice.output and "in sub (line 6):" in twice.output
    assert "give that whole function (or method) with write_file" in twice.output
    fixed = tools.call(
        "edit_file",
        {
            "path": "m.py",
            "search": "def sub(a, b):\n    return a + b",
            "replace": "def sub(a, b):\n    return a - b",
        },
    )
    assert fixed.ok
    assert (workspace / "m.py").read_text().endswith("def sub(a, b):\n    return a - b\n")


def test_edit_file_matches_ignoring_indentation_and_reindents(workspace: Path) -> None:
    (workspace / "m.py").write_text("class A:\n    def f(self):\n        return 1\n")
    tools = make_toolbox(workspace)
    edited = tools.call("edit_file", {"path": "m.py", "search": "return 1", "replace": "return 2"})
    assert edited.ok  # exact substring
    loose = tools.call(
        "edit_file",
        {"path": "m.py", "search": "def f(self):\n    return 2", "replace": "def f(self):\n    return 3"},
    )
    assert loose.ok and "ignoring indentation" in loose.output
    assert (workspace / "m.py").read_text() == "class A:\n    def f(self):\n        return 3\n"


def test_edit_file_extending_a_missing_def_line_appends_but_a_statement_is_edited(workspace: Path) -> None:
    """A `search` that is a missing def line which `replace` extends is new code, appended; a statement
    that `replace` extends is an edit of that statement. Seen in the eval: `return '/posts/' + title`
    (the file has double quotes) extended with `.lower()` was appended after the function."""
    tools = make_toolbox(workspace)
    added = tools.call(
        "edit_file",
        {"path": "src/app.py", "search": "def wave():", "replace": "def wave():\n    return 'bye'"},
    )
    assert added.ok and "appended at the end" in added.output
    assert (workspace / "src" / "app.py").read_text().endswith("\n\n\ndef wave():\n    return 'bye'\n")

    (workspace / "src" / "app.py").write_text('def url(title):\n    return "/posts/" + title\n')
    edited = tools.call(
        "edit_file",
        {
            "path": "src/app.py",
            "search": "return '/posts/' + title",
            "replace": "return '/posts/' + title.lower()",
        },
    )
    assert edited.ok and "matched with the file's quotes" in edited.output, edited.output
    assert (
        workspace / "src" / "app.py"
    ).read_text() == 'def url(title):\n    return "/posts/" + title.lower()\n'


def test_edit_file_empty_search_appends(workspace: Path) -> None:
    (workspace / "m.py").write_text("def add(a, b):\n    return a + b\n\n")
    tools = make_toolbox(workspace)
    appended = tools.call(
        "edit_file", {"path": "m.py", "search": "", "replace": "def power(a, b):\n    return a**b"}
    )
    assert appended.ok
    assert (
        workspace / "m.py"
    ).read_text() == "def add(a, b):\n    return a + b\n\n\ndef power(a, b):\n    return a**b\n"


def test_edits_that_break_python_are_refused(workspace: Path) -> None:
    tools = make_toolbox(workspace)
    before = (workspace / "src" / "app.py").read_text()
    broken = tools.call(
        "edit_file", {"path": "src/app.py", "search": "def greet():", "replace": "def greet("}
    )
    assert not broken.ok and broken.error_kind == "syntax_error" and "line 1" in broken.output
    written = tools.call("write_file", {"path": "src/new.py", "content": "def f(:\n"})
    assert not written.ok and written.error_kind == "syntax_error"
    assert (workspace / "src" / "app.py").read_text() == before and not (
        workspace / "src" / "new.py"
    ).exists()


def test_write_file_with_some_definitions_merges_them(workspace: Path) -> None:
    """A small model fixing one function writes that function: it replaces the definition of that name,
    a new one is added, imports go to the top, and the rest of the file stays as it was."""
    (workspace / "m.py").write_text(
        '"""Maths."""\n\nimport os\n\n\ndef add(a, b):\n    return a - b\n\n\nclass Box:\n'
        "    def size(self):\n        return 0\n\n    def name(self):\n        return 'box'\n"
    )
    tools = make_toolbox(workspace)
    merged = tools.call(
        "write_file",
        {
            "path": "m.py",
            "content": "import math\n\ndef add(a, b):\n    return a + b\n\n"
            "def power(a, b):\n    return a**b\n",
        },
    )
    assert merged.ok and "replaced add; added power, import math; the rest of the file" in merged.output
    method = tools.call("write_file", {"path": "m.py", "content": "def size(self):\n    return 1\n"})
    assert method.ok and "replaced size" in method.output
    assert (workspace / "m.py").read_text() == (
        '"""Maths."""\n\nimport os\nimport math\n\n\ndef add(a, b):\n    return a + b\n\n\nclass Box:\n'
        "    def size(self):\n        return 1\n\n    def name(self):\n        return 'box'\n\n\n"
        "def power(a, b):\n    return a**b\n"
    )
    # Content that is neither the whole file nor definitions is refused, and the file is kept.
    before = (workspace / "m.py").read_text()
    dropped = tools.call("write_file", {"path": "m.py", "content": "print(1)\n"})
    assert not dropped.ok and "would delete add, Box, power" in dropped.output
    assert (workspace / "m.py").read_text() == before
    # edit_file whose search is missing but whose replacement is a whole function merges it too.
    edited = tools.call(
        "edit_file", {"path": "m.py", "search": "def add(x):", "replace": "def add(a, b):\n    return b + a"}
    )
    assert (
        edited.ok and "replaced add" in edited.output and "return b + a" in (workspace / "m.py").read_text()
    )


def test_a_definition_rewritten_without_its_docstring_keeps_it(workspace: Path) -> None:
    """Seen in the eval: the 1.5B model's fixes wrote the function's code alone, and the diff deleted its
    docstring. A function, a class and each method of a rewritten class keep the docstring they had
    when the new text has none; a new docstring is taken as written."""
    (workspace / "m.py").write_text(
        '"""Maths."""\n\n\n@cache\ndef add(a,\n        b):\n    """Sum of a and b."""\n    return a - b\n\n\n'
        'class Box:\n    """A box."""\n\n    def size(self):\n'
        '        """How big.\n\n        In litres.\n        """\n'
        "        return 0\n\n    def name(self): return 'box'\n"
    )
    tools = make_toolbox(workspace)
    fixed = tools.call(
        "write_file", {"path": "m.py", "content": "@cache\ndef add(a,\n        b):\n    return a + b\n"}
    )
    assert fixed.ok and "replaced add (its docstring kept); the rest" in fixed.output, fixed.output
    rewritten = tools.call(
        "write_file",
        {
            "path": "m.py",
            "content": "class Box:\n    def size(self):\n        return 1\n\n"
            "    def name(self):\n        return 'b'\n",
        },
    )
    assert rewritten.ok and "replaced Box (its docstring kept)" in rewritten.output, rewritten.output
    assert (workspace / "m.py").read_text() == (
        '"""Maths."""\n\n\n@cache\ndef add(a,\n        b):\n    """Sum of a and b."""\n    return a + b\n\n\n'
        'class Box:\n    """A box."""\n\n    def size(self):\n'
        '        """How big.\n\n        In litres.\n        """\n'
        "        return 1\n\n    def name(self):\n        return 'b'\n"
    )
    # The same code again is no change; a docstring written anew replaces the old one.
    again = tools.call(
        "write_file", {"path": "m.py", "content": "@cache\ndef add(a,\n        b):\n    return a + b\n"}
    )
    assert again.ok and again.output.startswith("no change")
    documented = tools.call(
        "write_file",
        {
            "path": "m.py",
            "content": '@cache\ndef add(a,\n        b):\n    """Add b to a."""\n    return a + b\n',
        },
    )
    assert documented.ok and "replaced add;" in documented.output
    assert '"""Add b to a."""' in (workspace / "m.py").read_text()
    assert "Sum of a and b" not in (workspace / "m.py").read_text()


def test_a_function_given_only_a_docstring_keeps_its_code(workspace: Path) -> None:
    """Seen in the eval: asked for a docstring, the model wrote the def line and the docstring alone,
    and the merge replaced the whole function, which then returned None. A function or method written
    as a docstring alone gets that docstring and keeps its code (the old docstring goes)."""
    (workspace / "m.py").write_text(
        "def to_f(c):\n    return c * 9 / 5 + 32\n\n\n"
        'class Box:\n    def size(self):\n        """Old."""\n        x = 1\n        return x\n\n'
        "    def name(self):\n        return 'box'\n"
    )
    tools = make_toolbox(workspace)
    documented = tools.call(
        "write_file", {"path": "m.py", "content": 'def to_f(c):\n    """Celsius to Fahrenheit.\n    """\n'}
    )
    assert documented.ok and "replaced to_f (docstring set, its code kept)" in documented.output
    method = tools.call(
        "write_file",
        {"path": "m.py", "content": 'class Box:\n    def size(self):\n        """In litres."""\n'},
    )
    assert method.ok and "Box.size (docstring set, its code kept)" in method.output, method.output
    assert (workspace / "m.py").read_text() == (
        'def to_f(c):\n    """Celsius to Fahrenheit.\n    """\n    return c * 9 / 5 + 32\n\n\n'
        'class Box:\n    def size(self):\n        """In litres."""\n        x = 1\n        return x\n\n'
        "    def name(self):\n        return 'box'\n"
    )
    # A body of its own is taken as written, docstring or not.
    rewritten = tools.call(
        "write_file", {"path": "m.py", "content": 'def to_f(c):\n    """F."""\n    return 0\n'}
    )
    assert rewritten.ok and "replaced to_f;" in rewritten.output
    assert 'def to_f(c):\n    """F."""\n    return 0\n' in (workspace / "m.py").read_text()


def test_a_module_may_not_be_made_to_import_itself(workspace: Path) -> None:
    """Seen in the eval: told to import `slugify` where post_url uses it, the 1.5B model wrote
    `from blog.utils import slugify` into blog/utils.py, the file that defines it (a circular import that
    broke every test). Both edit tools refuse it, say where the import belongs, and leave the file."""
    (workspace / "blog").mkdir()
    (workspace / "blog" / "__init__.py").write_text("")
    utils = workspace / "blog" / "utils.py"
    utils.write_text('"""Text helpers."""\n\n\ndef slugify(title):\n    return title.lower()\n')
    before = utils.read_text()
    tools = make_toolbox(workspace)
    for call in [
        ("write_file", {"path": "blog/utils.py", "content": "from blog.utils import slugify\n"}),
        ("write_file", {"path": "blog/utils.py", "content": "from .utils import slugify\n"}),
        (
            "edit_file",
            {
                "path": "blog/utils.py",
                "search": '"""Text helpers."""',
                "replace": '"""Text helpers."""\nimport blog.utils',
            },
        ),
    ]:
        refused = tools.call(*call)
        assert not refused.ok and refused.error_kind == "bad_args", refused.output
        assert "would import from itself" in refused.output and "file that uses the name" in refused.output
        assert utils.read_text() == before
    # The same import in the module that uses the name is what was meant, and is written.
    (workspace / "blog" / "posts.py").write_text(
        "def post_url(title):\n    return '/posts/' + slugify(title)\n"
    )
    placed = tools.call(
        "write_file", {"path": "blog/posts.py", "content": "from blog.utils import slugify\n"}
    )
    assert placed.ok and "from blog.utils import slugify" in (workspace / "blog" / "posts.py").read_text()


def test_write_file_of_imports_alone_adds_them_to_the_module(workspace: Path) -> None:
    """Seen in the eval: told `timedelta` is not imported, Qwen 1.5B wrote just the import line. That
    is added after the module's imports; the rest of the file is kept, in a module with definitions or
    without, and an import the file already has changes nothing."""
    (workspace / "loans.py").write_text(
        '"""Loans."""\n\nfrom datetime import date\n\n\ndef due(d: date):\n    return d + timedelta(days=1)\n'
    )
    (workspace / "config.py").write_text("UNIT = 'F'\n")
    tools = make_toolbox(workspace)
    added = tools.call("write_file", {"path": "loans.py", "content": "from datetime import timedelta\n"})
    assert added.ok and "added from datetime import timedelta" in added.output
    assert (workspace / "loans.py").read_text() == (
        '"""Loans."""\n\nfrom datetime import date\nfrom datetime import timedelta\n\n\n'
        "def due(d: date):\n    return d + timedelta(days=1)\n"
    )
    again = tools.call("write_file", {"path": "loans.py", "content": "from datetime import timedelta"})
    assert again.ok and again.output.startswith("no change") and not again.changed_files
    assert tools.call("write_file", {"path": "config.py", "content": "import os\n"}).ok
    assert (workspace / "config.py").read_text() == "import os\nUNIT = 'F'\n"
    # Through edit_file with a search that is not there, imports are added the same way.
    edited = tools.call("edit_file", {"path": "config.py", "search": "import sys", "replace": "import json"})
    assert edited.ok and (workspace / "config.py").read_text() == "import os\nimport json\nUNIT = 'F'\n"


def test_write_file_of_a_module_docstring_sets_it_and_keeps_the_code(workspace: Path) -> None:
    """A documentation task: the model writes the docstring alone, or with some of the code."""
    (workspace / "queue.py").write_text("from collections import deque\n\n\nclass Queue:\n    pass\n")
    (workspace / "config.py").write_text('"""Old."""\n\nUNIT = "F"\n')
    tools = make_toolbox(workspace)
    added = tools.call("write_file", {"path": "queue.py", "content": '"""A FIFO queue."""\n'})
    assert added.ok and "added the module docstring" in added.output
    assert (workspace / "queue.py").read_text() == (
        '"""A FIFO queue."""\n\nfrom collections import deque\n\n\nclass Queue:\n    pass\n'
    )
    again = tools.call(
        "write_file",
        {"path": "queue.py", "content": '"""First-in, first-out."""\n\nclass Queue:\n    pass\n'},
    )
    assert again.ok and "replaced Queue, the module docstring" in again.output
    assert (workspace / "queue.py").read_text().startswith('"""First-in, first-out."""\n\nfrom collections')
    assert tools.call("write_file", {"path": "config.py", "content": '"""Units."""'}).ok
    assert (workspace / "config.py").read_text() == '"""Units."""\n\nUNIT = "F"\n'


def test_write_file_of_constants_replaces_or_adds_them(workspace: Path) -> None:
    """Seen in the eval: asked to add pears to PRICES in a module with no function, Qwen 1.5B wrote
    `PRICES['pear'] = 0.5` alone, which replaced the whole module. A module's constants count as its
    definitions: dropping one is refused, and a snippet of constants replaces or adds them by name."""
    (workspace / "prices.py").write_text('"""Prices."""\n\nPRICES = {\n    "apple": 0.3,\n}\n')
    (workspace / "order.py").write_text(
        "from prices import PRICES\n\nBULK = 10\n\n\nclass Order:\n    def size(self):\n        return 1\n"
    )
    tools = make_toolbox(workspace)
    # (`PRICES['pear'] = 0.5` alone now adds the entry: test_write_file_of_dict_items_...)
    lost = tools.call("write_file", {"path": "prices.py", "content": "PRICES.update(pear=0.5)\n"})
    assert not lost.ok and "would delete PRICES" in lost.output
    fixed = tools.call(
        "write_file", {"path": "prices.py", "content": "PRICES = {'apple': 0.3, 'pear': 0.5}\n"}
    )
    assert fixed.ok and "replaced PRICES" in fixed.output
    assert (
        workspace / "prices.py"
    ).read_text() == '"""Prices."""\n\nPRICES = {\'apple\': 0.3, \'pear\': 0.5}\n'
    added = tools.call(
        "write_file", {"path": "order.py", "content": "BULK = 9\nDISCOUNT: float = 0.1\nsize = 2\n"}
    )
    assert added.ok and "replaced BULK; added DISCOUNT, size" in added.output, added.output
    assert (workspace / "order.py").read_text() == (
        "from prices import PRICES\n\nBULK = 9\n\n\nDISCOUNT: float = 0.1\n\n\nsize = 2\n\n\n"
        "class Order:\n    def size(self):\n        return 1\n"
    )


def test_an_edit_written_with_the_other_quotes_matches(workspace: Path) -> None:
    """Seen in the eval: `UNIT = 'F'` searched in a file that says `UNIT = "F"`."""
    (workspace / "config.py").write_text('UNIT = "F"\nSTATION = "Harbour"\n')
    tools = make_toolbox(workspace)
    edited = tools.call("edit_file", {"path": "config.py", "search": "UNIT = 'F'", "replace": "UNIT = 'C'"})
    assert edited.ok and (workspace / "config.py").read_text() == 'UNIT = "C"\nSTATION = "Harbour"\n'


def test_a_refused_edit_quotes_the_line_that_does_not_parse(workspace: Path) -> None:
    tools = make_toolbox(workspace)
    elided = tools.call(
        "write_file", {"path": "src/new.py", "content": 'def f():\n    x = 1\n    return "x"...\n'}
    )
    assert not elided.ok and elided.error_kind == "syntax_error"
    assert '(line 3: invalid syntax; that line is: return "x"...)' in elided.output


@pytest.mark.parametrize(
    ("ending", "fix"),
    [
        ("range(0, 7)", "']' added at the end of line 3"),
        ("range(0, 7)]]", "']' dropped from line 3"),
        ("range(0, 7)]}}", "'}' dropped from line 3; '}' dropped from line 3"),
        ("range(0, 7))", "')' made ']' on line 3"),
    ],
)
def test_brackets_that_do_not_balance_at_a_line_end_are_balanced(
    workspace: Path, ending: str, fix: str
) -> None:
    """Seen in the eval: week_of's one-line fix written three turns running, each time with the
    comprehension's last brackets wrong (`range(0, 7)`, `range(0, 7)]]`, `range(0, 7)]}}`), and each
    refused as not valid Python. The closers after a line's last other character are made to balance
    when that alone makes the code parse, and the result says what was done; other faults stay refused."""
    source = 'def week_of(start):\n    """Seven dates."""\n    return [start + d for d in range(1, 7)]\n'
    (workspace / "week.py").write_text(source)
    tools = make_toolbox(workspace)
    content = f'def week_of(start):\n    """Seven dates."""\n    return [start + d for d in {ending}\n'
    written = tools.call("write_file", {"path": "week.py", "content": content})
    assert written.ok and f"(the brackets at a line's end did not balance: {fix})" in written.output
    right = 'def week_of(start):\n    """Seven dates."""\n    return [start + d for d in range(0, 7)]\n'
    assert (workspace / "week.py").read_text() == right
    (workspace / "week.py").write_text(source)
    search = "return [start + d for d in range(1, 7)]"
    edited = tools.call(
        "edit_file", {"path": "week.py", "search": search, "replace": f"return [start + d for d in {ending}"}
    )
    assert edited.ok and "did not balance" in edited.output and (workspace / "week.py").read_text() == right
    # A bracket left open on a line that goes on is no fault at a line's end: still refused.
    for content in ("x = (1,\n  2\ny = 3\n", "x = [1,\n2\n"):
        broken = tools.call("write_file", {"path": "week.py", "content": content})
        assert not broken.ok and broken.error_kind == "syntax_error", content


@pytest.mark.parametrize(
    "broken",
    [
        '    "The area of a circle."...',  # the """ written as one quote, then an ellipsis
        '    "The area of a circle".',
        '    "The area of a circle.',  # unterminated
    ],
)
def test_a_docstring_whose_quotes_broke_in_the_json_is_put_back(workspace: Path, broken: str) -> None:
    """Seen in the eval on three tasks: Qwen 1.5B rewrites a function and its one-line docstring comes
    out with one quote (the three it read did not survive its JSON string). The file's own docstring of
    that function is put back; a new function gets a triple-quoted one of the same words."""
    (workspace / "circle.py").write_text(
        'import math\n\n\ndef area(r):\n    """The area of a circle."""\n    return math.pi * r\n'
    )
    tools = make_toolbox(workspace)
    content = (
        f"def area(r):\n{broken}\n    return math.pi * r**2\n\n\ndef half(r):\n{broken}\n    return r / 2\n"
    )
    fixed = tools.call("write_file", {"path": "circle.py", "content": content})
    assert fixed.ok and "docstring whose quotes did not close" in fixed.output, fixed.output
    assert (workspace / "circle.py").read_text() == (
        'import math\n\n\ndef area(r):\n    """The area of a circle."""\n    return math.pi * r**2\n\n\n'
        'def half(r):\n    """The area of a circle."""\n    return r / 2\n'
    )
    edited = tools.call(
        "edit_file",
        {
            "path": "circle.py",
            "search": "    return r / 2\n",
            "replace": f"    return r / 2\n\n\ndef twice(r):\n{broken}\n    return 2 * r\n",
        },
    )
    assert (
        edited.ok
        and "docstring" in edited.output
        and '    """The area of a circle."""\n    return 2 * r' in (workspace / "circle.py").read_text()
    )
    # A string that is meant as code, not a broken docstring, is still refused.
    code = tools.call("write_file", {"path": "other.py", "content": 'x = "open\n'})
    assert not code.ok and code.error_kind == "syntax_error"


def test_an_edit_whose_search_and_replace_are_the_same_is_refused(workspace: Path) -> None:
    tools = make_toolbox(workspace)
    same = tools.call("edit_file", {"path": "src/app.py", "search": "radius = 1", "replace": "radius = 1"})
    assert not same.ok and same.error_kind == "bad_args" and "are the same text" in same.output


def test_protected_paths_are_refused_by_every_tool(workspace: Path) -> None:
    (workspace / "tests").mkdir()
    (workspace / "tests" / "test_app.py").write_text("def test_x():\n    assert True\n")
    tools = make_toolbox(workspace, protected=["tests/**"], test_command="echo changed > tests/test_app.py")
    original = (workspace / "tests" / "test_app.py").read_text()
    for name, args in [
        ("write_file", {"path": "tests/test_app.py", "content": "x = 1\n"}),
        ("write_file", {"path": "tests/test_new.py", "content": "x = 1\n"}),
        ("edit_file", {"path": "tests/test_app.py", "search": "True", "replace": "False"}),
    ]:
        refused = tools.call(name, args)
        assert not refused.ok and refused.error_kind == "protected", (name, refused.output)
        assert "protected by the task (tests/**)" in refused.output
    ran = tools.call("run", {"command": "echo x > tests/test_app.py; touch tests/planted.py"})
    assert not ran.ok and ran.error_kind == "protected" and "restored" in ran.output
    tested = tools.call("run_tests", {})
    assert tested.error_kind == "protected"
    assert (workspace / "tests" / "test_app.py").read_text() == original
    assert not (workspace / "tests" / "planted.py").exists()
    # Other files are still writable.
    assert tools.call("write_file", {"path": "src/other.py", "content": "x = 1\n"}).ok


def test_tool_arguments_are_validated_by_their_model(workspace: Path) -> None:
    tools = make_toolbox(workspace)
    wrong_type = tools.call("read_file", {"path": "src/app.py", "start_line": "2"})
    assert wrong_type.error_kind == "bad_args" and "start_line" in wrong_type.output
    assert "read_file takes {path, start_line, end_line}" in wrong_type.output
    missing = tools.call("edit_file", {"path": "src/app.py", "search": "x"})
    assert missing.error_kind == "bad_args" and "missing replace" in missing.output


def test_write_file_of_a_method_copied_with_its_class_indentation_replaces_it(workspace: Path) -> None:
    """Seen in the eval: Qwen 1.5B wrote the fixed `total` method exactly as it sits in its class, four
    spaces in; that was refused as an unexpected indent. It is the method, read as written there."""
    (workspace / "cart.py").write_text(
        "class Cart:\n    def __init__(self):\n        self.lines = []\n\n"
        "    def total(self):\n        return sum(p for _n, p, _q in self.lines)\n"
    )
    tools = make_toolbox(workspace)
    fixed = "    def total(self):\n        return sum(p * q for _n, p, q in self.lines)"
    result = tools.call("write_file", {"path": "cart.py", "content": fixed})
    assert result.ok and "replaced total" in result.output
    assert (workspace / "cart.py").read_text() == (
        "class Cart:\n    def __init__(self):\n        self.lines = []\n\n"
        "    def total(self):\n        return sum(p * q for _n, p, q in self.lines)\n"
    )
    # Indentation that is wrong even when read as a block is still refused, the file untouched.
    broken = tools.call(
        "write_file", {"path": "cart.py", "content": "    def total(self):\n  return 1\n    x"}
    )
    assert not broken.ok and broken.error_kind == "syntax_error"


def test_write_file_of_a_new_method_puts_it_into_the_files_class(workspace: Path) -> None:
    """Seen in the eval: asked for Stack.peek, the model wrote `    def peek(self): ...` alone; it was
    added at module level, the class still had no peek, and the model saw the same AttributeError."""
    original = (
        '"""Stack."""\n\n\nclass Stack:\n    def __init__(self):\n        self._items = []\n\n'
        "    def push(self, item):\n        self._items.append(item)\n\n\ndef helper():\n    return 1\n"
    )
    (workspace / "stack.py").write_text(original)
    tools = make_toolbox(workspace)
    peek = "    def peek(self):\n        return self._items[-1]"
    result = tools.call("write_file", {"path": "stack.py", "content": peek})
    assert result.ok and "added Stack.peek" in result.output
    assert (workspace / "stack.py").read_text() == original.replace(
        "self._items.append(item)\n",
        "self._items.append(item)\n\n    def peek(self):\n        return self._items[-1]\n",
    )
    # Unindented but taking self: a method too.
    size = tools.call("write_file", {"path": "stack.py", "content": "def size(self):\n    return 0\n"})
    assert size.ok and "added Stack.size" in size.output
    assert "\n    def size(self):\n        return 0\n" in (workspace / "stack.py").read_text()
    # A plain new function is still a module-level function.
    plain = tools.call("write_file", {"path": "stack.py", "content": "def other(x):\n    return x\n"})
    assert plain.ok and (workspace / "stack.py").read_text().endswith("\n\n\ndef other(x):\n    return x\n")


def test_write_file_of_dict_items_puts_them_into_the_literal(workspace: Path) -> None:
    """Seen in the eval: told pears cost 0.5, the model wrote `PRICES['pear'] = 0.5` as the whole of
    prices.py, which was refused as deleting PRICES. An item assignment to a top-level dict literal
    adds (or changes) that entry."""
    original = '"""Prices."""\n\nPRICES = {\n    "apple": 0.3,\n    "banana": 0.25,\n}\n'
    (workspace / "prices.py").write_text(original)
    tools = make_toolbox(workspace)
    result = tools.call("write_file", {"path": "prices.py", "content": "PRICES['pear'] = 0.5"})
    assert result.ok and "added PRICES['pear']" in result.output
    assert (workspace / "prices.py").read_text() == original.replace("0.25,\n", "0.25,\n    'pear': 0.5,\n")
    changed = tools.call("write_file", {"path": "prices.py", "content": 'PRICES["apple"] = 0.4\n'})
    assert changed.ok and 'replaced PRICES["apple"]' in changed.output
    assert '"apple": 0.4,' in (workspace / "prices.py").read_text()
    # A one-line literal stays on one line; a trailing comment is kept.
    (workspace / "flags.py").write_text('FLAGS = {"a": 1}  # defaults\n')
    tools.call("write_file", {"path": "flags.py", "content": "FLAGS['b'] = 2\n"})
    assert (workspace / "flags.py").read_text() == "FLAGS = {\"a\": 1, 'b': 2}  # defaults\n"
    # Not a dict literal: refused as deleting the name, the file unchanged.
    (workspace / "calls.py").write_text("TABLE = dict(a=1)\n")
    refused = tools.call("write_file", {"path": "calls.py", "content": "TABLE['b'] = 2\n"})
    assert not refused.ok and "TABLE" in refused.output
    assert (workspace / "calls.py").read_text() == "TABLE = dict(a=1)\n"


def test_write_file_of_a_class_with_only_some_methods_merges_them_into_it(workspace: Path) -> None:
    """Seen in the eval: the model rewrote `class Store` with only `__init__`, which deleted every other
    method. A class given with some of its methods changes those (a new one is added to the class)."""
    original = (
        '"""Stock."""\n\n\nclass Store:\n    """A shop."""\n\n'
        "    def __init__(self):\n        self.stock = {}\n\n"
        "    def restock(self, item, n):\n        self.stock[item] = n\n\n"
        "    def available(self, item):\n        return self.stock.get(item, 0)\n\n\n"
        "def helper():\n    return 1\n"
    )
    (workspace / "store.py").write_text(original)
    tools = make_toolbox(workspace)
    snippet = (
        "class Store:\n    def restock(self, item, n):\n"
        "        self.stock[item] = self.stock.get(item, 0) + n\n\n"
        "    def clear(self):\n        self.stock = {}\n"
    )
    result = tools.call("write_file", {"path": "store.py", "content": snippet})
    assert result.ok and "replaced Store.restock; added Store.clear" in result.output
    text = (workspace / "store.py").read_text()
    assert text == original.replace(
        "self.stock[item] = n\n", "self.stock[item] = self.stock.get(item, 0) + n\n"
    ).replace(
        "return self.stock.get(item, 0)\n",
        "return self.stock.get(item, 0)\n\n    def clear(self):\n        self.stock = {}\n",
    )
    # A class with every method (or with other statements) is still the whole class.
    whole = "class Store:\n    LIMIT = 3\n\n    def __init__(self):\n        self.stock = {}\n"
    replaced = tools.call("write_file", {"path": "store.py", "content": whole})
    assert (
        replaced.ok
        and "replaced Store" in replaced.output
        and "def restock" not in (workspace / "store.py").read_text()
    )


def test_edit_file_search_without_its_indentation_and_replace_with_it_indents_once(workspace: Path) -> None:
    """Seen in the eval: search `def available(self, item):` (the method's line without its indentation),
    replace the method written with it. Taken literally the indentation came twice and the method went
    inside the one above it; `replace` is whole lines."""
    source = "class S:\n    def sell(self):\n        self.n -= 1\n\n"
    source += "    def available(self):\n        return 0\n"
    (workspace / "s.py").write_text(source)
    tools = make_toolbox(workspace)
    method = "    def available(self):\n        return self.n"
    edited = tools.call("edit_file", {"path": "s.py", "search": "def available(self):", "replace": method})
    assert edited.ok, edited.output
    assert (workspace / "s.py").read_text() == source.replace("        return 0", "        return self.n")
    # One statement, the same way; and replace written relative to the search keeps working.
    one = tools.call("edit_file", {"path": "s.py", "search": "self.n -= 1", "replace": "        self.n -= 2"})
    assert one.ok and "        self.n -= 2\n" in (workspace / "s.py").read_text()
    relative = tools.call("edit_file", {"path": "s.py", "search": "self.n -= 2", "replace": "self.n -= 3"})
    assert relative.ok and "        self.n -= 3\n" in (workspace / "s.py").read_text()


def test_edit_file_of_a_def_line_with_a_whole_function_replaces_the_function(workspace: Path) -> None:
    """Seen in the eval: search `def capitalize_words(text):`, replace that line and a new body. Taken
    literally the old body stayed under the new one (two returns); it is the whole function."""
    (workspace / "case.py").write_text('"""Case."""\n\n\ndef cap(text):\n    return text.upper()\n')
    tools = make_toolbox(workspace)
    whole = tools.call(
        "edit_file",
        {
            "path": "case.py",
            "search": "def cap(text):",
            "replace": "def cap(text):\n    return text.title()\n",
        },
    )
    assert whole.ok and "as a whole definition" in whole.output
    assert (workspace / "case.py").read_text() == '"""Case."""\n\n\ndef cap(text):\n    return text.title()\n'
    # Lines inserted under a def line stay a literal edit: the body is kept.
    inserted = tools.call(
        "edit_file",
        {"path": "case.py", "search": "def cap(text):", "replace": "def cap(text):\n    text = str(text)"},
    )
    assert inserted.ok and "as a whole definition" not in inserted.output
    assert (
        (workspace / "case.py")
        .read_text()
        .endswith("def cap(text):\n    text = str(text)\n    return text.title()\n")
    )
    # Seen in the eval: a function with a docstring (which the merge keeps) got the new return above its
    # docstring and old body, two returns, because the merge's note hid the function's name.
    (workspace / "words.py").write_text(
        'def count(text):\n    """Words."""\n    return len(text.split(" "))\n'
    )
    documented = tools.call(
        "edit_file",
        {
            "path": "words.py",
            "search": "def count(text):",
            "replace": "def count(text):\n    return len(text.split())",
        },
    )
    assert documented.ok and "as a whole definition" in documented.output, documented.output
    assert (
        workspace / "words.py"
    ).read_text() == 'def count(text):\n    """Words."""\n    return len(text.split())\n'


def test_edit_file_naming_a_function_with_its_whole_new_definition_merges_it(workspace: Path) -> None:
    (workspace / "c.py").write_text('"""Temps."""\n\n\ndef f_to_c(f):\n    return (f - 32) * 9 / 5\n')
    tools = make_toolbox(workspace)
    fixed = tools.call(
        "edit_file",
        {"path": "c.py", "search": "f_to_c", "replace": "def f_to_c(f):\n    return (f - 32) * 5 / 9"},
    )
    assert fixed.ok and "as a whole definition" in fixed.output
    assert (
        workspace / "c.py"
    ).read_text() == '"""Temps."""\n\n\ndef f_to_c(f):\n    return (f - 32) * 5 / 9\n'
    # Seen in the eval: the same call again said "not valid Python (def def f_to_c)", and the model
    # rewrote it three times; it is a call that changes nothing.
    again = tools.call(
        "edit_file",
        {"path": "c.py", "search": "f_to_c", "replace": "def f_to_c(f):\n    return (f - 32) * 5 / 9"},
    )
    assert again.ok and again.output == "no change: c.py already holds exactly this f_to_c"


PYTEST_ONE_FAILS = "FAILED tests/test_a.py::test_x - assert 1 == 2\n1 failed, 2 passed in 0.01s\n"
PYTEST_TWO_FAIL = (
    "FAILED tests/test_a.py::test_x - assert 1 == 2\nFAILED tests/test_a.py::test_y - NameError\n"
    "2 failed, 1 passed in 0.01s\n"
)
PYTEST_COLLECTION = (
    "ERROR tests/test_b.py\n!!! Interrupted: 1 error during collection !!!\n1 error in 0.05s\n"
)
PYTEST_B_FAILS = "FAILED tests/test_b.py::test_z - assert 0\n1 failed in 0.01s\n"


@pytest.mark.parametrize(
    ("output", "ids"),
    [
        (PYTEST_TWO_FAIL, {"tests/test_a.py::test_x", "tests/test_a.py::test_y"}),
        (PYTEST_COLLECTION, {"tests/test_b.py"}),
        ("3 passed in 0.01s\n", set()),
        ("Ran 3 tests in 0.001s\n\nOK\n", set()),
        ("make: *** [test] Error 2\n", None),
    ],
)
def test_failing_tests_reads_pytest_short_summary(output: str, ids: set[str] | None) -> None:
    assert failing_tests(output) == ids


@pytest.mark.parametrize(
    ("before", "after", "broken"),
    [
        (PYTEST_ONE_FAILS, PYTEST_TWO_FAIL, "tests/test_a.py::test_y"),  # a passing test now fails
        (PYTEST_ONE_FAILS, PYTEST_COLLECTION, "tests/test_b.py"),  # the edit broke an import
        (PYTEST_TWO_FAIL, PYTEST_ONE_FAILS, None),  # better
        (PYTEST_ONE_FAILS, PYTEST_ONE_FAILS, None),  # the same failure: kept
        (PYTEST_COLLECTION, PYTEST_B_FAILS, None),  # now collected, a test of that file fails: progress
        ("FAILED (failures=1)\n", "FAILED (failures=2, errors=1)\n", "from 1 to 3"),  # unittest counts
        ("FAILED (failures=2)\n", "FAILED (failures=1)\n", None),
        ("", PYTEST_TWO_FAIL, None),  # nothing to compare with
        # No test ran before (the test file the task asks for does not exist yet): no baseline.
        (
            "ERROR: file or directory not found: tests/test_b.py\n\nno tests ran in 0.01s\n",
            PYTEST_B_FAILS,
            None,
        ),
    ],
)
def test_regression_between_flags_only_tests_made_worse(before: str, after: str, broken: str | None) -> None:
    why = regression_between(before, after)
    if broken is None:
        assert why is None
    else:
        assert why is not None and broken in why


def test_the_failing_tests_of_a_file_the_edit_created_are_new_not_broken() -> None:
    """Seen in `make run`: adding tests/test_power.py (the task) before the function it tests made its
    test fail, and that was taken for a broken test and undone, twice."""
    before = "FAILED tests/test_a.py::test_x - assert 1 == 2\n1 failed, 3 passed in 0.01s\n"
    after = (
        "FAILED tests/test_a.py::test_x - assert 1 == 2\nFAILED tests/test_power.py::test_power - NameError\n"
        "2 failed, 3 passed in 0.01s\n"
    )
    assert regression_between(before, after) is not None
    assert regression_between(before, after, new_files=["tests/test_power.py"]) is None


def test_snapshot_and_restore_put_a_file_back_or_remove_a_new_one(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    box = make_toolbox(tmp_path)
    saved, missing = box.snapshot("a.py"), box.snapshot("new.py")
    box.call("write_file", {"path": "a.py", "content": "x = 2\n"})
    box.call("write_file", {"path": "new.py", "content": "y = 1\n"})
    box.restore("a.py", saved)
    box.restore("new.py", missing)
    assert (tmp_path / "a.py").read_text() == "x = 1\n" and not (tmp_path / "new.py").exists()
    with pytest.raises(WorkspaceError):
        box.snapshot("../outside.py")
    # The name the tests give the file, whatever spelling the model used.
    assert (
        box.relative("./sub/../a.py") == "a.py" and box.relative(str(tmp_path / ".hidden.py")) == ".hidden.py"
    )


@pytest.mark.parametrize(
    ("old", "new", "same"),
    [
        ('x = text.split(" ")\n', "x = text.split(' ')\n", True),  # quotes
        ("def f(a,b):\n    return a+b\n", "def f(a, b):\n    # the sum\n    return (a + b)\n", True),
        ("def f(a, b):\n    return a + b\n", "def f(a, b):\n    return a - b\n", False),
        ('def f():\n    """Old."""\n', 'def f():\n    """New."""\n', False),  # a docstring counts
        ("x = 1\n", "x = 1\n", False),  # the same bytes: no edit at all
        ("x = 1\n", "x = (\n", False),  # does not parse
        (None, "x = 1\n", False),  # a new file
    ],
)
def test_same_program_ignores_quotes_spacing_and_comments_only(old: str | None, new: str, same: bool) -> None:
    encoded = old.encode() if old is not None else None
    assert same_program(encoded, new.encode()) is same


def test_python_runs_a_shell_command_line_as_a_command(workspace: Path) -> None:
    """`python -m pytest -q` sent as Python code is run as the command it is, and the result says so;
    Python that merely starts with such a word (`python = 3`) is Python."""
    assert is_command_line("python -m pytest -q") and is_command_line("pytest -q; pytest -s")
    assert not is_command_line("python = 3\nprint(python)") and not is_command_line("print('pytest')")
    assert not is_command_line("assert f(2) == (")  # not a command, only broken Python
    tools = make_toolbox(workspace)
    ran = tools.call("python", {"code": "python -c 'print(6 * 7)'"})
    assert ran.ok and ran.output.startswith("(this is a shell command, not Python code: it was run as `run`")
    assert "42" in ran.output
    python = tools.call("python", {"code": "python = 6 * 7\nprint(python)"})
    assert python.ok and python.output.strip() == "42"


def test_write_file_of_statements_from_a_function_replaces_the_ones_most_like_them(workspace: Path) -> None:
    """Seen in the eval (fruit_order_total, weather_units_config): Qwen 1.5B wrote the one block or line
    it meant to change to write_file. As a file body it would delete the module, or (a `return`) not
    parse, and was refused four turns running. Statements from inside a function replace the run of
    statements of the same kinds most like them, re-indented; a fragment alike to nothing, or to two
    places as much, is still refused and the file kept."""
    original = (
        '"""Orders."""\n\nBULK = 10\n\n\ndef total(price, n):\n    """Price of n."""\n    cost = price * n\n'
        "    if n > BULK:  # the discount\n        cost *= 0.9\n    return round(cost, 2)\n\n\n"
        "def label(name):\n    return f'{name}: F'\n"
    )
    (workspace / "order.py").write_text(original)
    tools = make_toolbox(workspace)
    block = tools.call("write_file", {"path": "order.py", "content": "if n >= BULK:\n    cost *= 0.9"})
    assert block.ok and block.changed_files, block.output
    assert "replaced lines 9-10 of total" in block.output and "  9|     if n >= BULK:" in block.output
    assert (workspace / "order.py").read_text() == original.replace(
        "    if n > BULK:  # the discount\n", "    if n >= BULK:\n"
    )
    # A `return` alone does not parse as a module; it is still one function's line.
    line = tools.call("write_file", {"path": "order.py", "content": "return f'{name}: C'"})
    assert line.ok and "replaced lines 15-15 of label" in line.output, line.output
    assert (workspace / "order.py").read_text().endswith("def label(name):\n    return f'{name}: C'\n")
    same = tools.call("write_file", {"path": "order.py", "content": "return f'{name}: C'"})
    assert same.ok and not same.changed_files and "no change" in same.output
    kept = (workspace / "order.py").read_text()
    # Alike to nothing: no statement of the same kind (a call), or one too different (another `if`).
    for fragment in ["print(cost)", "if user.is_admin():\n    grant_everything_to(user)"]:
        refused = tools.call("write_file", {"path": "order.py", "content": fragment})
        assert not refused.ok and "would delete" in refused.output, refused.output
    # Alike to two returns about as much: which one is meant is not clear.
    (workspace / "two.py").write_text("def a(x):\n    return x + 1\n\n\ndef b(x):\n    return x + 2\n")
    ambiguous = tools.call("write_file", {"path": "two.py", "content": "return x + 3"})
    assert not ambiguous.ok and "would not be valid Python" in ambiguous.output, ambiguous.output
    assert (workspace / "order.py").read_text() == kept
    assert (workspace / "two.py").read_text().endswith("return x + 2\n")


def test_a_change_that_defines_a_function_a_second_time_is_refused(workspace: Path) -> None:
    """Seen in the eval (timer_mm_ss): an edit_file whose search was not in the file, but began its
    replace, appended `def format_duration(seconds):\\n    minute:finish` after the real function; it
    parses (an annotation), and from then on every call got None. A change after which a function, class
    or method is defined twice where it was once is refused (flake8's F811); a property's setter and an
    existing duplicate are left alone."""
    original = (
        'def format_duration(seconds):\n    """As MM:SS."""\n    minutes, secs = divmod(seconds, 60)\n'
        '    return f"{minutes}:{secs}"\n\n\n'
        "class Clock:\n    @property\n    def hour(self):\n        return 1\n"
    )
    (workspace / "timer.py").write_text(original)
    tools = make_toolbox(workspace)
    search = "def format_duration(seconds):\n    minute"
    appended = tools.call("edit_file", {"path": "timer.py", "search": search, "replace": search + ":finish"})
    assert not appended.ok and "would define format_duration a second time" in appended.output
    method = original.replace(
        "        return 1\n", "        return 1\n\n    def hour(self):\n        return 2\n"
    )
    rewritten = tools.call("write_file", {"path": "timer.py", "content": method})
    assert not rewritten.ok and "would define Clock.hour a second time" in rewritten.output
    assert (workspace / "timer.py").read_text() == original
    setter = original + "\n    @hour.setter\n    def hour(self, value):\n        self._hour = value\n"
    assert tools.call("write_file", {"path": "timer.py", "content": setter}).ok
