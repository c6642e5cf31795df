"""Triton's model warmup: sample requests run through a version's real scheduler before it turns
READY, so that its first client does not pay for lazy initialization (allocations, kernel
selection, caches).

Each `[[model_warmup]]` sample gives every input a datatype, dims and values (zeros, random, or
the raw bytes of a file under the model's `warmup/` folder); it is sent `count` times with
`batch_size` rows. A sample that fails fails the load, with its name and the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pyserver.config import ModelWarmup, WarmupData, WarmupInput
from pyserver.errors import ModelLoadError, ServerError
from pyserver.model import Model
from pyserver.types import DataType

WARMUP_FOLDER = "warmup"


async def run_warmup(model: Model, model_folder: Path) -> None:
    """Run every warmup sample of `model` (its state is LOADING); ModelLoadError on failure."""
    config = model.config
    for i, sample in enumerate(config.model_warmup):
        where = config.where(f"model_warmup[{i}] ({sample.name!r})")
        inputs = _inputs(model, sample, model_folder, where)
        for _ in range(sample.count):
            try:
                await model.run_raw(inputs)
            except ServerError as exc:
                raise ModelLoadError(f"{where}: the warmup request failed: {exc}") from None


def _inputs(model: Model, sample: ModelWarmup, folder: Path, where: str) -> list[tuple[Any, Any]]:
    """One (shape, bytes) per model input, in the model's order."""
    given = {i.name: i for i in sample.inputs}
    declared = [t.name for t in model.config.inputs]
    unknown = sorted(set(given) - set(declared))
    missing = [n for n in declared if n not in given]
    if unknown or missing:
        raise ModelLoadError(
            f"{where}.inputs: expected one entry per model input ({', '.join(declared)}), got "
            + "; ".join(filter(None, [
                f"unknown {', '.join(unknown)}" if unknown else "",
                f"none for {', '.join(missing)}" if missing else ""]))
        )
    batch = [sample.batch_size] if model.config.max_batch_size > 0 else []
    out = []
    for spec in model.config.inputs:
        item = given[spec.name]
        if item.datatype is not spec.datatype:
            raise ModelLoadError(
                f"{where}.inputs.{spec.name}.data_type: expected {spec.datatype.config_name} "
                f"(the model's), got {item.datatype.config_name}")
        shape = tuple(batch + list(item.dims))
        out.append((shape, _data(item, shape, folder, f"{where}.inputs.{spec.name}")))
    return out


def _data(item: WarmupInput, shape: tuple[int, ...], folder: Path, where: str) -> Any:
    count = int(np.prod(shape, dtype=np.int64))
    datatype = item.datatype
    if datatype is DataType.BYTES:
        if item.data is WarmupData.FILE:
            return _file(folder, item, where, None)
        rng = np.random.default_rng(0)
        elements = [b"" if item.data is WarmupData.ZERO else
                    bytes(rng.integers(97, 123, 8, dtype=np.uint8)) for _ in range(count)]
        return b"".join(len(e).to_bytes(4, "little") + e for e in elements)
    nbytes = count * datatype.itemsize
    if item.data is WarmupData.ZERO:
        return bytes(nbytes)
    if item.data is WarmupData.RANDOM:
        rng = np.random.default_rng(0)
        dtype = datatype.numpy
        if dtype is None:  # BF16: the upper halves of float32 values in [0, 1)
            bits = rng.random(count).astype(np.float32).view(np.uint32) >> 16
            return bits.astype("<u2").tobytes()
        if dtype.kind == "b":
            return rng.integers(0, 2, count).astype(dtype).tobytes()
        if dtype.kind in "iu":
            return rng.integers(0, 64, count).astype(dtype).tobytes()
        return rng.random(count).astype(dtype).tobytes()
    return _file(folder, item, where, nbytes)


def _file(folder: Path, item: WarmupInput, where: str, nbytes: int | None) -> bytes:
    path = folder / WARMUP_FOLDER / item.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{where}.input_data_file: cannot read {path}: {exc}") from None
    if nbytes is not None and len(data) != nbytes:
        raise ModelLoadError(
            f"{where}.input_data_file: {path} holds {len(data)} bytes; the sample's shape needs "
            f"{nbytes}")
    return data
