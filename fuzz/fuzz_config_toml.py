#!/usr/bin/env python3
"""Fuzz the model configuration reader: arbitrary bytes as a model folder's config.toml.

The input is the whole file. It is written to <scratch>/fuzzmodel/config.toml and read through
the public entry, `pyserver.config.load_config(model_dir)`, as the repository reads it.

Properties:

- load_config returns a ModelConfig or raises ModelLoadError whose message starts with the
  file's path; nothing else escapes (no RecursionError, TypeError, UnicodeError...);
- a config it accepts is one the server can use: the folder's name, a backend it knows,
  max_batch_size from 0 to 65536, tensors with unique non-empty names, a known datatype and
  dims that are positive or -1, string parameters, at least one instance group; its
  Triton-shaped JSON (GET .../config) serializes; reading the file again gives the same config.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

import orjson

from pyserver.config import config_from_json, load_config, to_triton
from pyserver.errors import ModelLoadError
from pyserver.types import DataType

MODEL = "fuzzmodel"
_SCRATCH: Path | None = None


def _model_dir() -> Path:
    """A scratch model folder, made once per process (in memory where /dev/shm exists)."""
    global _SCRATCH
    if _SCRATCH is None:
        shm = Path("/dev/shm")
        root = Path(tempfile.mkdtemp(prefix="pyserver-fuzz-", dir=shm if shm.is_dir() else None))
        atexit.register(shutil.rmtree, root, True)
        _SCRATCH = root / MODEL
        _SCRATCH.mkdir()
    return _SCRATCH


def check_input(data: bytes) -> None:
    """The property function (libFuzzer's TestOneInput)."""
    model_dir = _model_dir()
    file = model_dir / "config.toml"
    file.write_bytes(data)
    try:
        config = load_config(model_dir)
    except ModelLoadError as exc:
        assert str(exc).startswith(f"{file}: "), str(exc)
        return
    assert config.name == MODEL
    assert config.path == model_dir
    assert 0 <= config.max_batch_size <= 65536
    for tensors in (config.inputs, config.outputs):
        names = [t.name for t in tensors]
        assert len(set(names)) == len(names) and all(type(n) is str and n for n in names)
        for spec in tensors:
            assert isinstance(spec.datatype, DataType)
            assert spec.dims and all(type(d) is int and (d == -1 or d >= 1) for d in spec.dims)
    assert config.instance_group
    assert all(type(k) is str and type(v) is str for k, v in config.parameters.items())
    triton = to_triton(config)
    assert orjson.loads(orjson.dumps(triton))["name"] == MODEL
    # the JSON of GET .../config, given back as a load request's config, means the same
    assert to_triton(config_from_json(orjson.dumps(triton).decode(), model_dir, MODEL)) == triton
    assert load_config(model_dir) == config


if __name__ == "__main__":
    from _runner import run

    run(check_input)
    sys.exit(0)
