"""What `--model-repository DIR --model-name NAME` holds, and the repository that serves it.

KServe's storage initializer copies one InferenceService's model into /mnt/models and the
runtime passes the InferenceService's name, so the folder may hold any of three shapes:

- a repository: one folder per model (`digits/config.toml`, `digits/1/model.onnx`), served as
  it is;
- one model's folder: `config.toml` (or Triton's `config.pbtxt`) and/or numeric version
  folders directly inside; served as the model NAME;
- a bare model file: `model.onnx`, `model.plan`, `model.pt` or `model.pt2`, or any single
  `*.onnx` / `*.plan` file; served as version 1 of the model NAME.

For the last two a private repository is made in a temporary folder (TMPDIR) holding symbolic
links, `NAME -> DIR` or `NAME/1/model.<ext> -> the file`, so nothing is copied and DIR may be
read-only; the folder is removed when serving ends.
"""

from __future__ import annotations

import atexit
import enum
import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyserver.config import (
    CONFIG_FILENAME,
    CONFIG_FILENAMES,
    MODEL_FILES,
    PBTXT_FILENAME,
    is_version_name,
)
from pyserver.config.pbtxt import parse as parse_pbtxt
from pyserver.errors import ModelLoadError

# A file of another name is taken when it is the only one with one of these suffixes.
SINGLE_FILE_SUFFIXES = (".onnx", ".plan")


class ModelLayoutError(Exception):
    """The folder cannot be served as asked; the message says why and what would do."""


class Layout(enum.Enum):
    REPOSITORY = "a model repository"
    MODEL_FOLDER = "one model's folder"
    MODEL_FILE = "a bare model file"


@dataclass(frozen=True)
class Detected:
    layout: Layout
    model_file: Path | None = None  # the file, for Layout.MODEL_FILE


def _looks_like_model_folder(path: Path) -> bool:
    if not path.is_dir():
        return False
    if any((path / name).is_file() for name in CONFIG_FILENAMES):
        return True
    try:
        return any(is_version_name(p.name) and p.is_dir() for p in path.iterdir())
    except OSError:
        return False


def detect(folder: Path) -> Detected:
    """Which of the three shapes `folder` has. Names starting with a dot are ignored (the
    storage initializer and editors leave such files)."""
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise ModelLayoutError(f"cannot list the model repository {folder}: {exc}") from None
    if _looks_like_model_folder(folder):
        return Detected(Layout.MODEL_FOLDER)
    if any(_looks_like_model_folder(p) for p in entries):
        return Detected(Layout.REPOSITORY)
    files = [p for p in entries if p.is_file()]
    for candidates, what in (
        ([p for p in files if p.name in MODEL_FILES], "model files"),
        ([p for p in files if p.suffix in SINGLE_FILE_SUFFIXES], "*.onnx/*.plan files"),
    ):
        if len(candidates) == 1:
            return Detected(Layout.MODEL_FILE, candidates[0])
        if len(candidates) > 1:
            names = ", ".join(p.name for p in candidates)
            raise ModelLayoutError(
                f"{folder} holds several {what} ({names}) and no config.toml: put each model in "
                "a folder of its own (NAME/1/model.onnx), or add a config.toml naming the one "
                "to serve"
            )
    return Detected(Layout.REPOSITORY)


def declared_name(folder: Path) -> tuple[Path, str] | None:
    """The model name a model folder's config declares (the file, the name), if it declares
    one. An unreadable config is left to the loader, which reports it in full."""
    toml_file = folder / CONFIG_FILENAME
    if toml_file.is_file():
        try:
            raw = tomllib.loads(toml_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
            return None
        name = raw.get("name")
        return (toml_file, name) if isinstance(name, str) else None
    pbtxt_file = folder / PBTXT_FILENAME
    if pbtxt_file.is_file():
        try:
            name = parse_pbtxt(pbtxt_file.read_text(encoding="utf-8"), str(pbtxt_file)).get("name")
        except (OSError, UnicodeDecodeError, ModelLoadError):
            return None
        return (pbtxt_file, name) if isinstance(name, str) else None
    return None


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ModelLayoutError(
            f"--model-name {name!r} cannot name a model folder (no '/', not '.' or '..')"
        )


@contextmanager
def model_repository(folder: Path, model_name: str | None) -> Iterator[Path]:
    """The repository to serve for `folder` (see the module's docstring); a temporary one for
    a model's folder or a bare file, removed on leaving the context. Without a model name, a
    model's folder or file is named after `folder` itself."""
    detected = detect(folder)
    if detected.layout is Layout.REPOSITORY:
        if model_name is not None:
            _check_name(model_name)
            if not (folder / model_name).is_dir():
                present = sorted(p.name for p in folder.iterdir() if _looks_like_model_folder(p))
                raise ModelLayoutError(
                    f"--model-name {model_name}: {folder} is a model repository with no folder "
                    f"named {model_name} (models found: {', '.join(present) or 'none'}); "
                    "point --model-repository at the model's own folder, or leave "
                    "--model-name out to serve the whole repository"
                )
        yield folder
        return
    name = model_name if model_name is not None else folder.resolve().name
    _check_name(name)
    if detected.layout is Layout.MODEL_FOLDER:
        declared = declared_name(folder)
        if declared is not None and declared[1] != name:
            config_file, config_name = declared
            raise ModelLayoutError(
                f"{config_file} names the model {config_name!r} but it is served as {name!r} "
                "(--model-name, which KServe sets to the InferenceService's name): remove "
                "`name` from the config or make the two the same"
            )
    try:
        root = Path(tempfile.mkdtemp(prefix="pyserver-models-"))
    except OSError as exc:
        raise ModelLayoutError(
            f"cannot make a temporary model repository for {folder} ({exc}); set TMPDIR to a "
            "writable folder (on Kubernetes with a read-only root file system, mount an "
            "emptyDir at /tmp)"
        ) from None
    try:
        if detected.layout is Layout.MODEL_FOLDER:
            (root / name).symlink_to(folder.resolve(), target_is_directory=True)
        else:
            assert detected.model_file is not None
            version = root / name / "1"
            version.mkdir(parents=True)
            (version / f"model{detected.model_file.suffix}").symlink_to(
                detected.model_file.resolve()
            )
        yield root
    finally:
        # rmtree unlinks symbolic links without following them: the model's files stay.
        shutil.rmtree(root, ignore_errors=True)


def prepare(folder: Path, model_name: str | None) -> Path:
    """model_repository() for the life of the process: the temporary repository, if one is
    made, is removed at exit (after a SIGTERM's drain too: pyserver exits normally then)."""
    stack = ExitStack()
    repository = stack.enter_context(model_repository(folder, model_name))
    atexit.register(stack.close)
    return repository
