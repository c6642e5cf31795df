"""TensorRT on NVIDIA GPUs: a serialized engine (`model.plan`) run through TensorRT's Python API.

TensorRT is an optional extra, imported only when such a model loads. Per GPU the model uses,
the plan is deserialized once, with that GPU's primary context current (TensorRT places the
engine on the current device); every instance on that GPU gets its own execution context. On a
dynamic batch dimension instance k of a GPU uses optimization profile k: a profile's shapes and
its kernels' scratch state belong to one context at a time, which is why `pyserver build-engine
--profiles N` writes N identical profiles.

The core owns streams and device memory: per batch it copies the inputs to the GPU on the
instance's stream and calls `TensorRTInstance.execute` there, which points the context at the
core's addresses and enqueues the engine on the same stream. TensorRT's bindings release the GIL
around deserialize_cuda_engine and execute_async_v3, so the event loop runs meanwhile.

Inputs, outputs and max_batch_size come from the engine: a dynamic first dimension on every input
is the batch, and max_batch_size 0 (or no key) takes the largest batch every used profile accepts.
A plan with static shapes does not batch (max_batch_size 0, dims are the full shapes).

Supported: TensorRT 10 and 11, through the name-based tensor API they share (num_io_tensors,
set_input_shape, set_tensor_address, execute_async_v3).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from pyserver import _core
from pyserver.backends import Inputs, LoadedModel, placements, reconcile_tensors
from pyserver.config import MAX_BATCH_SIZE_LIMIT, DynamicBatching, ModelConfig
from pyserver.errors import InvalidRequest, ModelLoadError
from pyserver.types import DataType, TensorSpec

INSTALL_HINT = "pip install 'pyserver[tensorrt]'"
MIN_MAJOR = 10

# TensorRT DataType member names -> v2 datatypes. FP8, INT4, FP4 and E8M0 have no v2 datatype:
# a plan with such an input or output does not load.
_TRT_TYPES = {
    "FLOAT": DataType.FP32, "HALF": DataType.FP16, "BF16": DataType.BF16,
    "INT8": DataType.INT8, "INT32": DataType.INT32, "INT64": DataType.INT64,
    "BOOL": DataType.BOOL, "UINT8": DataType.UINT8,
}


def import_tensorrt(model_file: Path | str) -> ModuleType:
    """TensorRT's Python module, or a ModelLoadError naming the file that needed it. Imported
    through importlib because the bindings have no type stubs: their objects are Any here."""
    try:
        trt = importlib.import_module("tensorrt")
    except (ImportError, OSError) as exc:  # OSError: the wheel is there, libnvinfer is not
        raise ModelLoadError(
            f"{model_file}: TensorRT is not installed ({exc}); install it with {INSTALL_HINT}"
        ) from None
    major = tensorrt_major(trt)
    if major < MIN_MAJOR:
        raise ModelLoadError(
            f"{model_file}: TensorRT {trt.__version__} is too old; pyserver needs TensorRT "
            f"{MIN_MAJOR} or later ({INSTALL_HINT})"
        )
    return trt


def tensorrt_major(trt: ModuleType) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except (AttributeError, ValueError):
        return 0


_LOGGER: Any = None


def logger(trt: ModuleType) -> Any:
    """One trt.Logger for the process, as TensorRT asks: every builder and runtime shares it."""
    global _LOGGER
    if _LOGGER is None or not isinstance(_LOGGER, trt.Logger):  # a test may swap the module
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


class TensorRTInstance:
    """One instance: an execution context on one GPU (core.DeviceEngineImpl).

    Called by the core once per batch, on the instance's worker thread, with the GIL held and
    the GPU's context current; `stream` is the instance's CUstream, where the core has already
    enqueued the inputs' copies and will enqueue the outputs' copies after this returns.
    """

    def __init__(
        self, context: Any, profile: int | None, input_names: Sequence[str], keep: tuple[Any, ...]
    ) -> None:
        self._context = context
        self._keep = keep  # (engine, runtime): must outlive the context
        self._profile = profile  # None: the engine has static shapes, profile 0 is implicit
        self._profile_set = profile is None
        self._input_names = tuple(input_names)

    def __del__(self) -> None:
        # TensorRT wants a context destroyed before its engine and runtime: drop it first.
        self._context = None
        self._keep = ()

    @property
    def profile(self) -> int | None:
        return self._profile

    def execute(
        self, stream: int, inputs: list[_core.DeviceArray], outputs: list[_core.DeviceOutput]
    ) -> None:
        context = self._context
        if not self._profile_set:
            # On the instance's own stream, so that the switch is ordered with its batches.
            if not context.set_optimization_profile_async(self._profile, stream):
                raise RuntimeError(
                    f"TensorRT refused optimization profile {self._profile} for this context"
                )
            self._profile_set = True
        for name, array in zip(self._input_names, inputs, strict=True):
            shape = tuple(array.shape)
            if not context.set_input_shape(name, shape):
                raise RuntimeError(
                    f"TensorRT refused shape {list(shape)} for input '{name}' (outside "
                    f"optimization profile {self._profile or 0})"
                )
            if not context.set_tensor_address(name, array.ptr):
                raise RuntimeError(f"TensorRT refused the device address of input '{name}'")
        for output in outputs:
            name = output.name
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(
                    f"output '{name}' has a data-dependent shape {list(shape)}; pyserver needs "
                    f"output shapes that follow from the input shapes"
                )
            array = output.allocate(shape)
            if not context.set_tensor_address(name, array.ptr):
                raise RuntimeError(f"TensorRT refused the device address of output '{name}'")
        if not context.execute_async_v3(stream):
            raise RuntimeError(
                "TensorRT's execute_async_v3 failed to enqueue the batch (TensorRT logged why)"
            )


@dataclasses.dataclass(frozen=True)
class _EngineTensor:
    name: str
    is_input: bool
    datatype: DataType
    shape: tuple[int, ...]


def _engine_tensors(trt: ModuleType, engine: Any, plan: Path) -> list[_EngineTensor]:
    linear = getattr(getattr(trt, "TensorFormat", None), "LINEAR", None)
    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        dtype = engine.get_tensor_dtype(name)
        datatype = _TRT_TYPES.get(getattr(dtype, "name", str(dtype)))
        if datatype is None:
            raise ModelLoadError(
                f"{plan}: tensor '{name}' has TensorRT type {getattr(dtype, 'name', dtype)}, "
                f"which has no v2 datatype (supported: {', '.join(sorted(_TRT_TYPES))})"
            )
        if linear is not None and engine.get_tensor_format(name) != linear:
            # The core hands TensorRT plain row-major buffers; a vectorized layout would be
            # read as garbage.
            raise ModelLoadError(
                f"{plan}: tensor '{name}' uses format {engine.get_tensor_format(name)}; pyserver "
                f"needs LINEAR (row-major) inputs and outputs"
            )
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        tensors.append(_EngineTensor(name, is_input, datatype, shape))
    return tensors


@dataclasses.dataclass(frozen=True)
class _Signature:
    """What the engine declares: tensors (dims without the batch dimension when batched), the
    largest batch every used profile accepts (0: not batched), and, for each input with dynamic
    dims beyond the batch dimension, the dims every used profile accepts (lowest, highest)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    ranges: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]


