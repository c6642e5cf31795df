"""The TensorRT backend against a fake `tensorrt` (tests/fakes/tensorrt) and a stand-in core.

The core's GPU calls (cuda_driver, cuda_make_current, device_engine) are replaced here by
recorders that write into the fake's call log, so one list shows the order of everything: which
GPU was current when each plan was deserialized and each context made, which profile each
context took, and what each batch set before it was enqueued on the stream.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from pyserver import _core
from pyserver.backends import tensorrt as backend
from pyserver.config import load_config
from pyserver.errors import InvalidRequest, ModelLoadError
from pyserver.types import DataType, TensorSpec
from tests.fakes.trt import load_fake_tensorrt


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_fake_tensorrt(monkeypatch)


class StandInDeviceEngine:
    def __init__(self, impl: Any, gpu: int) -> None:
        self.impl, self.gpu = impl, gpu


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch, trt: ModuleType) -> list[StandInDeviceEngine]:
    """Two GPUs; the core's GPU calls recorded in the fake's log. Returns the engines made."""
    made: list[StandInDeviceEngine] = []
    driver = {"available": True, "error": "", "library": "fake", "driver_version": 12040,
              "devices": [{"index": i, "name": f"Fake GPU {i}", "uuid": f"GPU-{i:08d}",
                           "total_memory": 2**34} for i in range(2)]}

    def make_current(gpu: int) -> None:
        trt.CALLS.append(("cuda_make_current", (gpu,)))

    def device_engine(impl: Any, gpu: int) -> StandInDeviceEngine:
        trt.CALLS.append(("device_engine", (gpu,)))
        made.append(StandInDeviceEngine(impl, gpu))
        return made[-1]

    monkeypatch.setattr(_core, "cuda_driver", lambda: driver, raising=False)
    monkeypatch.setattr(_core, "cuda_make_current", make_current, raising=False)
    monkeypatch.setattr(_core, "device_engine", device_engine, raising=False)
    return made


def tensor(name: str, mode: str, shape: list[int], dtype: str = "FLOAT",
           **extra: Any) -> dict[str, Any]:
    return {"name": name, "mode": mode, "dtype": dtype, "shape": shape, **extra}


def profiles(count: int, low: int = 1, opt: int = 4, high: int = 16,
             names: tuple[str, ...] = ("x",), rest: tuple[int, ...] = (4,)) -> list[dict[str, Any]]:
    return [{n: [[low, *rest], [opt, *rest], [high, *rest]] for n in names}
            for _ in range(count)]


ADD_ONE = [tensor("x", "INPUT", [-1, 4]), tensor("y", "OUTPUT", [-1, 4])]


def model(tmp_path: Path, trt: ModuleType, config: str, tensors: list[dict[str, Any]] | None = None,
          plan_profiles: list[dict[str, Any]] | None = None, major: int | None = None) -> Any:
    folder = tmp_path / "add"
    (folder / "1").mkdir(parents=True)
    (folder / "config.toml").write_text('backend = "tensorrt"\n' + config)
    plan = trt.plan(ADD_ONE if tensors is None else tensors,
                    profiles(2) if plan_profiles is None else plan_profiles, major)
    (folder / "1" / "model.plan").write_bytes(plan)
    return load_config(folder)


def gpu_group(count: int, gpus: str = "") -> str:
    return f'[[instance_group]]\nkind = "KIND_GPU"\ncount = {count}\n{gpus}'


# -- loading ----------------------------------------------------------------------------------


def test_missing_tensorrt_names_the_plan_and_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trt: ModuleType
) -> None:
    config = model(tmp_path, trt, "")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt raises ImportError
    with pytest.raises(ModelLoadError) as info:
        backend.load(config, config.path / "1")
    assert str(config.path / "1" / "model.plan") in str(info.value)
    assert "pip install 'pyserver[tensorrt]'" in str(info.value)


def test_tensorrt_older_than_10_is_refused(tmp_path: Path, trt: ModuleType) -> None:
    config = model(tmp_path, trt, "")
    trt.set_version("8.6.1")
    with pytest.raises(ModelLoadError, match="TensorRT 8.6.1 is too old"):
        backend.load(config, config.path / "1")


def test_no_driver_is_a_load_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trt: ModuleType
) -> None:
    config = model(tmp_path, trt, "")
    monkeypatch.setattr(_core, "cuda_driver", lambda: {
        "available": False, "error": "libcuda.so.1: not found", "devices": []}, raising=False)
    with pytest.raises(ModelLoadError, match="needs a GPU: no CUDA driver.*libcuda.so.1"):
        backend.load(config, config.path / "1")


def test_cpu_instances_are_refused(tmp_path: Path, trt: ModuleType, gpus: list[Any]) -> None:
    config = model(tmp_path, trt, '[[instance_group]]\nkind = "KIND_CPU"\n')
    with pytest.raises(ModelLoadError, match=r"instance_group: TensorRT runs on GPUs.*KIND_CPU"):
        backend.load(config, config.path / "1")


def test_missing_plan(tmp_path: Path, trt: ModuleType, gpus: list[Any]) -> None:
    config = model(tmp_path, trt, "")
    (config.path / "1" / "model.plan").unlink()
    with pytest.raises(ModelLoadError, match="model.plan: model file not found"):
        backend.load(config, config.path / "1")


def test_tensors_and_max_batch_size_come_from_the_engine(
    tmp_path: Path, trt: ModuleType, gpus: list[Any]
) -> None:
    # Profile 0 takes up to 16, profile 1 up to 8: two instances need both, so 8.
    plan_profiles = profiles(1, high=16) + profiles(1, high=8)
    config = model(tmp_path, trt, gpu_group(2, "gpus = [0]\n"), plan_profiles=plan_profiles)
    loaded = backend.load(config, config.path / "1")
    assert loaded.config.max_batch_size == 8
    assert loaded.config.inputs == (TensorSpec("x", DataType.FP32, (4,)),)
    assert loaded.config.outputs == (TensorSpec("y", DataType.FP32, (4,)),)
    assert loaded.check_inputs is None  # nothing dynamic beyond the batch dimension


def test_one_engine_per_gpu_one_context_and_profile_per_instance(
    tmp_path: Path, trt: ModuleType, gpus: list[StandInDeviceEngine]
) -> None:
    config = model(tmp_path, trt, gpu_group(2))  # every visible GPU: 0 and 1
    loaded = backend.load(config, config.path / "1")
    assert loaded.engines == gpus and [e.gpu for e in gpus] == [0, 0, 1, 1]
    assert [e.impl.profile for e in gpus] == [0, 1, 0, 1]
    order = [name for name in trt.names() if name not in ("Logger",)]
    assert order == [
        "cuda_make_current", "Runtime", "Runtime.deserialize_cuda_engine",
        "cuda_make_current", "Runtime", "Runtime.deserialize_cuda_engine",
        "cuda_make_current", "ICudaEngine.create_execution_context", "device_engine",
        "ICudaEngine.create_execution_context", "device_engine",
        "cuda_make_current", "ICudaEngine.create_execution_context", "device_engine",
        "ICudaEngine.create_execution_context", "device_engine",
    ]
    assert trt.calls("cuda_make_current") == [(0,), (1,), (0,), (1,)]
    contexts = trt.calls("ICudaEngine.create_execution_context")  # (engine id, context id)
    assert [c[0] for c in contexts] == [1, 1, 2, 2]  # GPU 0's engine, then GPU 1's
    assert len({c[1] for c in contexts}) == 4
    assert len(trt.calls("Logger")) == 1  # one logger for everything


def test_too_few_profiles_says_how_to_rebuild(
    tmp_path: Path, trt: ModuleType, gpus: list[Any]
) -> None:
    config = model(tmp_path, trt, gpu_group(3, "gpus = [1]\n"))
    with pytest.raises(ModelLoadError) as info:
        backend.load(config, config.path / "1")
    message = str(info.value)
    assert "config.toml: instance_group: 3 instances on one GPU need 3" in message
    assert "has 2" in message and "pyserver build-engine --profiles 3" in message


def test_static_engine_does_not_batch(tmp_path: Path, trt: ModuleType, gpus: list[Any]) -> None:
    tensors = [tensor("x", "INPUT", [2, 4]), tensor("y", "OUTPUT", [2, 4])]
    config = model(tmp_path, trt, gpu_group(3, "gpus = [0]\n"), tensors, plan_profiles=[])
    loaded = backend.load(config, config.path / "1")
    assert loaded.config.max_batch_size == 0
    assert loaded.config.inputs == (TensorSpec("x", DataType.FP32, (2, 4)),)
    assert [e.impl.profile for e in gpus] == [None, None, None]  # static: profile 0 implicit


def test_static_engine_refuses_a_max_batch_size(
    tmp_path: Path, trt: ModuleType, gpus: list[Any]
) -> None:
    tensors = [tensor("x", "INPUT", [2, 4]), tensor("y", "OUTPUT", [2, 4])]
    config = model(tmp_path, trt, "max_batch_size = 4\n", tensors, plan_profiles=[])
    with pytest.raises(ModelLoadError, match="config.toml: max_batch_size: expected 0.*static"):
        backend.load(config, config.path / "1")


def test_max_batch_size_above_the_profiles_is_refused(
    tmp_path: Path, trt: ModuleType, gpus: list[Any]
) -> None:
    config = model(tmp_path, trt, "max_batch_size = 32\n" + gpu_group(1))
    with pytest.raises(ModelLoadError, match=r"max_batch_size: expected at most 16 .*got 32"):
        backend.load(config, config.path / "1")


def test_a_smaller_max_batch_size_is_kept(tmp_path: Path, trt: ModuleType, gpus: list[Any]) -> None:
    config = model(tmp_path, trt, "max_batch_size = 4\n" + gpu_group(1))
    assert backend.load(config, config.path / "1").config.max_batch_size == 4


@pytest.mark.parametrize(("declared", "message"), [
    ('[[input]]\nname = "z"\ndata_type = "TYPE_FP32"\ndims = [4]\n',
     r"input\[0\].name: the engine has no input 'z'; expected one of x"),
    ('[[input]]\nname = "x"\ndata_type = "TYPE_FP16"\ndims = [4]\n',
     r"input\[0\].data_type: expected TYPE_FP32 .*got TYPE_FP16"),
    ('[[input]]\nname = "x"\ndata_type = "TYPE_FP32"\ndims = [5]\n',
     r"input\[0\].dims: expected dims compatible with \[4\]"),
    ('[[output]]\nname = "y"\ndata_type = "TYPE_FP32"\ndims = [4]\n',
     r"output: the engine also has outputs z"),
])
def test_declared_tensors_are_checked(
    tmp_path: Path, trt: ModuleType, gpus: list[Any], declared: str, message: str
) -> None:
    tensors = ADD_ONE + [tensor("z", "OUTPUT", [-1, 4])]
    config = model(tmp_path, trt, declared, tensors)
    with pytest.raises(ModelLoadError, match=message):
        backend.load(config, config.path / "1")


@pytest.mark.parametrize("dtype", ["HALF", "BF16", "INT8", "INT32", "INT64", "BOOL", "UINT8"])
def test_datatypes(tmp_path: Path, trt: ModuleType, gpus: list[Any], dtype: str) -> None:
    tensors = [tensor("x", "INPUT", [-1, 4], dtype), tensor("y", "OUTPUT", [-1, 4], dtype)]
    config = model(tmp_path, trt, "", tensors)
    loaded = backend.load(config, config.path / "1")
    expected = {"HALF": "FP16"}.get(dtype, dtype)
    assert loaded.config.inputs[0].datatype is DataType[expected]


def test_unsupported_datatype_names_the_tensor(
    tmp_path: Path, trt: ModuleType, gpus: list[Any]
) -> None:
    tensors = [tensor("x", "INPUT", [-1, 4]), tensor("y", "OUTPUT", [-1, 4], "FP8")]
    config = model(tmp_path, trt, "", tensors)
    with pytest.raises(ModelLoadError, match="model.plan: tensor 'y' has TensorRT type FP8"):
        backend.load(config, config.path / "1")


def test_vectorized_formats_are_refused(tmp_path: Path, trt: ModuleType, gpus: list[Any]) -> None:
    tensors = [tensor("x", "INPUT", [-1, 4], format="CHW32"), tensor("y", "OUTPUT", [-1, 4])]
    config = model(tmp_path, trt, "", tensors)
    with pytest.raises(ModelLoadError, match="tensor 'x' uses format .*LINEAR"):
        backend.load(config, config.path / "1")


def test_profiles_must_allow_a_batch_of_one(
    tmp_path: Path, trt: ModuleType, gpus: list[Any]
) -> None:
    config = model(tmp_path, trt, "", plan_profiles=profiles(2, low=2))
    with pytest.raises(ModelLoadError, match="smallest batch is 2.*--min-batch 1"):
        backend.load(config, config.path / "1")


def test_plan_of_another_tensorrt_version(tmp_path: Path, trt: ModuleType, gpus: list[Any]) -> None:
    config = model(tmp_path, trt, "", major=11)
    with pytest.raises(ModelLoadError, match="could not deserialize it on GPU 0.*build-engine"):
        backend.load(config, config.path / "1")


def test_tensorrt_11_loads_the_same_way(tmp_path: Path, trt: ModuleType, gpus: list[Any]) -> None:
    trt.set_version("11.0.0")
    config = model(tmp_path, trt, gpu_group(1, "gpus = [1]\n"), major=11)
    loaded = backend.load(config, config.path / "1")
    assert loaded.config.max_batch_size == 16 and [e.gpu for e in gpus] == [1]


def test_dynamic_dims_beyond_the_batch_are_checked_per_request(
    tmp_path: Path, trt: ModuleType, gpus: list[Any]
) -> None:
    tensors = [tensor("x", "INPUT", [-1, -1]), tensor("y", "OUTPUT", [-1, -1])]
    plan_profiles = [{"x": [[1, 2], [4, 4], [8, 6]]}, {"x": [[1, 3], [4, 4], [8, 7]]}]
    config = model(tmp_path, trt, gpu_group(2, "gpus = [0]\n"), tensors, plan_profiles)
    loaded = backend.load(config, config.path / "1")
    assert loaded.config.inputs == (TensorSpec("x", DataType.FP32, (-1,)),)
    check = loaded.check_inputs
    assert check is not None
    check([((2, 3), b"")])
    check([((8, 6), b"")])
    for dims in [(2, 2), (2, 7)]:  # outside what both profiles accept: 3..6
        with pytest.raises(InvalidRequest, match=r"input 'x': dims \[\d\] are outside .*\[3\] to \[6\]"):
            check([(dims, b"")])


# -- executing --------------------------------------------------------------------------------


class HostArray:
    """Stands in for core.DeviceArray: the fake's 'device' memory is host memory."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = np.ascontiguousarray(array)
        self.ptr = int(self.array.ctypes.data)
        self.shape = tuple(self.array.shape)
        self.nbytes = self.array.nbytes


