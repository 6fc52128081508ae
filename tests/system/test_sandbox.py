"""The escape suite: what a hostile agent would try, run as the agent runs it, through the `run` tool in
the bubblewrap sandbox. Every attempt must fail with a readable tool result; the module ends with a line
`escapes: 0 of N`. Also: the worker's own git never runs what a command planted in the workspace's
.git, and `python -m pytest` still works inside the sandbox.

Needs bubblewrap (`scripts/ensure_bwrap.sh`, run by `make test`) and user namespaces."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from helpers import wait_gone

from elpis_worker import results
from elpis_worker.sandbox import Sandbox, SandboxLimits
from elpis_worker.tools import Toolbox, ToolResult
from elpis_worker.workspace import prepare_workspace, private_git_dir, workspace_diff

ELPIS_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_REPO = ELPIS_ROOT / "samples" / "calc"
SECRET = "elpis-escape-canary-7f3a9c"
LIMITS = SandboxLimits(cpu_seconds=60, memory_mb=1024, processes=64, file_size_mb=8)

_attempts: list[tuple[str, bool]] = []


def _bwrap_works() -> str | None:
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (scripts/ensure_bwrap.sh installs it)"
    check = Sandbox().check()
    return None if check.ok else check.detail


_UNAVAILABLE = _bwrap_works()
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"no sandbox here: {_UNAVAILABLE}")


@pytest.fixture(scope="module", autouse=True)
def escape_count(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    escaped = [name for name, ok in _attempts if ok]
    line = f"escapes: {len(escaped)} of {len(_attempts)}" + (f" ({', '.join(escaped)})" if escaped else "")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:  # pragma: no cover
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"\n{line}")


def record(name: str, escaped: bool, result: ToolResult | None = None) -> None:
    """One attempt; an escape fails the test after it is counted."""
    _attempts.append((name, escaped))
    if result is not None and os.environ.get("ELPIS_SHOW_ESCAPES"):
        print(f"--- {name}: ok={result.ok} {result.error_kind}\n{result.output[-300:]}")
    detail = f": {result.output[-500:]}" if result is not None else ""
    assert not escaped, f"escape: {name}{detail}"


def readable(result: ToolResult) -> None:
    """A failed attempt still comes back as something the model (and a person) can read."""
    assert result.output.strip(), "empty tool result"


@pytest.fixture
def home() -> Path:
    """$ELPIS_HOME of the test session, with a secret in it as the worker's real home has (api_token)."""
    path = Path(os.environ["ELPIS_HOME"]).resolve()
    path.mkdir(parents=True, exist_ok=True)
    (path / "api_token").write_text(SECRET + "\n")
    return path


@pytest.fixture
def task_dir(home: Path, tmp_path: Path) -> Iterator[Path]:
    """A prepared workspace under $ELPIS_HOME/workspaces (as the worker makes them), beside another
    task's workspace holding a secret."""
    root = home / "workspaces" / f"escape-{tmp_path.name}"
    root.mkdir(parents=True, exist_ok=True)
    sibling = root / "task-2"
    sibling.mkdir(exist_ok=True)
    (sibling / "secret.txt").write_text(SECRET + "\n")
    workspace = prepare_workspace(str(SAMPLE_REPO), None, root / "task-1")
    yield workspace
    shutil.rmtree(root, ignore_errors=True)


def sandbox(home: Path, **limits: int) -> Sandbox:
    lim = SandboxLimits(**{**LIMITS.__dict__, **limits})
    return Sandbox("bwrap", limits=lim, hidden=[home, home / "workspaces"])


def toolbox(workspace: Path, home: Path, timeout: float = 20.0, **limits: int) -> Toolbox:
    return Toolbox(workspace, None, timeout, 4000, 2000, sandbox=sandbox(home, **limits))


def run(tools: Toolbox, command: str) -> ToolResult:
    return tools.call("run", {"command": command})


# --- secrets of the host ---------------------------------------------------------------------------


