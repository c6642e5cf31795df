"""A fake `tensorrt` for CPU tests: the slice of TensorRT 10/11's Python API that pyserver uses.

Every call that matters is recorded in CALLS as ("Class.method", args), in order, so tests can
check what was called, with what, and when. A "plan" is a small JSON description of an engine
(its tensors, optimization profiles and build flags) that Runtime.deserialize_cuda_engine reads
and Builder.build_serialized_network writes from the network that OnnxParser read (with the
`onnx` package). IExecutionContext.execute_async_v3 really computes, synchronously: output j is
input j (mod the input count) plus one, read and written through the raw addresses it was given.
That works under the fake CUDA driver, whose device memory is ordinary host memory.

Load it fresh for each test (tests put it in sys.modules['tensorrt'] with monkeypatch), and call
set_version("11.0.0") to get TensorRT 11's builder flags (no weak-typing precision flags).
"""

from __future__ import annotations

import ctypes
import enum
import json
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

__version__ = "10.8.0.43"
PLAN_MAGIC = "fake-tensorrt-plan"
CACHE_MAGIC = "fake-tensorrt-timing-cache"

CALLS: list[tuple[str, tuple[Any, ...]]] = []
UNSUPPORTED_OPS: set[str] = {"FakeUnsupported"}  # ONNX op types the fake parser refuses
FAIL_EXECUTE = False  # True: execute_async_v3 returns False (the error path)
EXECUTE_DELAY_S = 0.0  # a model of known cost, so that concurrent batches spread over instances
EXECUTIONS: list[dict[str, Any]] = []  # one entry per execute_async_v3 that ran


def _record(name: str, *args: Any) -> None:
    CALLS.append((name, args))


def calls(name: str) -> list[tuple[Any, ...]]:
    """The arguments of every recorded call to `name`, in order."""
    return [args for called, args in CALLS if called == name]


def names() -> list[str]:
    return [called for called, _ in CALLS]


def _major() -> int:
    return int(__version__.split(".")[0])


# -- enums ------------------------------------------------------------------------------------


DataType = enum.IntEnum("DataType", [
    ("FLOAT", 0), ("HALF", 1), ("INT8", 2), ("INT32", 3), ("BOOL", 4), ("UINT8", 5), ("FP8", 6),
    ("BF16", 7), ("INT64", 8), ("INT4", 9), ("FP4", 10)])


_NUMPY = {
    DataType.FLOAT: np.dtype("<f4"), DataType.HALF: np.dtype("<f2"),
    DataType.INT8: np.dtype("i1"), DataType.INT32: np.dtype("<i4"),
    DataType.INT64: np.dtype("<i8"), DataType.UINT8: np.dtype("u1"),
    DataType.BOOL: np.dtype("?"), DataType.BF16: np.dtype("<u2"),
}
# ONNX TensorProto element types -> DataType
_ONNX_TYPES = {1: DataType.FLOAT, 2: DataType.UINT8, 3: DataType.INT8, 6: DataType.INT32,
               7: DataType.INT64, 9: DataType.BOOL, 10: DataType.HALF, 16: DataType.BF16}


TensorIOMode = enum.IntEnum("TensorIOMode", [("NONE", 0), ("INPUT", 1), ("OUTPUT", 2)])
TensorFormat = enum.IntEnum("TensorFormat", [("LINEAR", 0), ("CHW2", 1), ("HWC8", 2), ("CHW32", 3)])
MemoryPoolType = enum.IntEnum("MemoryPoolType", [("WORKSPACE", 0), ("TACTIC_DRAM", 4)])
# TensorRT 10: opt in to strong typing; 11: deprecated and ignored (strong typing is always on)
NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag",
                                             [("STRONGLY_TYPED", 1)])
ErrorCode = enum.IntEnum("ErrorCode", [
    ("SUCCESS", 0), ("INTERNAL_ERROR", 1), ("INVALID_GRAPH", 5), ("INVALID_NODE", 6),
    ("UNSUPPORTED_GRAPH", 7), ("UNSUPPORTED_NODE", 8)])


