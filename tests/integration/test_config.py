"""Settings: YAML defaults, ELPIS_* overrides, and errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from configs.settings import DEFAULT_CONFIG, ConfigError, load_settings


def test_defaults_are_documented_and_loaded():
    settings = load_settings()
    text = DEFAULT_CONFIG.read_text()
    for section in ("model", "generation", "budget", "tools", "memory", "emotions", "worker"):
        assert f"\n{section}:" in text
    assert settings.model.n_ctx == 4096 and settings.generation.top_p == 0.9
    assert settings.emotions.baseline.valence == 0.1


def test_environment_overrides_yaml(monkeypatch):
    monkeypatch.setenv("ELPIS_MODEL__THREADS", "3")
    monkeypatch.setenv("ELPIS_EMOTIONS__BASELINE__AROUSAL", "-0.4")
    settings = load_settings()
    assert settings.model.threads == 3 and settings.emotions.baseline.arousal == -0.4


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("model:\n  n_ctxx: 10\n", "model.n_ctxx"),
        ("generation:\n  temperature: hot\n", "generation.temperature"),
        ("emotions:\n  decay_rate: 1.5\n", "emotions.decay_rate"),
        ("databse_url: x\n", "databse_url"),
        ("broker_url: http://not-redis\n", "broker_url"),
    ],
)
def test_bad_yaml_names_the_key(tmp_path: Path, monkeypatch, yaml_text: str, key: str):
    config = tmp_path / "config.yaml"
    config.write_text(yaml_text)
    monkeypatch.setenv("ELPIS_CONFIG", str(config))
    monkeypatch.delenv("ELPIS_BROKER_URL")  # the test session's URL would override the file's
    with pytest.raises(ConfigError, match=rf"'{key}'"):
        load_settings()


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (None, "does not exist"),
        ("model: [unclosed\n", "is not valid YAML"),
        ("- a list\n", "must hold a mapping of keys, not list"),
    ],
)
def test_a_config_file_that_cannot_be_read_says_why(tmp_path: Path, monkeypatch, yaml_text, message):
    config = tmp_path / "config.yaml"
    if yaml_text is not None:
        config.write_text(yaml_text)
    monkeypatch.setenv("ELPIS_CONFIG", str(config))
    with pytest.raises(ConfigError, match=rf"config file {config} {message}"):
        load_settings()


def test_bad_env_value_names_key_and_variable(monkeypatch):
    monkeypatch.setenv("ELPIS_TOOLS__COMMAND_TIMEOUT", "-1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "'tools.command_timeout'" in str(info.value)
    assert "ELPIS_TOOLS__COMMAND_TIMEOUT" in str(info.value)


def test_unknown_env_variable_is_an_error(monkeypatch):
    monkeypatch.setenv("ELPIS_MODEL_THREADS", "2")  # single underscore: a typo
    with pytest.raises(ConfigError, match="ELPIS_MODEL_THREADS"):
        load_settings()


def test_cli_prints_one_line_and_exits_nonzero(tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text("worker:\n  concurrency: lots\n")
    env = {"PATH": "/usr/bin:/bin", "ELPIS_CONFIG": str(config)}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "elpis"), "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: config: bad value for config key 'worker.concurrency' (config.yaml or "
        "ELPIS_WORKER__CONCURRENCY): Input should be a valid integer, unable to parse string as an integer"
    ]
    assert "Traceback" not in result.stdout + result.stderr
