"""ONNX Runtime on the CPU: the embedded default engine.

Two engines run a model, and clients cannot tell them apart:

- native (the default): the core runs ONNX Runtime itself through its C API
  (csrc/core/ort_engine.h), loading libonnxruntime.so.1.x from the installed onnxruntime wheel
  (or the file $PYSERVER_ONNXRUNTIME_LIBRARY names). A batch never takes the GIL: under load the
  event loop holds it most of the time, and the worker would wait for it twice per batch.
- python: each instance owns an onnxruntime.InferenceSession; the core calls `execute` on the
  instance's worker thread once per batch with the GIL held (`InferenceSession.run` releases it
  while the model runs).

The native engine runs numeric, BOOL, FP16 and BF16 tensors. A model with a string tensor, or a
machine where the library does not load, gets the Python engine, and the load log says why.

Config parameters (strings, as Triton's): intra_op_num_threads, inter_op_num_threads,
graph_optimization_level (disable | basic | extended | all), execution_mode (sequential |
parallel), engine (native | python). Without `engine` the native engine is used where it can
run the model; engine = "native" insists (a model it cannot run fails to load, saying why).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
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

# graph_optimization_level names -> ONNX Runtime's GraphOptimizationLevel values
_OPT_LEVELS = {"disable": 0, "basic": 1, "extended": 2, "all": 99}
_EXECUTION_MODES = {"sequential": 0, "parallel": 1}
_ENGINES = ("native", "python")
LIBRARY_ENV = "PYSERVER_ONNXRUNTIME_LIBRARY"

log = logging.getLogger("pyserver.backends.onnxruntime")


class OnnxRuntimeEngine:
    """The Python engine's instance: a session and the order of its tensors
    (core.PythonEngine)."""

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


@dataclass(frozen=True)
class SessionParams:
    """The config's parameters for ONNX Runtime, checked; None leaves ONNX Runtime's default."""

    intra_op_num_threads: int | None = None
    inter_op_num_threads: int | None = None
    graph_optimization_level: str | None = None  # a key of _OPT_LEVELS
    execution_mode: str | None = None  # a key of _EXECUTION_MODES
    engine: str | None = None  # "native" or "python"; None: native where it can run the model


def session_params(config: ModelConfig) -> SessionParams:
    source = config.source
    params = config.parameters
    threads: dict[str, int | None] = {}
    for key in ("intra_op_num_threads", "inter_op_num_threads"):
        threads[key] = None
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
            threads[key] = value
    choices: dict[str, str | None] = {}
    for key, allowed in (
        ("graph_optimization_level", tuple(_OPT_LEVELS)),
        ("execution_mode", tuple(_EXECUTION_MODES)),
        ("engine", _ENGINES),
    ):
        choices[key] = None
        if key in params:
            choice = params[key].lower()
            if choice not in allowed:
                raise ModelLoadError(
                    f"{source}: parameters.{key}: expected one of {', '.join(allowed)}, "
                    f"got {params[key]!r}"
                )
            choices[key] = choice
    return SessionParams(
        threads["intra_op_num_threads"], threads["inter_op_num_threads"],
        choices["graph_optimization_level"], choices["execution_mode"], choices["engine"],
    )


def _python_options(params: SessionParams) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if params.intra_op_num_threads is not None:
        options.intra_op_num_threads = params.intra_op_num_threads
    if params.inter_op_num_threads is not None:
        options.inter_op_num_threads = params.inter_op_num_threads
    # The same values as the native engine's (_OPT_LEVELS, _EXECUTION_MODES: ONNX Runtime's).
    if params.graph_optimization_level is not None:
        options.graph_optimization_level = ort.GraphOptimizationLevel(
            _OPT_LEVELS[params.graph_optimization_level]
        )
    if params.execution_mode is not None:
        options.execution_mode = ort.ExecutionMode(_EXECUTION_MODES[params.execution_mode])
    return options


def _native_options(params: SessionParams, model_file: Path) -> _core.OnnxRuntimeSessionOptions:
    options = _core.OnnxRuntimeSessionOptions()
    options.model_path = str(model_file)
    if params.intra_op_num_threads is not None:
        options.intra_op_num_threads = params.intra_op_num_threads
    if params.inter_op_num_threads is not None:
        options.inter_op_num_threads = params.inter_op_num_threads
    if params.graph_optimization_level is not None:
        options.graph_optimization_level = _OPT_LEVELS[params.graph_optimization_level]
    if params.execution_mode is not None:
        options.execution_mode = _EXECUTION_MODES[params.execution_mode]
    return options


def library_path() -> Path | None:
    """The ONNX Runtime shared library the native engine loads: $PYSERVER_ONNXRUNTIME_LIBRARY
    when set, else libonnxruntime.so.1.x in the installed onnxruntime package's capi/ folder
    (found without importing onnxruntime, whose Python module carries a copy of its own)."""
    configured = os.environ.get(LIBRARY_ENV)
    if configured:
        return Path(configured)
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder, "capi").glob("libonnxruntime.so.[0-9]*"))
        if found:
            return found[-1]
    return None


Node = tuple[str, str, Sequence[Any]]  # (name, ONNX Runtime type string, shape)


def _model_tensors(nodes: Sequence[Node], batched: bool, model_file: Path) -> tuple[TensorSpec, ...]:
    """The tensors the ONNX file declares, with the batch dimension removed when batching."""
    specs = []
    for name, type_name, node_shape in nodes:
        datatype = _ORT_TYPES.get(type_name)
        if datatype is None:
            raise ModelLoadError(f"{model_file}: tensor '{name}' has unsupported type {type_name}")
        shape = [d if isinstance(d, int) and d >= 0 else -1 for d in node_shape]
        if batched:
            if not shape or shape[0] != -1:
                raise ModelLoadError(
                    f"{model_file}: tensor '{name}': max_batch_size > 0 needs a dynamic "
                    f"first (batch) dimension, the model declares shape {list(node_shape)}"
                )
            shape = shape[1:]
        specs.append(TensorSpec(name, datatype, tuple(shape)))
    return tuple(specs)


def _reconcile(
    config: ModelConfig, model_inputs: Sequence[Node], model_outputs: Sequence[Node],
    model_file: Path,
) -> tuple[ModelConfig, tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Step (2): the model's tensors, checked against the config's (which they complete when
    there was no configuration file)."""
    source = config.source
    config = auto_batching(config, [
        _model_tensors([node], False, model_file)[0].dims
        for node in (*model_inputs, *model_outputs)
    ])
    batched = config.max_batch_size > 0
    # Every input must be fed; a config may serve a subset of the outputs.
    inputs = reconcile_tensors(
        "input", config.inputs, _model_tensors(model_inputs, batched, model_file), source,
        require_all=True,
    )
    outputs = reconcile_tensors(
        "output", config.outputs, _model_tensors(model_outputs, batched, model_file), source
    )
    return config, inputs, outputs


