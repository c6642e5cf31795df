#!/usr/bin/env python3
"""Fuzz Triton's config.pbtxt reader: arbitrary bytes as a model folder's config.pbtxt.

The input is the whole file, read through the public entry `pyserver.config.load_config` as the
repository reads it (the text-format parser, then the one check every format feeds).

Properties:

- load_config returns a ModelConfig or raises ModelLoadError whose message starts with the
  file's path; nothing else escapes (no RecursionError, IndexError, UnicodeError...);
- an accepted config is usable (as in fuzz_config_toml) and means the same when its Triton JSON
  comes back as a load request's config;
- the parser alone: a text it accepts parses to the same JSON shape the second time.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

import orjson

from pyserver.config import config_from_json, load_config, to_triton
from pyserver.config.pbtxt import parse
from pyserver.errors import ModelLoadError
from pyserver.types import DataType

MODEL = "fuzzmodel"
_SCRATCH: Path | None = None


def _model_dir() -> Path:
    global _SCRATCH
    if _SCRATCH is None:
        shm = Path("/dev/shm")
        root = Path(tempfile.mkdtemp(prefix="pyserver-fuzz-", dir=shm if shm.is_dir() else None))
        atexit.register(shutil.rmtree, root, True)
        _SCRATCH = root / MODEL
        (_SCRATCH / "1").mkdir(parents=True)
    return _SCRATCH


def check_input(data: bytes) -> None:
    """The property function (libFuzzer's TestOneInput)."""
    model_dir = _model_dir()
    file = model_dir / "config.pbtxt"
    file.write_bytes(data)
    try:
        config = load_config(model_dir)
    except ModelLoadError as exc:
        assert str(exc).startswith(f"{file}"), str(exc)
        return
    text = data.decode("utf-8")
    assert parse(text, "x") == parse(text, "x")
    assert config.name == MODEL and config.path == model_dir
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
    again = config_from_json(orjson.dumps(triton).decode(), model_dir, MODEL)
    assert to_triton(again) == triton


if __name__ == "__main__":
    from _runner import run

    run(check_input)
    sys.exit(0)