class HostOutput:
    """Stands in for core.DeviceOutput: allocate() gives host memory the test can read."""

    def __init__(self, name: str, dtype: str = "<f4") -> None:
        self.name = name
        self.dtype = np.dtype(dtype)
        self.allocated: list[HostArray] = []

    def allocate(self, shape: Any) -> HostArray:
        self.allocated.append(HostArray(np.full(tuple(shape), -99, self.dtype)))
        return self.allocated[-1]


def loaded_instances(tmp_path: Path, trt: ModuleType, gpus: list[StandInDeviceEngine],
                     count: int = 2, **kwargs: Any) -> list[Any]:
    config = model(tmp_path, trt, gpu_group(count, "gpus = [0]\n"), **kwargs)
    backend.load(config, config.path / "1")
    del trt.CALLS[:]
    return [e.impl for e in gpus]


def test_execute_sets_profile_once_then_shapes_and_addresses_then_enqueues(
    tmp_path: Path, trt: ModuleType, gpus: list[StandInDeviceEngine]
) -> None:
    _, second = loaded_instances(tmp_path, trt, gpus)
    x = HostArray(np.arange(12, dtype=np.float32).reshape(3, 4))
    y = HostOutput("y")
    second.execute(777, [x], [y])
    np.testing.assert_array_equal(y.allocated[0].array, x.array + 1)
    context = 2  # the second instance's context
    assert trt.CALLS == [
        ("IExecutionContext.set_optimization_profile_async", (context, 1, 777)),
        ("IExecutionContext.set_input_shape", (context, "x", (3, 4))),
        ("IExecutionContext.set_tensor_address", (context, "x", x.ptr)),
        ("IExecutionContext.get_tensor_shape", (context, "y")),
        ("IExecutionContext.set_tensor_address", (context, "y", y.allocated[0].ptr)),
        ("IExecutionContext.execute_async_v3", (context, 777)),
    ]
    del trt.CALLS[:]
    x2 = HostArray(np.ones((1, 4), np.float32))
    second.execute(777, [x2], [y])  # the profile is set once: a switch costs a resync
    assert "IExecutionContext.set_optimization_profile_async" not in trt.names()
    np.testing.assert_array_equal(y.allocated[1].array, [[2, 2, 2, 2]])
    assert [e["profile"] for e in trt.EXECUTIONS] == [1, 1]


