"""A model's configuration: where it comes from and what it says.

A model folder holds `config.toml` (Triton's names in TOML), or Triton's `config.pbtxt`
(protobuf text), or neither: then the configuration is completed from the model file (its
inputs, outputs and whether it batches). A load request may also override it with Triton's JSON.
All of them end in one check (reader.py) that names the file, the key and what was expected.

    schema.py       the dataclasses and enums
    reader.py       the check: a table with Triton's names -> ModelConfig
    pbtxt.py        config.pbtxt -> that table (via Triton's JSON shape)
    triton_json.py  Triton's JSON -> that table, and ModelConfig -> Triton's JSON
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tomllib
from pathlib import Path
from typing import Any

from pyserver.config.pbtxt import parse as parse_pbtxt
from pyserver.config.reader import read_config
from pyserver.config.schema import (
    MAX_BATCH_SIZE_LIMIT,
    Backend,
    DynamicBatching,
    InstanceGroup,
    InstanceKind,
    ModelConfig,
    ModelWarmup,
    MonitoredInput,
    MonitoredOutput,
    Monitoring,
    PayloadLogging,
    QueuePolicy,
    TimeoutAction,
    VersionPolicy,
    VersionPolicyKind,
    WarmupData,
    WarmupInput,
)
from pyserver.config.triton_json import from_triton, to_triton
from pyserver.errors import ModelLoadError

log = logging.getLogger("pyserver.config")

CONFIG_FILENAME = "config.toml"
PBTXT_FILENAME = "config.pbtxt"
CONFIG_FILENAMES = (CONFIG_FILENAME, PBTXT_FILENAME)
DEFAULT_MAX_BATCH_SIZE = 4  # Triton's --backend-config=default-max-batch-size
# Model files a version folder may hold when there is no config, and the backend each means.
MODEL_FILES = {
    "model.onnx": Backend.ONNXRUNTIME,
    "model.plan": Backend.TENSORRT,
    "model.pt2": Backend.PYTORCH,
    "model.pt": Backend.PYTORCH,
}

__all__ = [
    "CONFIG_FILENAME",
    "CONFIG_FILENAMES",
    "DEFAULT_MAX_BATCH_SIZE",
    "MAX_BATCH_SIZE_LIMIT",
    "MODEL_FILES",
    "PBTXT_FILENAME",
    "Backend",
    "DynamicBatching",
    "InstanceGroup",
    "InstanceKind",
    "ModelConfig",
    "ModelWarmup",
    "MonitoredInput",
    "MonitoredOutput",
    "Monitoring",
    "PayloadLogging",
    "QueuePolicy",
    "TimeoutAction",
    "VersionPolicy",
    "VersionPolicyKind",
    "WarmupData",
    "WarmupInput",
    "config_from_json",
    "load_config",
    "to_triton",
]


def load_config(
    model_dir: Path, *, name: str | None = None,
    default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> ModelConfig:
    """The configuration of the model in `model_dir` (named `name`, or after the folder): from
    config.toml, from config.pbtxt, or completed from the model file when there is neither.
    Raises ModelLoadError naming the file and the key."""
    model_dir = Path(model_dir)
    present = [f for f in CONFIG_FILENAMES if (model_dir / f).is_file()]
    if len(present) > 1:
        raise ModelLoadError(
            f"{model_dir}: holds both {CONFIG_FILENAME} and {PBTXT_FILENAME}; expected one "
            "configuration (remove one of them)"
        )
    if not present:
        return _completed(model_dir, name, default_max_batch_size)
    file = model_dir / present[0]
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{file}: cannot be read: {exc}") from None
    if present[0] == CONFIG_FILENAME:
        try:
            raw = tomllib.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ModelLoadError(f"{file}: cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ModelLoadError(f"{file}: invalid TOML: {exc}") from None
        except RecursionError:  # tomllib parses nested arrays and tables recursively
            raise ModelLoadError(f"{file}: invalid TOML: arrays or tables nested too deeply") from None
        return read_config(raw, model_dir, str(file), name=name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{file}: cannot be read: {exc}") from None
    return _from_triton(parse_pbtxt(text, str(file)), model_dir, str(file), name,
                        default_max_batch_size)


def config_from_json(
    text: str, model_dir: Path, name: str, *,
    default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> ModelConfig:
    """A load request's `config` parameter (Triton's model configuration as JSON) for the model
    `name` whose files are in `model_dir`."""
    source = f"the load request's config for model '{name}'"
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ModelLoadError(f"{source}: not valid JSON: {exc}") from None
    return _from_triton(doc, model_dir, source, name, default_max_batch_size)


def _from_triton(
    doc: object, model_dir: Path, source: str, name: str | None, default_max_batch_size: int
) -> ModelConfig:
    raw, warnings = from_triton(doc, source)
    for warning in warnings:
        log.warning("%s", warning)
    # Triton completes max_batch_size (and turns dynamic batching on) when the configuration
    # leaves it out and the model file says it can batch.
    auto = "max_batch_size" not in raw
    if auto:
        raw["max_batch_size"] = default_max_batch_size
    config = read_config(raw, model_dir, source, name=name)
    return _auto(config) if auto else config


def _completed(model_dir: Path, name: str | None, default_max_batch_size: int) -> ModelConfig:
    """No configuration file: the backend is the one for the model file of the highest version
    folder; the backend completes the rest from the file."""
    versions = sorted(
        (int(p.name) for p in _version_folders(model_dir)), reverse=True
    )
    for version in versions:
        for filename, backend in MODEL_FILES.items():
            if (model_dir / str(version) / filename).is_file():
                raw: dict[str, Any] = {
                    "backend": str(backend), "max_batch_size": default_max_batch_size,
                    "default_model_filename": filename,
                }
                return _auto(read_config(raw, model_dir, str(model_dir), name=name))
    raise ModelLoadError(
        f"{model_dir}: no {CONFIG_FILENAME} or {PBTXT_FILENAME}, and no model file to complete "
        f"a configuration from (expected one of {', '.join(MODEL_FILES)} in a numeric version "
        "folder such as 1/)"
    )


def _auto(config: ModelConfig) -> ModelConfig:
    return dataclasses.replace(config, auto_complete=True)


def _version_folders(model_dir: Path) -> list[Path]:
    try:
        entries = list(model_dir.iterdir())
    except OSError:
        return []
    return [p for p in entries if p.is_dir() and is_version_name(p.name)]


def is_version_name(name: str) -> bool:
    """A version folder's name: a positive integer without leading zeros (as Triton)."""
    return name.isascii() and name.isdigit() and not name.startswith("0")
