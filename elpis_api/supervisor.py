"""`elpis up`: start the embedded stack and every Elpis process, stop them all on Ctrl-C / SIGTERM."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

from configs import Settings
from elpis_api.stack import EmbeddedBroker, StackError, start_embedded_postgres, stop_embedded_postgres, which


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Supervisor:
    settings: Settings
    children: list[Child] = field(default_factory=list)
    broker: EmbeddedBroker | None = None
    embedded_postgres: bool = False
    database_url: str = ""
    broker_url: str = ""
    # The admin token every process started here shares (ELPIS_API_TOKEN), and Flower's basic auth;
    # each path is where `elpis up` keeps a generated one (None: it came from the config).
    api_token: str = field(default="", repr=False)
    api_token_path: Path | None = None
    flower_auth: str = field(default="", repr=False)
    flower_auth_path: Path | None = None

    @property
    def logs(self) -> Path:
        path = self.settings.home_dir / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start_services(self) -> None:
        """Use the configured servers, or start the embedded ones under $ELPIS_HOME."""
        if self.settings.database_url.get_secret_value():
            self.database_url = self.settings.database_url.get_secret_value()
        else:
            self.database_url = start_embedded_postgres()
            self.embedded_postgres = True
        if self.settings.broker_url.get_secret_value():
            self.broker_url = self.settings.broker_url.get_secret_value()
        else:
            self.broker = EmbeddedBroker()
            self.broker_url = self.broker.start()

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["ELPIS_DATABASE_URL"] = self.database_url
        env["ELPIS_BROKER_URL"] = self.broker_url
        env["ELPIS_HOME"] = str(self.settings.home_dir)
        # Only the process that needs a secret gets it (spawn adds it): workers run model-written code.
        for secret in ("ELPIS_API_TOKEN", "ELPIS_FLOWER_BASIC_AUTH"):
            env.pop(secret, None)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    @property
    def metrics_dir(self) -> Path:
        """Where api and worker processes keep their Prometheus counters (elpis_api/metrics.py): always
        under this stack's home, whatever an inherited PROMETHEUS_MULTIPROC_DIR says."""
        return self.settings.home_dir / "run" / "prometheus"

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            # Own process group: Ctrl-C reaches only `elpis up`, which stops each child in order; one
            # that does not stop in time is killed with its whole tree (Celery's pool children too).
            process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env or self.child_env(),
                start_new_session=True,
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def ensure_secrets(self) -> None:
        """The API token and Flower's password: configured, or generated once under $ELPIS_HOME."""
        from elpis_api.tokens import ensure_api_token, ensure_flower_auth

        self.api_token, self.api_token_path = ensure_api_token(self.settings)
        self.flower_auth, self.flower_auth_path = ensure_flower_auth(self.settings)

    def start_processes(self) -> None:
        s = self.settings
        if not self.api_token:
            self.ensure_secrets()
        celery = which("celery")
        run = s.home_dir / "run"
        # Counters of the processes of an earlier run would be added to this run's.
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.metrics_dir.mkdir(parents=True, exist_ok=True)
        self.spawn(
            "worker",
            [
                celery,
                "-A",
                "elpis_worker.celery_app",
                "worker",
                "-n",
                "elpis@%h",
                "-Q",
                f"{s.worker.queue},maintenance",
                "-c",
                str(s.worker.concurrency),
                "--pool",
                "prefork",
                "-l",
                s.log_level,
                "-E",
            ],
        )
        self.spawn(
            "beat",
            [
                celery,
                "-A",
                "elpis_worker.celery_app",
                "beat",
                "-l",
                s.log_level,
                "-s",
                str(run / "celerybeat-schedule"),
            ],
        )
        self.spawn(
            "api",
            [
                which("uvicorn"),
                "elpis_api.app:app",
                "--host",
                s.api_host,
                "--port",
                str(s.api_port),
                "--log-level",
                s.log_level.lower(),
                # Live pages hold server-sent-event streams open; don't wait on them at shutdown.
                "--timeout-graceful-shutdown",
                "3",
            ],
            env=self.child_env() | {"ELPIS_API_TOKEN": self.api_token},
        )
        self.spawn(
            "flower",
            [
                celery,
                "-A",
                "elpis_worker.celery_app",
                "flower",
                f"--port={s.flower_port}",
                f"--address={s.flower_address}",
                "--persistent=True",
                f"--db={run / 'flower.db'}",
            ],
            # Flower serves its own /metrics; its prometheus-client must not write into Elpis's store.
            # Its basic auth comes through the environment (FLOWER_*), never the command line: other
            # users of the host can read a command line.
            env={k: v for k, v in self.child_env().items() if k != "PROMETHEUS_MULTIPROC_DIR"}
            | {"FLOWER_BASIC_AUTH": self.flower_auth},
        )

    def check_children(self) -> None:
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                tail = child.log.read_text(errors="replace").strip().splitlines()[-5:]
                raise StackError(
                    f"{child.name} exited with code {code}; last lines of {child.log}:\n" + "\n".join(tail)
                )

    def wait_for_api(self, timeout: float = 60.0) -> None:
        url = f"http://{self.settings.api_host}:{self.settings.api_port}/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_children()
            try:
                health = httpx.get(url, timeout=5).json()
                # The worker may still be loading its model: database and broker are what the API needs.
                if health.get("database") == "ok" and health.get("broker") == "ok":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.3)
        raise StackError(f"the API did not answer {url} within {timeout:.0f} s (see {self.logs / 'api.log'})")

    def wait_for_worker(self, since: datetime, timeout: float = 180.0) -> float:
        """Wait until every worker process has loaded its model (one `worker_process` row each)."""
        from sqlalchemy import func, select

        from models import WorkerProcess, session_scope

        started = time.monotonic()
        worker = next(c for c in self.children if c.name == "worker")
        while time.monotonic() - started < timeout:
            self.check_children()
            with session_scope(self.database_url) as session:
                loaded = session.scalar(
                    select(func.count()).select_from(WorkerProcess).where(WorkerProcess.started_at >= since)
                )
            if loaded and loaded >= self.settings.worker.concurrency:
                return time.monotonic() - started
            time.sleep(0.5)
        raise StackError(f"the worker did not load its model within {timeout:.0f} s (see {worker.log})")

    def database_now(self) -> datetime:
        from sqlalchemy import func, select

        from models import session_scope

        with session_scope(self.database_url) as session:
            return session.scalar(select(func.now()))

    def stop(self) -> None:
        # SIGTERM to each child's own process, as docker and Kubernetes send it: the worker's main
        # process then stops its pool's agent tasks after their current step and hands them back
        # (elpis_worker/shutdown.py), where pool processes signalled themselves would die mid-step.
        for child in reversed(self.children):
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in self.children:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait(timeout=5)
        self.children.clear()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.embedded_postgres:
            stop_embedded_postgres()
            self.embedded_postgres = False


def install_signal_handlers() -> None:
    """SIGTERM behaves like Ctrl-C, so `finally:` blocks stop everything we started."""

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)
    if sys.platform != "win32":
        signal.signal(signal.SIGHUP, _raise)
