"""docker-compose.yml and deploy/k8s/elpis.yaml cannot be run here (no Docker engine, no cluster), so
check they stay consistent with the `elpis` command: every command is a real subcommand with real
options, and the Kubernetes example runs the same roles as compose."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from helpers import ROOT


def check_elpis_command(name: str, command: list[str]) -> None:
    """`command` runs a real `elpis` subcommand, with options it has."""
    assert command[0] == "elpis", f"{name}: {command} is not an elpis command"
    elpis = str(Path(sys.executable).parent / "elpis")
    help_text = subprocess.run([elpis, command[1], "--help"], capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0, (name, help_text.stderr)
    for option in (part.split("=")[0] for part in command[2:] if part.startswith("--")):
        assert option in help_text.stdout, f"{name}: `elpis {command[1]}` has no {option}"


def test_compose_commands_are_real_elpis_commands():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "api", "worker", "beat", "flower"} <= set(services)
    assert "pgvector" in services["postgres"]["image"]
    assert services["worker"]["deploy"]["replicas"] >= 2
    for name, service in services.items():
        command = service.get("command") or []
        if not command or command[0] != "elpis":
            continue
        check_elpis_command(name, command)
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


def test_deployments_refuse_rest_tasks_on_the_workers_own_files():
    """The embedded stack allows a local `repo` (tools.allow_local_repos: true); a deployment whose API
    faces other people does not."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["api"]["environment"]["ELPIS_TOOLS__ALLOW_LOCAL_REPOS"] == "false"
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "elpis.yaml").read_text()) if d]
    [api] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "elpis-api"]
    env = {e["name"]: e["value"] for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ELPIS_TOOLS__ALLOW_LOCAL_REPOS"] == "false"
    defaults = yaml.safe_load((ROOT / "configs" / "config.yaml").read_text())
    assert defaults["tools"]["allow_local_repos"] is True


def test_kubernetes_example_runs_the_compose_roles_with_real_elpis_commands():
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "elpis.yaml").read_text()) if d]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    commands: dict[str, list[str]] = {}
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            check_elpis_command(f"{doc['metadata']['name']}/{container['name']}", container["command"])
            commands[container["name"]] = container["command"]
            # Database, broker and API token come from the Secret, never written in the manifest.
            assert {"secretRef": {"name": "elpis"}} in container["envFrom"], container["name"]
            names = {e["name"] for e in container.get("env", [])}
            assert not names & {"ELPIS_DATABASE_URL", "ELPIS_BROKER_URL", "ELPIS_API_TOKEN"}
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    assert deployments == {"elpis-api", "elpis-worker", "elpis-beat", "elpis-flower"}
    # The same roles, run with the same commands, as docker compose.
    elpis_roles = {
        name for name, service in compose.items() if (service.get("command") or [""])[0] == "elpis"
    }
    assert set(commands) == elpis_roles
    for role in elpis_roles:
        assert commands[role] == compose[role]["command"], role
    [beat] = [d for d in docs if d["metadata"]["name"] == "elpis-beat"]
    assert beat["spec"]["replicas"] == 1  # a second beat would send every periodic task twice
    [service] = [d for d in docs if d["kind"] == "Service"]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "api"
    [api] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "elpis-api"]
    [port] = api["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert port["containerPort"] == int(commands["api"][commands["api"].index("--port") + 1])


def test_workers_get_time_to_finish_their_step_before_the_kill():
    """SIGTERM stops a worker's tasks after the step in progress (elpis_worker/shutdown.py): compose and
    Kubernetes wait the same grace period before SIGKILL, long enough for a command or the tests after
    an edit (tools.command_timeout) plus a generation."""
    from configs import get_settings

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    value, unit = compose["worker"]["stop_grace_period"][:-1], compose["worker"]["stop_grace_period"][-1]
    compose_seconds = int(value) * {"s": 1, "m": 60}[unit]
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "elpis.yaml").read_text()) if d]
    [worker] = [d for d in docs if d["metadata"]["name"] == "elpis-worker"]
    k8s_seconds = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert compose_seconds == k8s_seconds
    assert k8s_seconds >= 2 * get_settings().tools.command_timeout
