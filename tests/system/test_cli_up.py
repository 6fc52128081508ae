"""`elpis up` on the embedded default (its own PostgreSQL+pgvector and valkey under $ELPIS_HOME), driven
like a user would, with the scripted backend so the outcome is deterministic."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import yaml
from helpers import ROOT, SAMPLES, free_port, wait_for

ELPIS = str(Path(sys.executable).parent / "elpis")


class Up:
    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [ELPIS, "up", *args],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_serving(self) -> None:
        wait_for(
            lambda: "serving" in self.output or self.process.poll() is not None,
            timeout=240,
            what="elpis up to serve",
        )
        assert self.process.poll() is None, self.output

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def elpis(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ELPIS, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_up_works_a_batch_serves_and_stops_everything(tmp_path: Path):
    home = tmp_path / "home"
    # No ELPIS_API_TOKEN either: `elpis up` makes one, and the CLI finds it under ELPIS_HOME.
    unset = ("ELPIS_DATABASE_URL", "ELPIS_BROKER_URL", "ELPIS_API_TOKEN")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(
        ELPIS_HOME=str(home),
        ELPIS_API_PORT=str(free_port()),
        ELPIS_FLOWER_PORT=str(free_port()),
        ELPIS_MODEL__BACKEND="scripted",
        ELPIS_MODEL__SCRIPT=str(SAMPLES / "fix_script.json"),
        ELPIS_WORKER__CONCURRENCY="1",
        COLUMNS="120",
        # Secrets this run is given: none may appear in any log or output (checked at the end).
        ELPIS_GITHUB_WEBHOOK_SECRET="whsec-4f1d2c",
        ELPIS_WEBHOOKS__GITHUB__PUSH_TOKEN="ghp-push-77aa01",
        ELPIS_MODEL__API_KEY="sk-model-5e6f",
    )
    sample = yaml.safe_load((SAMPLES / "batch.yaml").read_text())
    batch = tmp_path / "batch.yaml"
    batch.write_text(yaml.safe_dump({"tasks": [sample["tasks"][0] | {"repo": str(SAMPLES / "calc")}]}))

    up = Up(env, "--batch", str(batch))
    up.wait_serving()
    out = up.output
    assert "database (embedded) and broker (embedded valkey)" in out
    assert "submitted batch 1 (1 tasks)" in out
    assert "succeeded" in out and "+    return a - b" in out  # the summary shows status and diff
    assert "batch 1: 1/1 succeeded" in out
    for secret in ("api_token", "flower_auth"):  # generated, private, and said where
        assert stat.S_IMODE((home / secret).stat().st_mode) == 0o600
        assert str(home / secret) in out
    token = (home / "api_token").read_text().strip()
    assert token not in out
    api = f"http://127.0.0.1:{env['ELPIS_API_PORT']}"
    assert httpx.get(f"{api}/v1/tasks/1", timeout=10).status_code == 401
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{api}/v1/tasks/1", headers=auth, timeout=10).status_code == 200

    status = elpis(env, "status", "1")
    assert status.returncode == 0, status.stderr
    # One generation per turn; the first turn has nothing to reflect on.
    assert "observe 3, memory 1, reflect 4, think 5, tool_call 5, tool_result 5, emotion 5" in status.stdout
    assert "trajectory" in status.stdout and "valence" in status.stdout
    steps = elpis(env, "steps", "1")
    assert steps.returncode == 0 and "edit_file" in steps.stdout
    chart = tmp_path / "emotions.png"
    plotted = elpis(env, "plot", "1", "-o", str(chart))
    assert plotted.returncode == 0, plotted.stderr
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = elpis(env, "status", "99")
    assert missing.returncode == 1 and missing.stderr.strip() == "error: 404: task 99 not found " + (
        "(GET /v1/tasks lists the known tasks)"
    )

    assert up.stop() == 0
    assert "stopped" in up.output
    flower_password = (home / "flower_auth").read_text().strip().partition(":")[2]
    secrets = [token, flower_password, "whsec-4f1d2c", "ghp-push-77aa01", "sk-model-5e6f"]
    logs = sorted(p for p in (home / "logs").rglob("*") if p.is_file())
    assert logs, "the run wrote no logs"
    for text in [up.output, status.stdout, steps.stdout] + [p.read_text("utf-8", "replace") for p in logs]:
        assert not [secret for secret in secrets if secret in text]
    assert not (home / "postgres" / "postmaster.pid").exists()  # the embedded database was stopped
    assert elpis(env, "status").returncode == 1  # nothing serves any more

    # A second run reuses the data: the first run's task is still there.
    again = Up(env, "--no-sample")
    again.wait_serving()
    listed = elpis(env, "status")
    assert listed.returncode == 0 and "succeeded" in listed.stdout
    assert again.stop() == 0
