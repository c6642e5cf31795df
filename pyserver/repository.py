"""The model repository on disk: which models it holds and what each one says now.

A model is a folder under the repository root holding a configuration (config.toml or Triton's
config.pbtxt) and/or numeric version folders (`1/`, `2/`, ...) with the model file. Reading one
gives a `ModelSource`: its configuration and, for each version its policy serves, a fingerprint
of the version folder (file names, sizes and modification times), so that the lifecycle can tell
a changed version from an untouched one without reading model files.

A load request may bring its own configuration (Triton's JSON) and files: the files are written
into a private temporary folder, which serves as the model's folder for that load only.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pyserver.config import (
    CONFIG_FILENAMES,
    DEFAULT_MAX_BATCH_SIZE,
    ModelConfig,
    config_from_json,
    load_config,
)
from pyserver.config import is_version_name as _is_version_name
from pyserver.errors import InvalidRequest, ModelLoadError, NotFound

log = logging.getLogger("pyserver.repository")

# (relative path, size, mtime ns) of every file under a version folder, sorted
Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class ModelSource:
    """One model as its folder (or a load request) describes it now. `versions` maps each
    version to serve to its folder's fingerprint; `override` is True when the configuration or
    files came with a load request (such a load always reloads)."""

    name: str
    folder: Path
    config: ModelConfig
    versions: dict[int, Fingerprint]
    present: tuple[int, ...]  # every version folder there is, served or not
    override: bool = False


class ModelRepository:
    """The folder of models. Reads happen in the lifecycle's load threads (they touch the disk)."""

    def __init__(self, root: Path, default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE) -> None:
        self.root = Path(root)
        self.default_max_batch_size = default_max_batch_size

    def names(self) -> list[str]:
        """The models the folder holds now: sub-folders with a configuration file or a numeric
        version folder."""
        try:
            entries = sorted(p for p in self.root.iterdir() if p.is_dir())
        except OSError as exc:
            raise ModelLoadError(f"model repository {self.root}: cannot be listed: {exc}") from None
        return [p.name for p in entries if is_model_folder(p)]

    def folder(self, name: str) -> Path:
        """The folder of model `name`; NotFound when the repository has none."""
        if name in ("", ".", "..") or "/" in name or "\\" in name:
            raise NotFound(f"unknown model '{name}': not a model name")
        folder = self.root / name
        if not (folder.is_dir() and is_model_folder(folder)):
            raise NotFound(
                f"unknown model '{name}': the model repository {self.root} has no folder "
                f"'{name}' holding a model"
            )
        return folder

    def read(self, name: str, *, folder: Path | None = None, config_json: str | None = None,
             extra_versions: tuple[int, ...] = ()) -> ModelSource:
        """Model `name` as its folder (or `folder`, a load request's files) says: the
        configuration (or `config_json` in its place) and the versions to serve: the policy's,
        plus `extra_versions` (loaded one by one through the API) that exist."""
        override = folder is not None or config_json is not None
        folder = folder if folder is not None else self.folder(name)
        if config_json is not None:
            config = config_from_json(
                config_json, folder, name, default_max_batch_size=self.default_max_batch_size)
        else:
            config = load_config(
                folder, name=name, default_max_batch_size=self.default_max_batch_size)
        present = version_folders(folder)
        missing = [v for v in config.version_policy.versions if v not in present]
        if missing:
            raise ModelLoadError(
                f"{config.where('version_policy.specific.versions')}: expected a folder for "
                f"each listed version under {folder}, got none for "
                f"{', '.join(map(str, missing))}"
            )
        wanted = set(config.version_policy.select(present))
        wanted.update(v for v in extra_versions if v in present)
        if not wanted:
            raise ModelLoadError(
                f"{folder}: no numeric version folder to serve (expected e.g. {folder}/1/)")
        return ModelSource(
            name=name, folder=folder, config=config,
            versions={v: fingerprint(folder / str(v)) for v in sorted(wanted)},
            present=tuple(present), override=override,
        )


def is_model_folder(folder: Path) -> bool:
    if any((folder / f).is_file() for f in CONFIG_FILENAMES):
        return True
    return bool(version_folders(folder))


def version_folders(folder: Path) -> list[int]:
    """The numeric version folders, ascending. Like Triton, only folders named by a positive
    integer without leading zeros count; anything else in the model folder is ignored."""
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise ModelLoadError(f"{folder}: cannot list version folders: {exc}") from None
    return sorted(int(p.name) for p in entries if p.is_dir() and _is_version_name(p.name))


def fingerprint(version_dir: Path) -> Fingerprint:
    """What changes when a version folder's files change, without reading them."""
    found: list[tuple[str, int, int]] = []
    for dirpath, _, filenames in os.walk(version_dir):
        for filename in filenames:
            path = Path(dirpath) / filename
            try:
                stat = path.stat()
            except OSError:
                continue  # vanished meanwhile: the next scan sees the folder as it is then
            found.append((str(path.relative_to(version_dir)), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(found))


# --------------------------------------------------------------------------------------------
# files that come with a load request


def decode_files(parameters: Mapping[str, object]) -> dict[str, bytes]:
    """The `file:<version>/<name>` parameters of an HTTP load request, base64-decoded, keyed
    by "<version>/<name>" as the data plane takes them. InvalidRequest names the bad one;
    nothing is written here."""
    files: dict[str, bytes] = {}
    for key, value in parameters.items():
        if not key.startswith("file:"):
            continue
        if not isinstance(value, str):
            raise InvalidRequest(f"load parameter {key!r}: expected base64 text, got "
                                 f"{type(value).__name__}")
        try:
            files[key[len("file:"):]] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(f"load parameter {key!r}: not valid base64: {exc}") from None
    return files


def check_file_name(name: str) -> PurePosixPath:
    """The relative path of a load request's file ("1/model.onnx"), which must stay inside the
    model's folder."""
    path = PurePosixPath(name)
    if (not name or name.startswith("/") or "\\" in name or "\0" in name
            or any(part in ("..", "") for part in name.split("/"))):
        raise InvalidRequest(
            f"load parameter 'file:{name}': expected a relative path inside the model's folder "
            "such as 'file:1/model.onnx' (no '..', no absolute path)"
        )
    return path


@contextmanager
def files_folder(name: str, files: Mapping[str, bytes]) -> Iterator[Path]:
    """A private temporary folder holding `files` ({"1/model.onnx": bytes}), removed on
    exit (the engines have read what they need by then). Every name is checked before anything
    is written."""
    paths = {check_file_name(key): data for key, data in files.items()}
    folder = Path(tempfile.mkdtemp(prefix=f"pyserver-load-{name[:40]}-"))
    try:
        for relative, data in paths.items():
            target = folder.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
