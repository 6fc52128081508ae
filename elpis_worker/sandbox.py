"""The OS sandbox around every command the agent causes (`run`, `run_tests`): bubblewrap.

A command runs in new user, PID, IPC, UTS, cgroup, mount and network namespaces. It sees a read-only
system (/usr, /bin, /lib*, /etc without the files an unprivileged user could not read), a read-only
Python installation and virtualenv (so `python -m pytest` works), a fresh /proc that shows only its own
processes, a private /dev and /tmp, and exactly one writable directory: the task's workspace. It does
not see $ELPIS_HOME (other workspaces, the database's files, the broker's socket, tokens), the host's
processes or their environments, and no network unless `tools.network` is true. The environment is
cleared; rlimits cap CPU time, address space, processes and file size. When the command's shell exits
or times out, the sandbox's PID 1 dies and the kernel kills everything left in the namespace, so no
`setsid`/`nohup` child survives; `--die-with-parent` covers the worker itself dying.

RLIMIT_NPROC is counted per user namespace on current kernels, so the process limit counts only the
sandbox's own processes, but it never applies to host root (uid 0 is exempt whatever the namespace).
A worker running as root therefore puts each sandbox in its own `pids` cgroup when it can create one;
run the worker as an ordinary user (the Dockerfile does) and the rlimit alone is enough.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from configs.errors import ElpisError

__all__ = [
    "Sandbox",
    "SandboxCheck",
    "SandboxError",
    "SandboxLimits",
    "SandboxProcess",
    "SandboxUnavailableError",
]

log = logging.getLogger(__name__)

SandboxKind = Literal["bwrap", "none"]

SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
"""Bound read-only at the same place (or recreated as the same symlink on a merged-/usr system)."""

PROC_READ_ONLY = ("/proc/sys", "/proc/sysrq-trigger", "/proc/fs", "/proc/irq", "/proc/bus")
"""Global kernel knobs under /proc: read-only in the sandbox."""

SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
SANDBOX_UID = 65534
"""The uid commands see when the worker runs as root (nobody); otherwise they see the worker's own."""

_MIB = 1024 * 1024
_CGROUP_SEQ = itertools.count()

# Run inside the sandbox, after the namespaces exist: the limits apply to the command and all it starts,
# and (in the new user namespace) RLIMIT_NPROC counts only the sandbox's processes.
_LAUNCHER = """\
import os, resource, signal, sys
# Python ignores these for itself; the command must get the usual behaviour (`yes | head` ends).
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
cpu, mem, nproc, fsize = (int(v) for v in sys.argv[1:5])
def cap(kind, soft, hard=None):
    if soft <= 0:
        return
    hard = soft if hard is None else hard
    old_soft, old_hard = resource.getrlimit(kind)
    if old_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, old_hard), min(hard, old_hard)
    resource.setrlimit(kind, (soft, hard))
cap(resource.RLIMIT_CPU, cpu, cpu + 5)
cap(resource.RLIMIT_AS, mem * 1048576)
cap(resource.RLIMIT_NPROC, nproc)
cap(resource.RLIMIT_FSIZE, fsize * 1048576)
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
os.execv("/bin/sh", ["sh", "-c", sys.argv[5]])
"""


class SandboxError(ElpisError):
    """The sandbox could not be set up or used; the message says why and what to do."""


class SandboxUnavailableError(SandboxError):
    """bubblewrap is missing or cannot create namespaces here, and the config did not opt out."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-command resource limits (0 = no limit). See `tools.limits` in configs/config.yaml."""

    cpu_seconds: int = 120
    memory_mb: int = 2048
    processes: int = 256
    file_size_mb: int = 64


@dataclass(frozen=True)
class SandboxCheck:
    ok: bool
    kind: SandboxKind
    detail: str
    warnings: tuple[str, ...] = ()


@dataclass
class SandboxProcess:
    """A running command: `proc` is what the caller reads and waits on; `kill` ends everything in it."""

    proc: subprocess.Popen[bytes]
    child_pid: int | None = None
    cgroup: Path | None = None
    _done: bool = field(default=False, repr=False)

    @property
    def stdout(self) -> IO[bytes] | None:
        return self.proc.stdout

    def kill(self) -> None:
        """Kill the command and everything it started, and wait until they are gone."""
        if self.child_pid is not None:
            # The sandbox's PID 1: when it dies the kernel kills every process in its PID namespace,
            # and bwrap (its parent) exits only once that is done.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.child_pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("sandbox process %s did not exit after SIGKILL", self.proc.pid)
        self._release_cgroup()

    def _release_cgroup(self) -> None:
        if self.cgroup is None or self._done:
            return
        self._done = True
        deadline = time.monotonic() + 5
        while True:
            try:
                self.cgroup.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    log.warning("could not remove the sandbox's cgroup %s", self.cgroup)
                    return
            with contextlib.suppress(OSError, ValueError):
                for pid in (self.cgroup / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.02)


