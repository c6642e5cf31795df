"""The identity engine (C++): output i echoes input i, byte for byte, with no model cost.

It measures the server's own overhead. Parameter `execute_delay_us` makes each batch sleep, so
tests and benchmarks can stand in a model of known cost.
"""

from __future__ import annotations

from pathlib import Path

from pyserver import _core
from pyserver.backends import LoadedModel, cpu_instance_count
from pyserver.config import ModelConfig
from pyserver.errors import ModelLoadError
from pyserver.types import TensorSpec


def load(config: ModelConfig, version_dir: Path) -> LoadedModel:
    source = config.source
    # (1) no model file. (2) the tensors come from the config alone.
    if not config.inputs:
        raise ModelLoadError(f"{source}: input: the identity backend needs its inputs declared")
    outputs = config.outputs or tuple(
        TensorSpec(f"OUTPUT{i}", t.datatype, t.dims) for i, t in enumerate(config.inputs)
    )
    if len(outputs) != len(config.inputs):
        raise ModelLoadError(
            f"{source}: output: identity echoes each input to the output of the same index; "
            f"expected {len(config.inputs)} outputs, got {len(outputs)}"
        )
    for i, (inp, out) in enumerate(zip(config.inputs, outputs, strict=True)):
        if inp.datatype != out.datatype or inp.dims != out.dims:
            raise ModelLoadError(
                f"{source}: output[{i}]: expected datatype {inp.datatype.name} and dims "
                f"{list(inp.dims)} as input '{inp.name}', got {out.datatype.name} {list(out.dims)}"
            )
    delay_text = config.parameters.get("execute_delay_us", "0")
    try:
        delay_us = int(delay_text)
        if delay_us < 0:
            raise ValueError
    except ValueError:
        raise ModelLoadError(
            f"{source}: parameters.execute_delay_us: expected a non-negative integer, "
            f"got {delay_text!r}"
        ) from None
    # (3) one C++ engine per instance.
    engines: list[_core.Engine] = [
        _core.identity_engine(delay_us) for _ in range(cpu_instance_count(config))
    ]
    return LoadedModel(config.with_tensors(config.inputs, outputs), engines)