def test_instances_run_side_by_side_on_their_own_profiles(
    tmp_path: Path, trt: ModuleType, gpus: list[StandInDeviceEngine]
) -> None:
    instances = loaded_instances(tmp_path, trt, gpus)
    for stream, instance in enumerate(instances, start=100):
        instance.execute(stream, [HostArray(np.zeros((2, 4), np.float32))], [HostOutput("y")])
    assert [(e["context"], e["profile"], e["stream"]) for e in trt.EXECUTIONS] == [
        (1, 0, 100), (2, 1, 101)]


def test_two_inputs_in_the_config_order(
    tmp_path: Path, trt: ModuleType, gpus: list[StandInDeviceEngine]
) -> None:
    tensors = [tensor("a", "INPUT", [-1, 2]), tensor("b", "INPUT", [-1, 2], "INT32"),
               tensor("out_a", "OUTPUT", [-1, 2]), tensor("out_b", "OUTPUT", [-1, 2], "INT32")]
    (instance,) = loaded_instances(tmp_path, trt, gpus, count=1, tensors=tensors,
                                   plan_profiles=profiles(1, names=("a", "b"), rest=(2,)))
    a = HostArray(np.array([[1.5, 2.5]], np.float32))
    b = HostArray(np.array([[7, 8]], np.int32))
    out_a, out_b = HostOutput("out_a"), HostOutput("out_b", "<i4")
    instance.execute(5, [a, b], [out_a, out_b])
    np.testing.assert_array_equal(out_a.allocated[0].array, [[2.5, 3.5]])
    np.testing.assert_array_equal(out_b.allocated[0].array, [[8, 9]])
    assert trt.calls("IExecutionContext.set_input_shape") == [(1, "a", (1, 2)), (1, "b", (1, 2))]