def _signature(
    engine: Any, tensors: list[_EngineTensor], profiles: int, plan: Path
) -> _Signature:
    inputs = [t for t in tensors if t.is_input]
    outputs = [t for t in tensors if not t.is_input]
    batched = bool(inputs) and all(t.shape and t.shape[0] == -1 for t in inputs)
    if batched:
        for t in outputs:
            if not t.shape or t.shape[0] != -1:
                raise ModelLoadError(
                    f"{plan}: output '{t.name}' has shape {list(t.shape)} while every input has "
                    f"a dynamic batch dimension; expected the output's first dimension dynamic too"
                )
    skip = 1 if batched else 0
    ranges: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    max_batch = MAX_BATCH_SIZE_LIMIT
    for t in inputs:
        if -1 not in t.shape:
            continue
        # What every used profile accepts: the largest minimum and the smallest maximum.
        low = [0] * len(t.shape)
        high = [2**62] * len(t.shape)
        for p in range(profiles):
            lo, _, hi = (tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(t.name, p))
            low = [max(a, b) for a, b in zip(low, lo)]
            high = [min(a, b) for a, b in zip(high, hi)]
        if batched:
            if low[0] > 1:
                raise ModelLoadError(
                    f"{plan}: input '{t.name}': the optimization profiles' smallest batch is "
                    f"{low[0]}, but a batch may hold a single request; rebuild with "
                    f"`pyserver build-engine --min-batch 1`"
                )
            max_batch = min(max_batch, high[0])
        if -1 in t.shape[skip:]:
            ranges[t.name] = (tuple(low[skip:]), tuple(high[skip:]))
    return _Signature(
        inputs=tuple(TensorSpec(t.name, t.datatype, t.shape[skip:]) for t in inputs),
        outputs=tuple(TensorSpec(t.name, t.datatype, t.shape[skip:]) for t in outputs),
        max_batch_size=max_batch if batched else 0,
        ranges=ranges,
    )


class ShapeCheck:
    """A request whose dynamic dims lie outside what the optimization profiles accept is refused
    alone, before it can share (and fail) a batch. Only dims beyond the batch dimension: the
    core already keeps batches within max_batch_size."""

    def __init__(
        self,
        inputs: Sequence[TensorSpec],
        ranges: dict[str, tuple[tuple[int, ...], tuple[int, ...]]],
        batched: bool,
    ) -> None:
        self._skip = 1 if batched else 0
        self._checks = [
            (i, t.name, *ranges[t.name]) for i, t in enumerate(inputs) if t.name in ranges
        ]
        self.active = bool(self._checks)

    def __call__(self, inputs: Inputs) -> None:
        for index, name, low, high in self._checks:
            dims = tuple(inputs[index][0])[self._skip:]
            if len(dims) != len(low) or any(
                not lo <= d <= hi for d, lo, hi in zip(dims, low, high)
            ):
                raise InvalidRequest(
                    f"input '{name}': dims {list(dims)} are outside what the TensorRT engine's "
                    f"optimization profiles accept (from {list(low)} to {list(high)})"
                )