def _builder_flags(major: int) -> type[enum.IntEnum]:
    members = ["DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32", "SPARSE_WEIGHTS"]
    if major < 11:  # TensorRT 11 removed every weak-typing precision flag
        members += ["FP16", "INT8", "BF16", "FP8", "OBEY_PRECISION_CONSTRAINTS"]
    return enum.IntEnum("BuilderFlag", [(m, i) for i, m in enumerate(members)])  # type: ignore[return-value]


BuilderFlag = _builder_flags(10)


def set_version(version: str) -> None:
    """Pretend to be TensorRT `version` ("10.x" or "11.x")."""
    global __version__, BuilderFlag
    __version__ = version
    BuilderFlag = _builder_flags(_major())


class Dims:
    """Like trt.Dims: iterable and indexable, but not a tuple (callers must convert)."""

    def __init__(self, dims: Iterable[int]) -> None:
        self._dims = tuple(int(d) for d in dims)

    def __iter__(self) -> Iterator[int]:
        return iter(self._dims)

    def __len__(self) -> int:
        return len(self._dims)

    def __getitem__(self, i: int) -> int:
        return self._dims[i]

    def __eq__(self, other: object) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, Iterable) else NotImplemented

    def __repr__(self) -> str:
        return f"Dims({list(self._dims)})"


class Logger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    INTERNAL_ERROR = Severity.INTERNAL_ERROR
    ERROR = Severity.ERROR
    WARNING = Severity.WARNING
    INFO = Severity.INFO
    VERBOSE = Severity.VERBOSE

    def __init__(self, min_severity: Logger.Severity = Severity.WARNING) -> None:
        self.min_severity = min_severity
        self.messages: list[tuple[Logger.Severity, str]] = []
        _record("Logger", min_severity)

    def log(self, severity: Logger.Severity, message: str) -> None:
        self.messages.append((severity, message))


# -- the runtime ------------------------------------------------------------------------------


class Runtime:
    def __init__(self, logger: Logger) -> None:
        assert isinstance(logger, Logger)
        self.logger = logger
        _record("Runtime", logger)

    def deserialize_cuda_engine(self, serialized: Any) -> ICudaEngine | None:
        data = bytes(serialized)
        _record("Runtime.deserialize_cuda_engine", len(data))
        try:
            plan = json.loads(data)
            if plan.get("magic") != PLAN_MAGIC:
                raise ValueError("not a plan")
        except ValueError:
            self.logger.log(Logger.ERROR, "the serialized engine is invalid")
            return None
        if plan["trt_major"] != _major():
            self.logger.log(Logger.ERROR, "the plan was built with another TensorRT version")
            return None
        return ICudaEngine(plan, self.logger)