def test_static_engine_executes_without_choosing_a_profile(
    tmp_path: Path, trt: ModuleType, gpus: list[StandInDeviceEngine]
) -> None:
    tensors = [tensor("x", "INPUT", [2, 4]), tensor("y", "OUTPUT", [2, 4])]
    first, _ = loaded_instances(tmp_path, trt, gpus, tensors=tensors, plan_profiles=[])
    y = HostOutput("y")
    first.execute(9, [HostArray(np.zeros((2, 4), np.float32))], [y])
    assert "IExecutionContext.set_optimization_profile_async" not in trt.names()
    np.testing.assert_array_equal(y.allocated[0].array, np.ones((2, 4)))


def test_a_failed_enqueue_raises(
    tmp_path: Path, trt: ModuleType, gpus: list[StandInDeviceEngine]
) -> None:
    first, _ = loaded_instances(tmp_path, trt, gpus)
    trt.FAIL_EXECUTE = True
    with pytest.raises(RuntimeError, match="execute_async_v3 failed"):
        first.execute(1, [HostArray(np.zeros((1, 4), np.float32))], [HostOutput("y")])


def test_a_refused_shape_raises(
    tmp_path: Path, trt: ModuleType, gpus: list[StandInDeviceEngine]
) -> None:
    first, _ = loaded_instances(tmp_path, trt, gpus)
    with pytest.raises(RuntimeError, match=r"refused shape \[32, 4\] for input 'x'"):
        first.execute(1, [HostArray(np.zeros((32, 4), np.float32))], [HostOutput("y")])
    assert "IExecutionContext.execute_async_v3" not in trt.names()
