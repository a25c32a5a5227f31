"""Where network weights come from: a registry package, a verified download cached on disk, or a user's file."""

from __future__ import annotations

import hashlib
import http.client
import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from tqdm import tqdm

from dreamcore.errors import WeightsError


def cache_dir() -> Path:
    """The folder for downloaded and imported weights: $DREAMCORE_CACHE, else the user cache directory."""
    override = os.environ.get("DREAMCORE_CACHE")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dreamcore"


@dataclass(frozen=True)
class PackagedWeights:
    """Weights shipped in a pip package (always available offline once installed)."""

    package: str
    class_name: str

    def path(self, progress: bool = True) -> Path:
        try:
            module = importlib.import_module(self.package)
        except ImportError as error:
            raise WeightsError(
                f"The weights package {self.package!r} is not installed. "
                f"Install it with `pip install {self.package.replace('_', '-')}==0.1.0`."
            ) from error
        return Path(getattr(module, self.class_name).get_model_file_path())

    def is_available(self) -> bool:
        return importlib.util.find_spec(self.package) is not None


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad file
        raise WeightsError(f"Could not read the weights file {path}: {error}. Delete it and try again.") from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"The weights file {path} does not hold a state_dict.")
    return {key.removeprefix("module."): value for key, value in state.items()}


# --- downloads ---------------------------------------------------------------------------------------

OFFICIAL_BASE_URL = "https://download.pytorch.org/models/"
_CHUNK = 1 << 20
_TIMEOUT_S = 30


def weights_dir() -> Path:
    """Where downloaded and imported checkpoints of the built-in networks live."""
    return cache_dir() / "weights"


def offline() -> bool:
    """Whether $DREAMCORE_OFFLINE forbids downloads."""
    return os.environ.get("DREAMCORE_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class DownloadedWeights:
    """A published checkpoint, downloaded once into the cache and checked against its hash prefix.

    ``hash_prefix`` is the start of the file's sha256, as torch.hub puts it in the file name.
    $DREAMCORE_WEIGHTS_URL replaces the base address (the file name is appended) for mirrors.
    """

    filename: str
    url: str
    hash_prefix: str

    @property
    def cache_path(self) -> Path:
        return weights_dir() / self.filename

    def source_url(self) -> str:
        base = os.environ.get("DREAMCORE_WEIGHTS_URL", "").strip()
        return f"{base.rstrip('/')}/{self.filename}" if base else self.url

    def is_available(self) -> bool:
        return self.cache_path.is_file()

    def path(self, progress: bool = True) -> Path:
        target = self.cache_path
        if target.is_file():
            return target
        url = self.source_url()
        if offline():
            raise WeightsError(
                f"The weights file {self.filename} is not downloaded yet and DREAMCORE_OFFLINE is set. "
                f"{self._manual_hint(url)}"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        _download(url, target, self.hash_prefix, progress, self._manual_hint(url))
        return target

    def _manual_hint(self, url: str) -> str:
        return (
            f"Download {url} yourself and put it at {self.cache_path}, "
            "or run `dreamcore models import FILE` with the downloaded file."
        )


def _download(url: str, target: Path, hash_prefix: str, progress: bool, hint: str) -> None:
    """Stream ``url`` into a temporary file next to ``target``, check it, then rename it into place."""
    part_path = _temporary_beside(target)
    try:
        with open(part_path, "wb") as sink:
            digest = _fetch(url, sink, progress, target.name, hint)
        if not digest.startswith(hash_prefix.lower()):
            raise WeightsError(
                f"The downloaded {target.name} is corrupt or not the expected file "
                f"(sha256 {digest[:8]}..., expected {hash_prefix}...). {hint}"
            )
        os.replace(part_path, target)
    finally:
        part_path.unlink(missing_ok=True)  # never leave a partial file behind, whatever went wrong


def _fetch(url: str, sink: BinaryIO, progress: bool, name: str, hint: str) -> str:
    """Write the body of ``url`` to ``sink``; its sha256. Short or failed transfers raise WeightsError."""
    request = urllib.request.Request(url, headers={"User-Agent": "dreamcore"})
    digest = hashlib.sha256()
    received = 0
    failed = f"Could not download {name}"
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            with tqdm(
                total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                disable=not progress, file=sys.stderr, leave=False,
            ) as bar:  # fmt: skip
                while chunk := response.read(_CHUNK):
                    try:
                        sink.write(chunk)
                    except OSError as error:  # not the network's fault: say so rather than "connection broke"
                        raise WeightsError(
                            f"{failed}: could not write to the cache ({error.strerror}). "
                            "Free some disk space or set DREAMCORE_CACHE to another folder, and try again."
                        ) from error
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as error:
        raise WeightsError(f"{failed}: {url} answered HTTP {error.code} {error.reason}. {hint}") from error
    except urllib.error.URLError as error:
        raise WeightsError(f"{failed}: cannot reach {url} ({error.reason}). {hint}") from error
    except (OSError, http.client.HTTPException) as error:
        raise WeightsError(f"{failed}: the connection broke ({error or type(error).__name__}). {hint}") from error
    # urllib does not notice a body cut short when the server closes the connection early.
    if expected is not None and received < expected:
        raise WeightsError(f"{failed}: the transfer stopped after {received} of {expected} bytes. {hint}")
    return digest.hexdigest()


# --- imported files ----------------------------------------------------------------------------------


def networks_dir() -> Path:
    """Where networks a user imported live, one folder each."""
    return cache_dir() / "networks"


@dataclass(frozen=True)
class LocalWeights:
    """A checkpoint already in the cache, put there by ``dreamcore models import``."""

    file: Path

    def path(self, progress: bool = True) -> Path:
        if not self.file.is_file():
            raise WeightsError(
                f"The weights file {self.file} is missing. "
                "Import the network again with `dreamcore models import FILE`."
            )
        return self.file

    def is_available(self) -> bool:
        return self.file.is_file()


def _temporary_beside(target: Path) -> Path:
    """A new empty file next to ``target``: on the same filesystem, so ``os.replace`` onto it is atomic."""
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(handle)
    return Path(name)


def install_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically, so a reader never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part_path = _temporary_beside(target)
    try:
        shutil.copyfile(source, part_path)
        os.replace(part_path, target)
    finally:
        part_path.unlink(missing_ok=True)


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a file a user hands us, with errors that say what we expected."""
    if not path.is_file():
        raise WeightsError(f"There is no file {path}. Check the path and try again.")
    advice = "Save the network's weights with `torch.save(model.state_dict(), FILE)` and import that file."
    try:
        state = load_state_dict(path)
    except WeightsError as error:
        raise WeightsError(
            f"{path} is not a PyTorch checkpoint dreamcore can read ({error.__cause__ or error}). {advice}"
        ) from error
    if not state or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise WeightsError(f"{path} does not hold a network's weights (a state_dict of tensors). {advice}")
    return state


def write_manifest(folder: Path, manifest: dict[str, object]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / ".manifest.json.part"
    part.write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
    os.replace(part, folder / "manifest.json")


def read_manifests() -> list[tuple[Path, dict[str, object]]]:
    """(folder, manifest) of every imported network, in name order; unreadable ones are skipped with a warning."""
    found = []
    for manifest_path in sorted(networks_dir().glob("*/manifest.json")):
        try:
            manifest = json.loads(manifest_path.read_text("utf-8"))
        except (OSError, ValueError) as error:
            warnings.warn(f"Skipping the imported network in {manifest_path.parent}: {error}.", stacklevel=2)
            continue
        if isinstance(manifest, dict):
            found.append((manifest_path.parent, manifest))
    return found