class ICudaEngine:
    _next_id = 0

    def __init__(self, plan: dict[str, Any], logger: Logger) -> None:
        ICudaEngine._next_id += 1
        self.id = ICudaEngine._next_id
        self.plan = plan
        self.logger = logger
        self._tensors = {t["name"]: t for t in plan["tensors"]}
        self._order = [t["name"] for t in plan["tensors"]]
        self.claimed: dict[int, int] = {}  # profile -> the context that uses it

    @property
    def num_io_tensors(self) -> int:
        return len(self._order)

    @property
    def num_optimization_profiles(self) -> int:
        return max(1, len(self.plan["profiles"]))

    def get_tensor_name(self, index: int) -> str:
        return self._order[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        tensor = self._tensors.get(name)
        return TensorIOMode.NONE if tensor is None else TensorIOMode[tensor["mode"]]

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType[self._tensors[name]["dtype"]]

    def get_tensor_shape(self, name: str) -> Dims:
        return Dims(self._tensors[name]["shape"])

    def get_tensor_format(self, name: str) -> TensorFormat:
        return TensorFormat[self._tensors[name].get("format", "LINEAR")]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
        if self._tensors[name]["mode"] != "INPUT":
            raise ValueError(f"{name} is not an input")
        if not self.plan["profiles"]:
            shape = self._tensors[name]["shape"]
            return [Dims(shape)] * 3
        shapes = self.plan["profiles"][profile_index][name]
        return [Dims(s) for s in shapes]

    def create_execution_context(self) -> IExecutionContext:
        context = IExecutionContext(self)
        _record("ICudaEngine.create_execution_context", self.id, context.id)
        return context


class IExecutionContext:
    _next_id = 0

    def __init__(self, engine: ICudaEngine) -> None:
        IExecutionContext._next_id += 1
        self.id = IExecutionContext._next_id
        self.engine = engine
        self.profile = 0
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def __del__(self) -> None:
        for profile, owner in list(self.engine.claimed.items()):
            if owner == self.id:
                del self.engine.claimed[profile]

    def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
        _record("IExecutionContext.set_optimization_profile_async", self.id, profile_index,
                stream_handle)
        engine = self.engine
        if not 0 <= profile_index < engine.num_optimization_profiles:
            return False
        # As TensorRT documents: a profile is used by one execution context at a time.
        if engine.claimed.get(profile_index, self.id) != self.id:
            engine.logger.log(Logger.ERROR, f"profile {profile_index} is used by another context")
            return False
        engine.claimed[profile_index] = self.id
        self.profile = profile_index
        self.shapes.clear()
        return True

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        dims = tuple(int(d) for d in shape)
        _record("IExecutionContext.set_input_shape", self.id, name, dims)
        engine = self.engine
        if engine.get_tensor_mode(name) != TensorIOMode.INPUT:
            return False
        declared = tuple(engine.get_tensor_shape(name))
        low, _, high = (tuple(s) for s in engine.get_tensor_profile_shape(name, self.profile))
        if len(dims) != len(declared) or any(
            (d0 != -1 and d != d0) or not lo <= d <= hi
            for d, d0, lo, hi in zip(dims, declared, low, high)
        ):
            engine.logger.log(Logger.ERROR, f"shape {dims} for {name} is outside the profile")
            return False
        self.shapes[name] = dims
        return True

    def set_tensor_address(self, name: str, memory: int) -> bool:
        _record("IExecutionContext.set_tensor_address", self.id, name, memory)
        if self.engine.get_tensor_mode(name) == TensorIOMode.NONE or not isinstance(memory, int):
            return False
        self.addresses[name] = memory
        return True

    def get_tensor_shape(self, name: str) -> Dims:
        _record("IExecutionContext.get_tensor_shape", self.id, name)
        return self._shape(name)

    def _shape(self, name: str) -> Dims:
        engine = self.engine
        if engine.get_tensor_mode(name) == TensorIOMode.INPUT:
            return Dims(self.shapes.get(name, tuple(engine.get_tensor_shape(name))))
        # An output's dynamic dims follow the first input's dims at the same position.
        first = self.shapes.get(engine.get_tensor_name(0), ())
        declared = tuple(engine.get_tensor_shape(name))
        return Dims(
            first[i] if d == -1 and i < len(first) else d for i, d in enumerate(declared)
        )

    def execute_async_v3(self, stream_handle: int) -> bool:
        _record("IExecutionContext.execute_async_v3", self.id, stream_handle)
        engine = self.engine
        inputs = [n for n in engine._order if engine._tensors[n]["mode"] == "INPUT"]
        outputs = [n for n in engine._order if engine._tensors[n]["mode"] == "OUTPUT"]
        missing = [n for n in inputs if n not in self.shapes] + [
            n for n in inputs + outputs if n not in self.addresses]
        if FAIL_EXECUTE or missing:
            engine.logger.log(Logger.ERROR, f"not ready to execute: {missing}")
            return False
        if EXECUTE_DELAY_S:
            time.sleep(EXECUTE_DELAY_S)
        arrays = [self._array(n, self.shapes[n]) for n in inputs]
        for j, name in enumerate(outputs):
            out = self._array(name, tuple(self._shape(name)))
            source = arrays[j % len(arrays)]
            if source.shape == out.shape and out.dtype.kind in "fiu" and source.dtype.kind in "fiu":
                out[...] = (source + 1).astype(out.dtype)
            elif source.shape == out.shape:
                out[...] = source.astype(out.dtype)
            else:
                out[...] = 0
        EXECUTIONS.append({"context": self.id, "profile": self.profile, "stream": stream_handle,
                           "shapes": dict(self.shapes)})
        return True

    def _array(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        dtype = _NUMPY[self.engine.get_tensor_dtype(name)]
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes == 0:
            return np.zeros(shape, dtype)
        raw = (ctypes.c_uint8 * nbytes).from_address(self.addresses[name])
        return np.frombuffer(raw, dtype=dtype).reshape(shape)


# -- the builder ------------------------------------------------------------------------------


class ITensor:
    def __init__(self, name: str, shape: Sequence[int], dtype: DataType) -> None:
        self.name = name
        self.shape = Dims(shape)
        self.dtype = dtype


class INetworkDefinition:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.inputs: list[ITensor] = []
        self.outputs: list[ITensor] = []

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, index: int) -> ITensor:
        return self.inputs[index]


class ParserError:
    def __init__(self, code: ErrorCode, desc: str, node: int = -1, node_name: str = "",
                 node_operator: str = "") -> None:
        self._code, self._desc, self._node = code, desc, node
        self._node_name, self._node_operator = node_name, node_operator

    def code(self) -> ErrorCode:
        return self._code

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node

    def node_name(self) -> str:
        return self._node_name

    def node_operator(self) -> str:
        return self._node_operator


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
        _record("OnnxParser", network, logger)
        self.network = network
        self._errors: list[ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> ParserError:
        return self._errors[index]

    def clear_errors(self) -> None:
        self._errors.clear()

    def parse(self, model: bytes, path: str | None = None) -> bool:
        import onnx

        _record("OnnxParser.parse", len(model), path)
        try:
            graph = onnx.load_from_string(bytes(model)).graph
        except Exception as exc:  # onnx raises DecodeError and others for bad bytes
            self._errors.append(ParserError(ErrorCode.INVALID_GRAPH, f"failed to parse: {exc}"))
            return False
        for i, node in enumerate(graph.node):
            if node.op_type in UNSUPPORTED_OPS:
                self._errors.append(ParserError(
                    ErrorCode.UNSUPPORTED_NODE, f"no importer registered for op: {node.op_type}",
                    i, node.name, node.op_type))
        initializers = {t.name for t in graph.initializer}
        for value, into in [(v, self.network.inputs) for v in graph.input
                            if v.name not in initializers] + [
                                (v, self.network.outputs) for v in graph.output]:
            tensor_type = value.type.tensor_type
            dtype = _ONNX_TYPES.get(tensor_type.elem_type)
            if dtype is None:
                self._errors.append(ParserError(
                    ErrorCode.UNSUPPORTED_GRAPH,
                    f"tensor {value.name}: unsupported type {tensor_type.elem_type}"))
                continue
            shape = [d.dim_value if d.HasField("dim_value") else -1
                     for d in tensor_type.shape.dim]
            into.append(ITensor(value.name, shape, dtype))
        return not self._errors


class IOptimizationProfile:
    _next_id = 0

    def __init__(self) -> None:
        IOptimizationProfile._next_id += 1
        self.id = IOptimizationProfile._next_id
        self.shapes: dict[str, list[list[int]]] = {}

    def set_shape(self, input: str, min: Sequence[int], opt: Sequence[int],
                  max: Sequence[int]) -> None:
        shapes = [list(map(int, min)), list(map(int, opt)), list(map(int, max))]
        _record("IOptimizationProfile.set_shape", self.id, input, *map(tuple, shapes))
        self.shapes[input] = shapes


class ITimingCache:
    def __init__(self, builds: int) -> None:
        self.builds = builds

    def serialize(self) -> bytes:
        _record("ITimingCache.serialize", self.builds)
        return json.dumps({"magic": CACHE_MAGIC, "builds": self.builds}).encode()


class IBuilderConfig:
    def __init__(self) -> None:
        self.flags: list[Any] = []
        self.pools: dict[MemoryPoolType, int] = {}
        self.profiles: list[IOptimizationProfile] = []
        self.timing_cache: ITimingCache | None = None

    def set_flag(self, flag: Any) -> None:
        _record("IBuilderConfig.set_flag", flag.name)
        assert flag in BuilderFlag, f"{flag} is not a BuilderFlag of this version"
        self.flags.append(flag)

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        _record("IBuilderConfig.set_memory_pool_limit", pool, pool_size)
        self.pools[pool] = pool_size

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        _record("IBuilderConfig.add_optimization_profile", profile.id)
        if any(p is profile for p in self.profiles):
            return -1
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache | None:
        data = bytes(serialized_timing_cache)
        _record("IBuilderConfig.create_timing_cache", data)
        if not data:
            return ITimingCache(0)
        try:
            cache = json.loads(data)
            if cache.get("magic") != CACHE_MAGIC:
                raise ValueError("not a cache")
        except ValueError:
            return None
        return ITimingCache(int(cache["builds"]))

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        _record("IBuilderConfig.set_timing_cache", cache.builds, ignore_mismatch)
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        _record("IBuilderConfig.get_timing_cache")
        return self.timing_cache


class Builder:
    def __init__(self, logger: Logger) -> None:
        assert isinstance(logger, Logger)
        self.logger = logger
        _record("Builder", logger)

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        _record("Builder.create_network", flags)
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        _record("Builder.create_builder_config")
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        profile = IOptimizationProfile()
        _record("Builder.create_optimization_profile", profile.id)
        return profile

    def build_serialized_network(
        self, network: INetworkDefinition, config: IBuilderConfig
    ) -> bytes | None:
        _record("Builder.build_serialized_network", network, config)
        profiles: list[dict[str, list[list[int]]]] = []
        for profile in config.profiles:
            for tensor in network.inputs:
                shapes = profile.shapes.get(tensor.name)
                declared = tuple(tensor.shape)
                if shapes is None or any(
                    len(s) != len(declared) for s in shapes) or any(
                    (d != -1 and not lo == op == hi == d) or not 1 <= lo <= op <= hi
                    for d, lo, op, hi in zip(declared, *shapes)
                ):
                    self.logger.log(Logger.ERROR, f"bad profile for {tensor.name}: {shapes}")
                    return None
            profiles.append({t.name: profile.shapes[t.name] for t in network.inputs})
        if not profiles and any(-1 in tuple(t.shape) for t in network.inputs):
            self.logger.log(Logger.ERROR, "a network with dynamic shapes needs a profile")
            return None
        if config.timing_cache is not None:
            config.timing_cache.builds += 1
        plan = {
            "magic": PLAN_MAGIC,
            "trt_major": _major(),
            "tensors": [
                {"name": t.name, "mode": mode, "dtype": t.dtype.name, "shape": list(t.shape)}
                for mode, tensors in (("INPUT", network.inputs), ("OUTPUT", network.outputs))
                for t in tensors
            ],
            "profiles": profiles,
            "flags": [f.name for f in config.flags],
            "strongly_typed": bool(network.flags) or _major() >= 11,
            "workspace": config.pools.get(MemoryPoolType.WORKSPACE),
        }
        return json.dumps(plan).encode()


def plan(tensors: list[dict[str, Any]], profiles: list[dict[str, Any]] | None = None,
         major: int | None = None) -> bytes:
    """A plan for tests to write by hand: tensors as {"name", "mode", "dtype", "shape"},
    profiles as [{input name: [min, opt, max]}]."""
    return json.dumps({"magic": PLAN_MAGIC, "trt_major": major or _major(), "tensors": tensors,
                       "profiles": profiles or []}).encode()