def _native_session(
    library: Path, options: _core.OnnxRuntimeSessionOptions, model_file: Path
) -> _core.OnnxRuntimeSession:
    try:
        return _core.onnxruntime_session(str(library), options)
    except (RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"{model_file}: onnxruntime could not load it: {exc}") from None


@dataclass(frozen=True)
class _NotNative:
    """Why the native engine cannot run a model; `broken`: something is wrong with the
    installation (logged as a warning), rather than a model it does not cover."""

    reason: str
    broken: bool


def _load_native(
    config: ModelConfig, version_dir: Path, model_file: Path, params: SessionParams
) -> LoadedModel | _NotNative:
    """The model on native engines, or why it cannot run there."""
    library = library_path()
    if library is None:
        return _NotNative("no libonnxruntime.so.1.x was found in the onnxruntime package", True)
    info = _core.onnxruntime_library(str(library))
    if not info["available"]:
        return _NotNative(str(info["error"]), True)
    options = _native_options(params, model_file)
    # (1) the model file, in a first session; (2) its tensors.
    first = _native_session(library, options, model_file)
    config, inputs, outputs = _reconcile(config, first.inputs, first.outputs, model_file)
    strings = [t.name for t in (*inputs, *outputs) if t.datatype is DataType.BYTES]
    if strings:
        return _NotNative(f"string tensors ({', '.join(strings)}) run on the Python engine only",
                          False)
    # (3) one engine per instance, each with a session of its own.
    count = cpu_instance_count(config)
    sessions = [first] + [_native_session(library, options, model_file) for _ in range(count - 1)]
    engines: list[_core.Engine] = [
        _core.onnxruntime_engine(
            s, [t.name for t in inputs], [t.name for t in outputs], config.max_batch_size > 0
        )
        for s in sessions
    ]
    log.info(
        "model %s version %s: native ONNX Runtime engine (ONNX Runtime %s, %s), %d instance(s)",
        config.name, version_dir.name, info["version"], library, count,
    )
    return LoadedModel(config.with_tensors(inputs, outputs), engines)


def _load_python(
    config: ModelConfig, model_file: Path, params: SessionParams
) -> LoadedModel:
    import onnxruntime as ort

    options = _python_options(params)
    sessions = []
    for _ in range(cpu_instance_count(config)):
        try:
            sessions.append(
                ort.InferenceSession(
                    str(model_file), sess_options=options, providers=["CPUExecutionProvider"]
                )
            )
        except Exception as exc:  # onnxruntime raises its own classes for bad files
            raise ModelLoadError(f"{model_file}: onnxruntime could not load it: {exc}") from None
    nodes = sessions[0].get_inputs(), sessions[0].get_outputs()
    config, inputs, outputs = _reconcile(
        config,
        [(n.name, n.type, n.shape) for n in nodes[0]],
        [(n.name, n.type, n.shape) for n in nodes[1]],
        model_file,
    )
    engines = [_core.python_engine(OnnxRuntimeEngine(s, inputs, outputs)) for s in sessions]
    check = Utf8Check(inputs)
    return LoadedModel(
        config.with_tensors(inputs, outputs), engines, check if check.active else None
    )


def load(config: ModelConfig, version_dir: Path) -> LoadedModel:
    if importlib.util.find_spec("onnxruntime") is None:  # pragma: no cover - a dependency
        raise ModelLoadError(
            f"{config.source}: backend: onnxruntime is not installed "
            f"(pip install onnxruntime)"
        )
    source = config.source
    # (1) the model file.
    model_file = version_dir / (config.default_model_filename or "model.onnx")
    if not model_file.is_file():
        raise ModelLoadError(f"{model_file}: model file not found")
    params = session_params(config)
    level, reason = logging.INFO, "parameters.engine = python"
    if params.engine != "python":
        loaded = _load_native(config, version_dir, model_file, params)
        if isinstance(loaded, LoadedModel):
            return loaded
        if params.engine == "native":
            raise ModelLoadError(
                f"{source}: parameters.engine: the native ONNX Runtime engine cannot run this "
                f"model: {loaded.reason}"
            )
        level, reason = (logging.WARNING if loaded.broken else logging.INFO), loaded.reason
    log.log(level, "model %s version %s: Python ONNX Runtime engine: %s",
            config.name, version_dir.name, reason)
    return _load_python(config, model_file, params)