def test_worker_environment_is_invisible(task_dir: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELPIS_FAKE_PUSH_TOKEN", SECRET)
    tools = toolbox(task_dir, home)
    for name, command in [
        ("/proc/<worker pid>/environ", f"cat /proc/{os.getpid()}/environ"),
        ("/proc/$PPID/environ", "cat /proc/$PPID/environ"),
        ("every /proc/*/environ", "cat /proc/*/environ 2>&1; ls /proc"),
        ("own environment", "env"),
    ]:
        result = run(tools, command)
        readable(result)
        record(name, SECRET in result.output, result)


def test_etc_shadow_is_unreadable(task_dir: Path, home: Path) -> None:
    tools = toolbox(task_dir, home)
    for path in ("/etc/shadow", "/etc/gshadow"):
        if not Path(path).exists():
            continue
        result = run(tools, f"cat {path}")
        readable(result)
        record(path, result.ok or "root:" in result.output, result)


def test_other_workspaces_and_home_are_invisible(task_dir: Path, home: Path) -> None:
    tools = toolbox(task_dir, home)
    sibling = task_dir.parent / "task-2" / "secret.txt"
    attempts = {
        "another task's workspace (relative)": "cat ../task-2/secret.txt",
        "another task's workspace (absolute)": f"cat {sibling}",
        "$ELPIS_HOME files": f"cat {home / 'api_token'}; ls -la {home}",
        "list the home and workspace root": f"find {home} {task_dir.parent} -maxdepth 2 -name '*secret*'",
        "the worker's private git dir": f"ls -a {task_dir.parent}; ls {private_git_dir(task_dir)}",
    }
    for name, command in attempts.items():
        result = run(tools, command)
        readable(result)
        leaked = (SECRET, "secret.txt\n", private_git_dir(task_dir).name + "\n")
        escaped = any(text in result.output + "\n" for text in leaked)
        record(name, escaped, result)


def test_host_filesystem_is_read_only(task_dir: Path, home: Path, tmp_path: Path) -> None:
    tools = toolbox(task_dir, home)
    target = ELPIS_ROOT / ".venv" / "escape-canary"
    result = run(tools, f"echo x > {target}; touch /usr/escape-canary; echo done")
    readable(result)
    record("write outside the workspace", target.exists() or Path("/usr/escape-canary").exists(), result)


def test_host_kernel_settings_are_read_only(task_dir: Path, home: Path) -> None:
    """Sysctl files are writable by host uid 0 in any namespace: a root worker's sandbox must still not
    reach them (core_pattern would run a program as host root). Only checked, never written, except the
    UTS-namespaced domainname, which is harmless even if it were writable."""
    tools = toolbox(task_dir, home)
    result = run(
        tools,
        "for f in /proc/sys/kernel/core_pattern /proc/sys/vm/drop_caches /proc/sys/kernel/modprobe; do "
        "test -w $f && echo WRITABLE $f; done; "
        "echo x > /proc/sys/kernel/domainname && echo WROTE; echo checked",
    )
    readable(result)
    record("write a host sysctl", "WRITABLE" in result.output or "WROTE" in result.output, result)


# --- network ---------------------------------------------------------------------------------------


def _connect_script(host: str, port: int) -> str:
    return (
        'python -c "import socket,time; t=time.monotonic()\n'
        f"try: socket.create_connection(('{host}', {port}), timeout=5); print('CONNECTED')\n"
        "except OSError as e: print('refused:', e, round(time.monotonic()-t, 2))\""
    )


def test_database_broker_and_outside_are_unreachable(task_dir: Path, home: Path) -> None:
    db = urlsplit(os.environ["ELPIS_DATABASE_URL"])
    query = parse_qs(db.query)
    pg_port = int(query.get("port", [db.port or 5432])[0])
    pg_socket_dir = query.get("host", [""])[0]
    broker = urlsplit(os.environ["ELPIS_BROKER_URL"])
    targets = {"postgres": ("127.0.0.1", pg_port), "broker": ("127.0.0.1", broker.port or 6379)}
    for host, port in targets.values():
        # They do listen, for the host: the sandbox's loopback is its own.
        with socket.create_connection((host, port), timeout=3):
            pass
    targets["outside (1.1.1.1:53)"] = ("1.1.1.1", 53)
    tools = toolbox(task_dir, home)
    for name, (host, port) in targets.items():
        started = time.monotonic()
        result = run(tools, _connect_script(host, port))
        readable(result)
        record(f"connect to {name}", "CONNECTED" in result.output, result)
        assert "refused:" in result.output
        assert time.monotonic() - started < 5, "the connection attempt should fail at once"
    if pg_socket_dir:
        result = run(tools, f"ls {pg_socket_dir}; ls /run/postgresql")
        readable(result)
        record("postgres unix socket", ".s.PGSQL" in result.output, result)


# --- processes and limits --------------------------------------------------------------------------


def test_detached_children_do_not_survive_a_timeout(task_dir: Path, home: Path) -> None:
    tools = toolbox(task_dir, home, timeout=2)
    result = run(
        tools, "setsid sleep 300.0571 & nohup sleep 300.0572 >/dev/null 2>&1 & (sleep 300.0573 &); sleep 60"
    )
    assert result.error_kind == "timeout"
    readable(result)
    for marker in ("sleep 300.0571", "sleep 300.0572", "sleep 300.0573"):
        record(f"survive the timeout ({marker.split('.')[1]})", wait_gone(marker) != [], result)


def test_detached_children_do_not_survive_the_command(task_dir: Path, home: Path) -> None:
    tools = toolbox(task_dir, home)
    result = run(tools, "setsid sleep 300.0581 & nohup sleep 300.0582 >/dev/null 2>&1 & echo left")
    assert result.ok and result.output == "left"
    for marker in ("sleep 300.0581", "sleep 300.0582"):
        record(f"survive the command ({marker.split('.')[1]})", wait_gone(marker) != [], result)


def test_fork_bomb_is_bounded(task_dir: Path, home: Path) -> None:
    limit = 64
    box = sandbox(home, processes=limit)
    if not box.process_limit_enforced:
        record("fork bomb (process limit not enforceable here: worker is root without a pids cgroup)", True)
    tools = Toolbox(task_dir, None, 5.0, 4000, 2000, sandbox=box)
    before = len(os.listdir("/proc"))
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], len(os.listdir("/proc")))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        result = run(tools, "bomb(){ bomb | bomb & }; bomb; sleep 30")
    finally:
        stop.set()
        sampler.join()
    elapsed = time.monotonic() - started
    readable(result)
    leftovers = wait_gone("bomb(){")
    # The host's process count (other work goes on here too: a generous margin) stays near the limit.
    record("fork bomb", peak[0] - before > limit + 100 or leftovers != [] or elapsed > 20, result)


