"""The architecture's rules, checked: one direction of dependencies (import-linter's contracts in
pyproject.toml), and importing a module defines things and does nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("configs", "models", "elpis_worker", "elpis_api", "migrations")

# Imports every module in a fresh interpreter and reports what changed: the environment, threads,
# child processes, and files under ELPIS_HOME.
PROBE = r"""
import importlib, json, os, pkgutil, sys, threading
from pathlib import Path

home = Path(sys.argv[1])
before_env, before_threads = dict(os.environ), threading.active_count()
names = []
for package in sys.argv[2:]:
    module = importlib.import_module(package)
    names.append(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        if info.name == "migrations.env":  # Alembic's script: only runs inside `alembic upgrade`
            continue
        importlib.import_module(info.name)
        names.append(info.name)
children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
print(json.dumps({
    "modules": names,
    "env": sorted(k for k in set(os.environ) | set(before_env) if os.environ.get(k) != before_env.get(k)),
    "threads": threading.active_count() - before_threads,
    "children": children,
    "home": sorted(str(p) for p in home.rglob("*")) if home.exists() else [],
}))
"""


def run_probe(script: str, args: list[str], tmp_path: Path) -> Any:
    """Run `script` in a fresh interpreter with a clean environment (no server addresses, so a module
    that resolved or started one would fail or leave a trace) and return the JSON of its last line."""
    env = {"PATH": "/usr/bin:/bin", "ELPIS_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_the_layer_contracts_hold() -> None:
    """elpis_api -> elpis_worker -> models -> configs, and migrations below the application packages."""
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in run.stdout, run.stdout[-2000:]


def test_importing_any_module_starts_nothing_and_writes_no_environment(tmp_path: Path) -> None:
    home = tmp_path / "home"  # run_probe's ELPIS_HOME
    report = run_probe(PROBE, [str(home), *PACKAGES], tmp_path)
    assert len(report["modules"]) >= 60, report["modules"]
    assert {"elpis_worker.celery_app", "elpis_api.metrics", "elpis_worker.metrics"} <= set(report["modules"])
    assert report["env"] == []
    assert report["children"] == []
    assert report["threads"] == 0
    assert report["home"] == []


# Exceptions that steer control flow and never reach a person: a claim lost to another worker, a
# cancellation, a warm shutdown, a webhook event that is not for us, a page's answers (the login form,
# a FastAPI HTTPException; the redirect after a login), and the private signals of the memory lock and
# the grammar capture.
CONTROL_FLOW = {
    "elpis_worker.store.LostClaim",
    "elpis_worker.store.Cancelled",
    "elpis_worker.shutdown.WorkerShuttingDown",
    "elpis_worker.forges.events.Ignored",
    "elpis_worker.memory._LockBusy",
    "elpis_worker.lazy_grammar._Captured",
    "elpis_api.deps.PageLogin",
    "elpis_api.deps.LoginRequired",
}

ERRORS_PROBE = r"""
import importlib, json, pkgutil, sys
from configs.errors import ElpisError

found = {}
for package in sys.argv[1:]:
    module = importlib.import_module(package)
    for info in [None, *pkgutil.walk_packages(module.__path__, package + ".")]:
        name = package if info is None else info.name
        if name == "migrations.env":
            continue
        for cls in vars(importlib.import_module(name)).values():
            # type(), not isinstance(): a Celery task's proxy would evaluate itself (and the app).
            if issubclass(type(cls), type) and issubclass(cls, BaseException) and cls.__module__ == name:
                found[f"{name}.{cls.__qualname__}"] = issubclass(cls, ElpisError)
print(json.dumps(found))
"""


def test_every_error_raised_on_purpose_is_an_elpis_error(tmp_path: Path) -> None:
    """One hierarchy: `except ElpisError` catches every error Elpis raises for a person to act on (each
    keeps its builtin base, e.g. ValueError, where it has one); only control-flow signals stand apart."""
    found: dict[str, bool] = run_probe(ERRORS_PROBE, list(PACKAGES), tmp_path)
    assert {"configs.settings.ConfigError", "elpis_worker.workspace.WorkspaceError"} <= set(found)
    assert set(found) >= CONTROL_FLOW, CONTROL_FLOW - set(found)  # the list names real classes
    outside = sorted(name for name, elpis in found.items() if not elpis and name not in CONTROL_FLOW)
    assert outside == [], outside
