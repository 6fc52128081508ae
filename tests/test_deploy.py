"""docker-compose.yml cannot be run here (no Docker engine), so check it stays consistent with the
`elpis` command: every service command is a real subcommand with real options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from conftest import ROOT


def test_compose_commands_are_real_elpis_commands():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "api", "worker", "beat", "flower"} <= set(services)
    assert "pgvector" in services["postgres"]["image"]
    assert services["worker"]["deploy"]["replicas"] >= 2
    elpis = str(Path(sys.executable).parent / "elpis")
    for name, service in services.items():
        command = service.get("command") or []
        if not command or command[0] != "elpis":
            continue
        help_text = subprocess.run([elpis, command[1], "--help"], capture_output=True, text=True, timeout=60)
        assert help_text.returncode == 0, (name, help_text.stderr)
        for option in (part.split("=")[0] for part in command[2:] if part.startswith("--")):
            assert option in help_text.stdout, f"{name}: `elpis {command[1]}` has no {option}"
        env = service["environment"]
        assert env["ELPIS_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["ELPIS_BROKER_URL"].startswith("redis://")


def test_compose_publishes_nothing_beyond_the_hosts_loopback():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    env = compose["services"]["api"]["environment"]
    assert "api" in env["ELPIS_API_ALLOWED_HOSTS"]