def load(config: ModelConfig, version_dir: Path) -> LoadedModel:
    source = config.source
    plan = version_dir / (config.default_model_filename or "model.plan")
    trt = import_tensorrt(plan)
    # (1) the model file, and where its instances run.
    if not plan.is_file():
        raise ModelLoadError(f"{plan}: model file not found (build one with `pyserver build-engine`)")
    where = placements(config, auto="KIND_GPU")
    if any(p.gpu is None for p in where):
        raise ModelLoadError(
            f"{source}: instance_group: TensorRT runs on GPUs; expected KIND_GPU or KIND_AUTO, "
            f"got KIND_CPU"
        )
    try:
        data = plan.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{plan}: cannot be read: {exc}") from None
    per_gpu: dict[int, int] = {}
    for p in where:
        assert p.gpu is not None
        per_gpu[p.gpu] = per_gpu.get(p.gpu, 0) + 1
    # One engine per GPU, deserialized with that GPU current (TensorRT binds it to the device
    # current at deserialize time). The bindings release the GIL while they deserialize.
    engines: dict[int, tuple[Any, Any]] = {}
    for gpu in per_gpu:
        _core.cuda_make_current(gpu)
        runtime = trt.Runtime(logger(trt))
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise ModelLoadError(
                f"{plan}: TensorRT {trt.__version__} could not deserialize it on GPU {gpu} (a "
                f"plan only loads with the TensorRT version and GPU kind it was built for; "
                f"rebuild it with `pyserver build-engine`)"
            )
        engines[gpu] = (engine, runtime)
    # (2) tensors: from the engine, checked against the config.
    first = next(iter(engines.values()))[0]
    tensors = _engine_tensors(trt, first, plan)
    dynamic = any(-1 in t.shape for t in tensors if t.is_input)
    needed = max(per_gpu.values())
    available = int(first.num_optimization_profiles)
    if dynamic and available < needed:
        raise ModelLoadError(
            f"{source}: instance_group: {needed} instances on one GPU need {needed} optimization "
            f"profiles (one per execution context), but {plan} has {available}; rebuild it with "
            f"`pyserver build-engine --profiles {needed}` or lower the instance count"
        )
    signature = _signature(first, tensors, needed if dynamic else 1, plan)
    # Without a configuration file the engine's profiles say how large a batch may be.
    max_batch_size = 0 if config.auto_complete else config.max_batch_size
    if signature.max_batch_size == 0 and max_batch_size > 0:
        raise ModelLoadError(
            f"{source}: max_batch_size: expected 0, as {plan} has no dynamic batch dimension "
            f"(its shapes are static), got {max_batch_size}"
        )
    if max_batch_size > signature.max_batch_size:
        raise ModelLoadError(
            f"{source}: max_batch_size: expected at most {signature.max_batch_size} (the largest "
            f"batch the engine's optimization profiles accept), got {max_batch_size}"
        )
    # 0 in the config (or no key) takes the engine's own maximum.
    max_batch_size = max_batch_size or signature.max_batch_size
    # TensorRT reads or writes every tensor it has: the config must name them all (or none).
    inputs = reconcile_tensors("input", config.inputs, signature.inputs, source, owner="engine",
                               require_all=True)
    outputs = reconcile_tensors("output", config.outputs, signature.outputs, source,
                                owner="engine", require_all=True)
    # (3) one execution context per instance, made on its GPU: a context allocates its scratch
    # memory on the current device.
    made: list[_core.Engine] = []
    for gpu, count in per_gpu.items():
        engine, runtime = engines[gpu]
        _core.cuda_make_current(gpu)
        for k in range(count):
            context = engine.create_execution_context()
            if context is None:
                raise ModelLoadError(
                    f"{plan}: TensorRT could not create execution context {k} on GPU {gpu} "
                    f"(out of device memory?)"
                )
            instance = TensorRTInstance(
                context, k if dynamic else None, [t.name for t in inputs], (engine, runtime)
            )
            made.append(_core.device_engine(instance, gpu))
    batching = config.dynamic_batching
    if config.auto_complete and max_batch_size > 0 and batching is None:
        batching = DynamicBatching()  # a batching engine batches, as Triton auto-completes it
    filled = config.with_batching(max_batch_size, batching)
    check = ShapeCheck(inputs, signature.ranges, signature.max_batch_size > 0)
    return LoadedModel(filled.with_tensors(inputs, outputs), made, check if check.active else None)
