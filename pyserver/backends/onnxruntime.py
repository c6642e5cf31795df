"""ONNX Runtime on the CPU: the embedded default engine.

Each instance owns one InferenceSession. The core calls `execute` on the instance's worker thread
once per batch with the GIL held; `InferenceSession.run` releases the GIL while the model runs, so
the event loop keeps serving meanwhile.

Config parameters (strings, as Triton's): intra_op_num_threads, inter_op_num_threads,
graph_optimization_level (disable | basic | extended | all), execution_mode (sequential |
parallel).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pyserver import _core
from pyserver.backends import (
    Inputs,
    LoadedModel,
    auto_batching,
    cpu_instance_count,
    reconcile_tensors,
)
from pyserver.config import ModelConfig
from pyserver.errors import InvalidRequest, ModelLoadError
from pyserver.types import DataType, TensorSpec

# ONNX Runtime's type strings -> v2 datatypes
_ORT_TYPES = {
    "tensor(bool)": DataType.BOOL, "tensor(uint8)": DataType.UINT8,
    "tensor(uint16)": DataType.UINT16, "tensor(uint32)": DataType.UINT32,
    "tensor(uint64)": DataType.UINT64, "tensor(int8)": DataType.INT8,
    "tensor(int16)": DataType.INT16, "tensor(int32)": DataType.INT32,
    "tensor(int64)": DataType.INT64, "tensor(float16)": DataType.FP16,
    "tensor(float)": DataType.FP32, "tensor(double)": DataType.FP64,
    "tensor(string)": DataType.BYTES, "tensor(bfloat16)": DataType.BF16,
}

_OPT_LEVELS = ("disable", "basic", "extended", "all")


class OnnxRuntimeEngine:
    """One instance: a session and the order of its tensors (core.PythonEngine)."""

    def __init__(self, session: Any, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]):
        self._session = session
        self._input_names = [t.name for t in inputs]
        self._output_names = [t.name for t in outputs]
        # ONNX Runtime wants str arrays for string tensors; the core hands BYTES as bytes.
        self._string_inputs = [t.datatype is DataType.BYTES for t in inputs]

    def execute(self, inputs: list[npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        feed = {}
        for name, array, is_string in zip(
            self._input_names, inputs, self._string_inputs, strict=True
        ):
            if is_string:  # checked per request by Utf8Check, so this cannot fail the batch
                array = np.vectorize(_utf8, otypes=[object])(array)
            feed[name] = array
        outputs: list[npt.NDArray[Any]] = self._session.run(self._output_names, feed)
        return outputs


def _utf8(element: bytes) -> str:
    return element.decode("utf-8")


class Utf8Check:
    """ONNX Runtime's string tensors are text: a request whose BYTES input is not UTF-8 is
    refused alone, before it can share (and fail) a batch."""

    def __init__(self, inputs: Sequence[TensorSpec]) -> None:
        self._string_inputs = [
            (i, t.name) for i, t in enumerate(inputs) if t.datatype is DataType.BYTES
        ]
        self.active = bool(self._string_inputs)

    def __call__(self, inputs: Inputs) -> None:
        for index, name in self._string_inputs:
            view = memoryview(inputs[index][1]).cast("B")
            position, end = 0, len(view)
            while position + 4 <= end:  # the framing was validated when the request decoded
                length = int.from_bytes(view[position : position + 4], "little")
                element = view[position + 4 : position + 4 + length]
                try:
                    str(element, "utf-8")
                except UnicodeDecodeError as exc:
                    raise InvalidRequest(
                        f"input '{name}': element at byte {position} is not UTF-8 text "
                        f"({exc.reason}), and the ONNX model takes strings"
                    ) from None
                position += 4 + length


def _session_options(config: ModelConfig) -> Any:
    import onnxruntime as ort

    source = config.source
    options = ort.SessionOptions()
    params = config.parameters
    for key in ("intra_op_num_threads", "inter_op_num_threads"):
        if key in params:
            try:
                value = int(params[key])
                if value < 0:
                    raise ValueError
            except ValueError:
                raise ModelLoadError(
                    f"{source}: parameters.{key}: expected a non-negative integer, "
                    f"got {params[key]!r}"
                ) from None
            setattr(options, key, value)
    if "graph_optimization_level" in params:
        level = params["graph_optimization_level"].lower()
        if level not in _OPT_LEVELS:
            raise ModelLoadError(
                f"{source}: parameters.graph_optimization_level: expected one of "
                f"{', '.join(_OPT_LEVELS)}, got {params['graph_optimization_level']!r}"
            )
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
    if "execution_mode" in params:
        mode = params["execution_mode"].lower()
        if mode not in ("sequential", "parallel"):
            raise ModelLoadError(
                f"{source}: parameters.execution_mode: expected sequential or parallel, "
                f"got {params['execution_mode']!r}"
            )
        options.execution_mode = (
            ort.ExecutionMode.ORT_SEQUENTIAL
            if mode == "sequential"
            else ort.ExecutionMode.ORT_PARALLEL
        )
    return options


def _model_tensors(
    nodes: Sequence[Any], batched: bool, model_file: Path
) -> tuple[TensorSpec, ...]:
    """The tensors the ONNX file declares, with the batch dimension removed when batching."""
    specs = []
    for node in nodes:
        datatype = _ORT_TYPES.get(node.type)
        if datatype is None:
            raise ModelLoadError(f"{model_file}: tensor '{node.name}' has unsupported type {node.type}")
        shape = [d if isinstance(d, int) and d >= 0 else -1 for d in node.shape]
        if batched:
            if not shape or shape[0] != -1:
                raise ModelLoadError(
                    f"{model_file}: tensor '{node.name}': max_batch_size > 0 needs a dynamic "
                    f"first (batch) dimension, the model declares shape {node.shape}"
                )
            shape = shape[1:]
        specs.append(TensorSpec(node.name, datatype, tuple(shape)))
    return tuple(specs)


def load(config: ModelConfig, version_dir: Path) -> LoadedModel:
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - onnxruntime is a dependency
        raise ModelLoadError(
            f"{config.source}: backend: onnxruntime is not installed "
            f"(pip install onnxruntime): {exc}"
        ) from None
    source = config.source
    # (1) the model file.
    model_file = version_dir / (config.default_model_filename or "model.onnx")
    if not model_file.is_file():
        raise ModelLoadError(f"{model_file}: model file not found")
    options = _session_options(config)
    count = cpu_instance_count(config)
    sessions = []
    for _ in range(count):
        try:
            sessions.append(
                ort.InferenceSession(
                    str(model_file), sess_options=options, providers=["CPUExecutionProvider"]
                )
            )
        except Exception as exc:  # onnxruntime raises its own classes for bad files
            raise ModelLoadError(f"{model_file}: onnxruntime could not load it: {exc}") from None
    # (2) tensors: from the model, checked against the config (and completing it when there
    # was no configuration file).
    config = auto_batching(config, [
        _model_tensors([node], False, model_file)[0].dims
        for node in (*sessions[0].get_inputs(), *sessions[0].get_outputs())
    ])
    batched = config.max_batch_size > 0
    # Every input must be fed; a config may serve a subset of the outputs.
    inputs = reconcile_tensors(
        "input", config.inputs, _model_tensors(sessions[0].get_inputs(), batched, model_file),
        source, require_all=True,
    )
    outputs = reconcile_tensors(
        "output",
        config.outputs,
        _model_tensors(sessions[0].get_outputs(), batched, model_file),
        source,
    )
    # (3) one engine per instance.
    engines = [_core.python_engine(OnnxRuntimeEngine(s, inputs, outputs)) for s in sessions]
    check = Utf8Check(inputs)
    return LoadedModel(
        config.with_tensors(inputs, outputs), engines, check if check.active else None
    )