def test_file_size_limit(task_dir: Path, home: Path) -> None:
    tools = toolbox(task_dir, home, file_size_mb=8)
    result = run(tools, "head -c 50000000 /dev/zero > big.bin; echo status $?")
    readable(result)
    size = (task_dir / "big.bin").stat().st_size if (task_dir / "big.bin").exists() else 0
    record("write past the file size limit", size > 8 * 1024 * 1024, result)


def test_memory_limit(task_dir: Path, home: Path) -> None:
    tools = toolbox(task_dir, home, memory_mb=256)
    result = run(tools, "python -c \"b = bytearray(600 * 1024 * 1024); print('ALLOCATED')\"")
    readable(result)
    record("allocate past the memory limit", "ALLOCATED" in result.output, result)
    assert "MemoryError" in result.output


def test_no_new_user_namespaces(task_dir: Path, home: Path) -> None:
    tools = toolbox(task_dir, home)
    result = run(tools, "unshare -Ur id && echo NESTED")
    readable(result)
    record("nested user namespace", "NESTED" in result.output, result)


# --- git the agent cannot steer --------------------------------------------------------------------


def test_planted_git_config_never_runs_in_the_worker(task_dir: Path, home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    good = tmp_path / "good.git"
    evil = tmp_path / "evil.git"
    for bare in (good, evil):
        subprocess.run(["git", "init", "--quiet", "--bare", str(bare)], check=True)
    hook = f"#!/bin/sh\ntouch {marker}\n"
    plant = f"""
set -e
mkdir -p .githooks
for h in pre-commit post-commit post-checkout pre-push post-index-change reference-transaction; do
  printf '%s' '{hook}' > .githooks/$h; chmod +x .githooks/$h
  printf '%s' '{hook}' > .git/hooks/$h; chmod +x .git/hooks/$h
done
git config core.hooksPath .githooks
git config core.fsmonitor 'touch {marker}; false'
git config url.{evil}.insteadOf {good}
git config filter.evil.clean 'touch {marker}; cat'
git config diff.evil.textconv 'touch {marker}; cat'
git config core.pager 'touch {marker}; cat'
git config include.path ../../../../../../../../etc/passwd
printf '* filter=evil diff=evil\\n' > .gitattributes
echo 'def changed(): pass' >> calc/ops.py
echo planted
"""
    tools = toolbox(task_dir, home)
    result = run(tools, plant)
    assert result.ok, result.output

    diff = workspace_diff(task_dir)
    assert "def changed(): pass" in diff
    record("git config planted, then the diff is taken", marker.exists())

    sha = results.commit_diff(task_dir, diff, "elpis: test")
    results.push_branch(task_dir, sha, "elpis/task-1", str(good), {})
    record("git config planted, then published", marker.exists())
    pushed = subprocess.run(
        ["git", "--git-dir", str(good), "rev-parse", "refs/heads/elpis/task-1"],
        capture_output=True,
        text=True,
    )
    assert pushed.stdout.strip() == sha
    redirected = subprocess.run(["git", "--git-dir", str(evil), "show-ref"], capture_output=True, text=True)
    record("url.<x>.insteadOf redirects the push", redirected.stdout.strip() != "")

    # The diff still applies on a fresh clone (resume), and the planted config did not come with it.
    again = prepare_workspace(str(SAMPLE_REPO), None, task_dir.parent / "task-3", diff=diff)
    assert "def changed(): pass" in (again / "calc" / "ops.py").read_text()
    assert not marker.exists()


# --- still a usable computer -----------------------------------------------------------------------


def test_python_and_pytest_work_inside(tmp_path: Path, home: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "tests").mkdir(parents=True)
    (repo / "mod.py").write_text("def add(a, b):\n    return a + b\n")
    (repo / "tests" / "test_mod.py").write_text(
        "from mod import add\n\ndef test_add():\n    assert add(2, 3) == 5\n"
    )
    workspace = prepare_workspace(str(repo), None, tmp_path / "ws")
    tools = Toolbox(workspace, "python -m pytest -q", 60.0, 4000, 2000, sandbox=sandbox(home))
    result = tools.call("run_tests", {})
    assert result.ok, result.output
    assert "1 passed" in result.output
    result = run(
        tools, "git status --short && git log --oneline | head -1 && echo tmp > /tmp/x && cat /tmp/x"
    )
    assert result.ok, result.output
    assert result.output.strip().endswith("tmp")


def test_network_can_be_enabled(task_dir: Path, home: Path) -> None:
    """tools.network: true shares the host's network: the broker (on the host's loopback) answers."""
    broker = urlsplit(os.environ["ELPIS_BROKER_URL"])
    box = Sandbox("bwrap", network=True, limits=LIMITS, hidden=[home])
    tools = Toolbox(task_dir, None, 20.0, 4000, 2000, sandbox=box)
    result = run(tools, _connect_script("127.0.0.1", broker.port or 6379))
    assert "CONNECTED" in result.output, result.output