class Sandbox:
    """How the agent's commands are run: `bwrap` (the default) or `none` (no isolation, explicit
    opt-out for machines without user namespaces; commands then run with the worker's rights)."""

    def __init__(
        self,
        kind: SandboxKind = "bwrap",
        *,
        network: bool = False,
        limits: SandboxLimits | None = None,
        hidden: list[Path] | tuple[Path, ...] = (),
        bwrap: str = "bwrap",
    ) -> None:
        if kind not in ("bwrap", "none"):
            raise SandboxError(f"tools.sandbox must be 'bwrap' or 'none', not {kind!r}")
        self.kind: SandboxKind = kind
        self.network = network
        self.limits = limits or SandboxLimits()
        # Paths that must stay invisible even where they lie inside something bound read-only (the
        # Elpis home or the workspace root inside the directory that holds the virtualenv).
        self.hidden = tuple(Path(os.path.realpath(p)) for p in hidden)
        self.bwrap = bwrap

    @classmethod
    def from_settings(cls, settings: Any) -> Sandbox:
        """The sandbox `settings` (a configs.Settings) describe: tools.sandbox, tools.network,
        tools.limits, with $ELPIS_HOME and the workspace root hidden."""
        tools = settings.tools
        lim = tools.limits
        return cls(
            tools.sandbox,
            network=tools.network,
            limits=SandboxLimits(lim.cpu_seconds, lim.memory_mb, lim.processes, lim.file_size_mb),
            hidden=[settings.home_dir, settings.workspace_root],
        )

    # --- the command line --------------------------------------------------------------------------

    def argv(
        self, workspace: Path, command: str, env: dict[str, str], *, info_fd: int | None = None
    ) -> list[str]:
        """The bwrap command line that runs `command` with `sh -c` in `workspace`, with `env` only."""
        workspace = Path(os.path.realpath(workspace))
        uid = os.geteuid() or SANDBOX_UID
        gid = os.getegid() if os.geteuid() else SANDBOX_UID
        args = [self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns"]
        if self.network:
            args.append("--share-net")
        args += ["--uid", str(uid), "--gid", str(gid), "--hostname", "sandbox"]
        args += ["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv"]
        for name, value in env.items():
            args += ["--setenv", name, value]
        args += ["--proc", "/proc", "--dev", "/dev"]
        # bwrap covers /proc/sys only when it cannot write the directory, but sysctl files are writable
        # by host uid 0 whatever the namespace: a root worker's sandbox could set core_pattern. The host's
        # /proc/sys shows the reader's network namespace, so binding it read-only changes nothing else.
        for entry in PROC_READ_ONLY:
            if os.path.exists(entry):
                args += ["--ro-bind", entry, entry]
        tmp_size = max(self.limits.memory_mb, 64) * _MIB
        args += ["--perms", "1777", "--size", str(tmp_size), "--tmpfs", "/tmp"]

        bound: list[Path] = []
        for path in SYSTEM_PATHS:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
                bound.append(Path(path))
        args += ["--ro-bind", "/etc", "/etc"]
        bound.append(Path("/etc"))
        for masked in _etc_secret_paths():
            if os.path.isdir(masked) and not os.path.islink(masked):
                args += ["--perms", "0700", "--tmpfs", masked, "--remount-ro", masked]
            else:
                args += ["--ro-bind", "/dev/null", masked]
        for path in self._python_paths(bound):
            args += ["--ro-bind", str(path), str(path)]
            bound.append(path)
        masks = [
            hidden
            for hidden in self.hidden
            if hidden.is_dir() and hidden != workspace and any(hidden.is_relative_to(b) for b in bound)
        ]
        for hidden in masks:
            args += ["--tmpfs", str(hidden)]
        args += ["--bind", str(workspace), str(workspace), "--chdir", str(workspace)]
        for hidden in masks:  # after the workspace's mount point was made inside them
            args += ["--remount-ro", str(hidden)]
        if info_fd is not None:
            args += ["--info-fd", str(info_fd)]
        lim = self.limits
        python = os.path.realpath(sys.executable)
        args += ["--", python, "-I", "-S", "-B", "-c", _LAUNCHER]
        args += [str(lim.cpu_seconds), str(lim.memory_mb), str(lim.processes), str(lim.file_size_mb)]
        args.append(command)
        return args

    def _python_paths(self, bound: list[Path]) -> list[Path]:
        """The interpreter and its libraries, and the virtualenv (sys.prefix) with its tools."""
        candidates = {
            Path(os.path.realpath(p))
            for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)
        }
        candidates.add(Path(os.path.realpath(sys.executable)).parent.parent)
        paths = []
        for path in sorted(candidates, key=lambda p: len(p.parts)):
            if path == Path("/") or not path.is_dir():
                continue
            if any(path.is_relative_to(b) for b in [*bound, *paths]):
                continue
            paths.append(path)
        return paths

    # --- running -----------------------------------------------------------------------------------

    def spawn(self, workspace: Path, command: str, env: dict[str, str]) -> SandboxProcess:
        """Start `command` (stdout and stderr together on `.stdout`); the caller must `kill()` it
        when it is done or timed out, which also removes anything it left running."""
        if self.kind == "none":
            proc = subprocess.Popen(
                command,
                shell=True,
                cwd=workspace,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            return SandboxProcess(proc)
        read_end, write_end = os.pipe()
        argv = self.argv(workspace, command, env, info_fd=write_end)
        cgroup = self._new_cgroup()
        if cgroup is not None:
            # Join the cgroup before bwrap starts, so every process of the sandbox is counted.
            argv = [
                "/bin/sh",
                "-c",
                'echo 0 > "$1" && shift && exec "$@"',
                "sh",
                str(cgroup / "cgroup.procs"),
                *argv,
            ]
        try:
            proc = subprocess.Popen(
                argv,
                cwd=workspace,
                env={"PATH": os.environ.get("PATH") or os.defpath, "LANG": "C.UTF-8"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(write_end,),
            )
        except OSError as exc:
            if cgroup is not None:
                with contextlib.suppress(OSError):
                    cgroup.rmdir()
            raise SandboxUnavailableError(f"could not start {self.bwrap}: {exc}") from exc
        finally:
            os.close(write_end)
        try:
            # bwrap writes the sandbox's PID 1 here right after creating it, then closes the pipe
            # (also closed at once if bwrap fails before that).
            info = b""
            while chunk := os.read(read_end, 4096):
                info += chunk
        finally:
            os.close(read_end)
        child_pid = None
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            child_pid = int(json.loads(info or b"{}").get("child-pid"))
        return SandboxProcess(proc, child_pid=child_pid, cgroup=cgroup)

    def _new_cgroup(self) -> Path | None:
        """A `pids` cgroup for one command, only where RLIMIT_NPROC cannot work (the worker is root)."""
        if os.geteuid() != 0 or self.limits.processes <= 0:
            return None
        base = _pids_cgroup_base()
        if base is None:
            log.warning(
                "the worker runs as root and no pids cgroup can be created: tools.limits.processes "
                "is not enforced (run the worker as an ordinary user)"
            )
            return None
        path = base / f"elpis-sandbox-{os.getpid()}-{next(_CGROUP_SEQ)}"
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(self.limits.processes))
        except OSError as exc:
            log.warning("could not create the sandbox's pids cgroup %s: %s", path, exc)
            with contextlib.suppress(OSError):
                path.rmdir()
            return None
        return path

    @property
    def process_limit_enforced(self) -> bool:
        """Whether tools.limits.processes really bounds a fork bomb here."""
        if self.kind == "none" or self.limits.processes <= 0:
            return False
        return os.geteuid() != 0 or _pids_cgroup_base() is not None

    # --- is it usable? -----------------------------------------------------------------------------

    def check(self) -> SandboxCheck:
        """Whether commands can be sandboxed here: runs `true` in a real sandbox (bubblewrap present,
        user namespaces allowed, the launcher's Python reachable)."""
        if self.kind == "none":
            return SandboxCheck(
                True, "none", "tools.sandbox is 'none': the agent's commands run unsandboxed, as the worker"
            )
        if shutil.which(self.bwrap) is None:
            return SandboxCheck(
                False,
                "bwrap",
                f"{self.bwrap} not found: install bubblewrap (apt-get install bubblewrap; "
                "scripts/ensure_bwrap.sh) or set tools.sandbox: none to run commands unsandboxed",
            )
        version = _bwrap_version(self.bwrap)
        with tempfile.TemporaryDirectory(prefix="elpis-sandbox-check-") as tmp:
            try:
                sandboxed = self.spawn(Path(tmp), "true", {"PATH": SANDBOX_PATH})
            except SandboxError as exc:
                return SandboxCheck(False, "bwrap", str(exc))
            try:
                out, _ = sandboxed.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                out = b"timed out after 30 s"
            finally:
                sandboxed.kill()
        if sandboxed.proc.returncode != 0:
            reason = out.decode("utf-8", "replace").strip().splitlines()
            return SandboxCheck(
                False,
                "bwrap",
                f"{self.bwrap} cannot create a sandbox here ({reason[-1] if reason else 'no output'}): "
                "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or the "
                "AppArmor userns restriction) or set tools.sandbox: none to run commands unsandboxed",
            )
        warnings = []
        if not self.process_limit_enforced and self.limits.processes > 0:
            warnings.append(
                "tools.limits.processes is not enforced: the worker runs as root and cannot create a "
                "pids cgroup; run it as an ordinary user"
            )
        network = "network on" if self.network else "no network"
        return SandboxCheck(True, "bwrap", f"{version}, {network}", tuple(warnings))

    def require(self) -> None:
        """Raise SandboxUnavailableError (with what to do) unless commands can be sandboxed as configured."""
        result = self.check()
        if not result.ok:
            raise SandboxUnavailableError(result.detail)


@functools.cache
def _etc_secret_paths() -> tuple[str, ...]:
    """Entries of /etc that other users cannot read (shadow, private keys, root-only config): hidden,
    so a command sees /etc as an unprivileged user would even when the worker is root (a root worker's
    sandbox still owns root's files, so permissions alone do not protect them). Read once per process."""
    masks: list[str] = []
    for directory, dirnames, filenames in os.walk("/etc", onerror=lambda _: None):
        for name in list(dirnames):
            path = os.path.join(directory, name)
            mode = _lstat_mode(path)
            if mode is not None and stat.S_ISDIR(mode) and not _other_can(mode, directory=True):
                masks.append(path)
                dirnames.remove(name)
        for name in filenames:
            path = os.path.join(directory, name)
            mode = _lstat_mode(path)
            if mode is not None and stat.S_ISREG(mode) and not _other_can(mode, directory=False):
                masks.append(path)
    return tuple(masks)


def _lstat_mode(path: str) -> int | None:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return None


def _other_can(mode: int, *, directory: bool) -> bool:
    if directory:
        return bool(mode & stat.S_IROTH and mode & stat.S_IXOTH)
    return bool(mode & stat.S_IROTH)


def _bwrap_version(bwrap: str) -> str:
    try:
        proc = subprocess.run([bwrap, "--version"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "bubblewrap"
    return proc.stdout.decode("utf-8", "replace").strip() or "bubblewrap"


@functools.cache
def _pids_cgroup_base() -> Path | None:
    """This process's cgroup in a writable `pids` hierarchy (cgroup v1 `pids`, or v2 with the pids
    controller enabled for children), or None. Looked up once per process; empty cgroups left by
    sandboxes of dead workers are removed then."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
        own = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    v1_mount = v2_mount = None
    for line in mountinfo:
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        if rfields[0] == "cgroup" and "pids" in rfields[2].split(","):
            v1_mount = Path(fields[4])
        elif rfields[0] == "cgroup2":
            v2_mount = Path(fields[4])
    candidates: list[Path] = []
    for entry in own:
        hierarchy, _, rest = entry.partition(":")
        controllers, _, path = rest.partition(":")
        if v1_mount is not None and "pids" in controllers.split(","):
            candidates.append(v1_mount / path.lstrip("/"))
        if v2_mount is not None and hierarchy == "0" and controllers == "":
            base = v2_mount / path.lstrip("/")
            with contextlib.suppress(OSError):
                if "pids" in (base / "cgroup.subtree_control").read_text().split():
                    candidates.append(base)
    for base in candidates:
        probe = base / f"elpis-probe-{os.getpid()}-{next(_CGROUP_SEQ)}"
        try:
            probe.mkdir()
        except OSError:
            continue
        writable = (probe / "pids.max").exists()
        with contextlib.suppress(OSError):
            probe.rmdir()
        if writable:
            _remove_stale_cgroups(base)
            return base
    return None


def _remove_stale_cgroups(base: Path) -> None:
    """Cgroups of sandboxes whose worker was killed before it could remove them (empty by now)."""
    for path in base.glob("elpis-sandbox-*-*"):
        try:
            owner = int(path.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if owner == os.getpid() or Path(f"/proc/{owner}").exists():
            continue
        with contextlib.suppress(OSError):
            path.rmdir()
