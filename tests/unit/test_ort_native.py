"""The native ONNX Runtime engine (csrc/core/ort_engine.h) against the real libonnxruntime.so from
the onnxruntime wheel: the library loads, every C API slot csrc/core/ort_api.h declares is called
and does what its name says, and batches formed by the scheduler give what onnxruntime's own
Python InferenceSession gives for the same rows (bundled models, and generated models of every
datatype the engine runs).

Slots and the tests that call them: GetErrorCode, GetErrorMessage, ReleaseStatus (every error
message below); CreateEnv (loading); CreateSessionOptions, ReleaseSessionOptions, CreateSession,
ReleaseSession (sessions); SetIntraOpNumThreads, SetInterOpNumThreads, SetSessionExecutionMode
(thread counts), SetSessionGraphOptimizationLevel (its own refusal); SessionGetInput/OutputCount,
SessionGetInput/OutputName, GetAllocatorWithDefaultOptions, AllocatorFree,
SessionGetInput/OutputTypeInfo, GetOnnxTypeFromTypeInfo, CastTypeInfoToTensorInfo,
GetTensorElementType, GetDimensionsCount, GetDimensions, ReleaseTypeInfo (signatures);
CreateCpuMemoryInfo, ReleaseMemoryInfo, CreateTensorWithDataAsOrtValue, Run, ReleaseValue
(batches); GetTensorTypeAndShape, ReleaseTensorTypeAndShapeInfo, GetTensorMutableData (outputs
ONNX Runtime allocates).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from pyserver import _core
from pyserver.backends.onnxruntime import library_path
from pyserver.completions import StatusCode
from pyserver.types import DataType
from tests.unit.core_support import DELAY_US, Model, Spec, wait_completions

ENGINES = Path(__file__).resolve().parents[2] / "engines"
DIGITS = ENGINES / "digits" / "1" / "model.onnx"
ADD_SUB = ENGINES / "add_sub" / "1" / "model.onnx"

# v2 datatype -> ONNX element type, for every datatype the native engine runs
ONNX_TYPES = {
    DataType.BOOL: TensorProto.BOOL, DataType.UINT8: TensorProto.UINT8,
    DataType.UINT16: TensorProto.UINT16, DataType.UINT32: TensorProto.UINT32,
    DataType.UINT64: TensorProto.UINT64, DataType.INT8: TensorProto.INT8,
    DataType.INT16: TensorProto.INT16, DataType.INT32: TensorProto.INT32,
    DataType.INT64: TensorProto.INT64, DataType.FP16: TensorProto.FLOAT16,
    DataType.FP32: TensorProto.FLOAT, DataType.FP64: TensorProto.DOUBLE,
    DataType.BF16: TensorProto.BFLOAT16,
}


@pytest.fixture(scope="module")
def library() -> str:
    path = library_path()
    assert path is not None, "the onnxruntime wheel ships libonnxruntime.so.1.x in capi/"
    info = _core.onnxruntime_library(str(path))
    assert info["available"], info["error"]
    return str(path)


def options(model: Path | str, **settings: int) -> _core.OnnxRuntimeSessionOptions:
    o = _core.OnnxRuntimeSessionOptions()
    o.model_path = str(model)
    for key, value in settings.items():
        setattr(o, key, value)
    return o


def session(library: str, model: Path | str, **settings: int) -> _core.OnnxRuntimeSession:
    return _core.onnxruntime_session(library, options(model, **settings))


def save(tmp_path: Path, graph: onnx.GraphProto, name: str = "model.onnx") -> Path:
    path = tmp_path / name
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


def python_signature(path: Path) -> tuple[list[Any], list[Any]]:
    """What onnxruntime's Python module reads from the file, in the core's form."""
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def form(nodes: Sequence[Any]) -> list[Any]:
        return [(n.name, n.type, tuple(d if isinstance(d, int) else -1 for d in n.shape))
                for n in nodes]

    return form(s.get_inputs()), form(s.get_outputs())


# --- the library ---------------------------------------------------------------------------------

def test_the_wheels_library_loads_once(library: str) -> None:
    info = _core.onnxruntime_library(library)
    assert info == {"available": True, "error": "", "library": library,
                    "version": ort.__version__, "api_version": 1}
    assert Path(library).parent == Path(ort.__file__).parent / "capi"
    assert Path(library).name.startswith("libonnxruntime.so.1.")


def test_a_library_that_is_not_there_or_not_onnx_runtime(tmp_path: Path) -> None:
    info = _core.onnxruntime_library(str(tmp_path / "libonnxruntime.so.1.99"))
    assert not info["available"] and info["version"] == "" and info["api_version"] == 0
    assert "could not load the ONNX Runtime library" in info["error"]
    assert "libonnxruntime.so.1.99" in info["error"]
    libm = next(p for p in ("/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib64/libm.so.6",
                            "/lib64/libm.so.6", "/usr/lib/libm.so.6") if os.path.exists(p))
    info = _core.onnxruntime_library(libm)
    assert not info["available"]
    assert info["error"] == f"{libm} has no symbol OrtGetApiBase: not an ONNX Runtime library"


def test_library_path_honours_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYSERVER_ONNXRUNTIME_LIBRARY", str(tmp_path / "custom.so"))
    assert library_path() == tmp_path / "custom.so"
    monkeypatch.delenv("PYSERVER_ONNXRUNTIME_LIBRARY")
    assert library_path() == sorted((Path(ort.__file__).parent / "capi").glob("libonnxruntime.so.1*"))[-1]


# --- sessions: what a model declares, options, load errors ---------------------------------------

def every_dtype_graph() -> onnx.GraphProto:
    """One input and one output of every datatype, plus a string pair, with open dims."""
    nodes, inputs, outputs = [], [], []
    for dtype, onnx_type in [*ONNX_TYPES.items(), (DataType.BYTES, TensorProto.STRING)]:
        name = dtype.name.lower()
        nodes.append(helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]))
        inputs.append(helper.make_tensor_value_info(f"in_{name}", onnx_type, ["N", 2, None]))
        outputs.append(helper.make_tensor_value_info(f"out_{name}", onnx_type, ["N", 2, 3]))
    return helper.make_graph(nodes, "every_dtype", inputs, outputs)


def test_sessions_read_what_the_python_module_reads(library: str, tmp_path: Path) -> None:
    sequence = save(tmp_path, helper.make_graph(
        [helper.make_node("SequenceConstruct", ["x"], ["s"])], "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [2])],
    ), "sequence.onnx")
    for model in (DIGITS, ADD_SUB, save(tmp_path, every_dtype_graph())):
        s = session(library, model)
        assert (s.inputs, s.outputs) == python_signature(model), model
        assert s.version == ort.__version__
    assert session(library, DIGITS).inputs == [("pixels", "tensor(float)", (-1, 64))]
    # What is not a tensor is named by its kind alone (the Python module spells out the element:
    # "seq(tensor(float))"); either way the backend refuses it.
    s = session(library, sequence)
    assert (s.inputs, s.outputs) == ([("x", "tensor(float)", (2,))], [("s", "seq", ())])
    assert python_signature(sequence)[1][0][1].startswith("seq(")


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.parametrize(
    ("settings", "extra_threads"),
    [
        ({"intra_op_num_threads": 1}, 0),
        ({"intra_op_num_threads": 3}, 2),  # a pool of 3: the caller and 2 threads
        ({"intra_op_num_threads": 1, "inter_op_num_threads": 3, "execution_mode": 1}, 2),
        # sequential: no inter-op pool, whatever its size says
        ({"intra_op_num_threads": 1, "inter_op_num_threads": 3, "execution_mode": 0}, 0),
    ],
)
def test_thread_options_reach_the_session(
    library: str, settings: dict[str, int], extra_threads: int
) -> None:
    gc.collect()  # no engine of an earlier test goes away (with its threads) while counting
    before = threads()
    s = session(library, DIGITS, **settings)
    assert threads() - before == extra_threads
    del s
    assert threads() == before  # ReleaseSession joined them


def test_every_optimization_level_and_mode_loads(library: str) -> None:
    for level in (0, 1, 2, 99):
        for mode in (0, 1):
            s = session(library, DIGITS, graph_optimization_level=level, execution_mode=mode)
            assert s.outputs[0][0] == "label"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"graph_optimization_level": 5},
         "SetSessionGraphOptimizationLevel: INVALID_ARGUMENT: graph_optimization_level is not valid"),
        ({"execution_mode": 7},
         "SetSessionExecutionMode: INVALID_ARGUMENT: execution_mode is not valid"),
        ({"intra_op_num_threads": -3}, "intra_op_num_threads and inter_op_num_threads must be >= 0"),
        ({"inter_op_num_threads": -2}, "intra_op_num_threads and inter_op_num_threads must be >= 0"),
    ],
)
def test_options_out_of_range_are_value_errors(
    library: str, settings: dict[str, int], message: str
) -> None:
    with pytest.raises(ValueError) as info:
        session(library, DIGITS, **settings)
    assert str(info.value) == message


def test_bad_model_files_name_the_call_and_the_reason(library: str, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"^CreateSession: NO_SUCHFILE: .*missing\.onnx"):
        session(library, tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not an onnx file")
    with pytest.raises(RuntimeError, match=r"^CreateSession: INVALID_PROTOBUF: .*Protobuf parsing failed"):
        session(library, garbage)
    unknown_op = save(tmp_path, helper.make_graph(
        [helper.make_node("NoSuchOperator", ["x"], ["y"])], "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    ), "unknown_op.onnx")
    with pytest.raises(RuntimeError, match=r"^CreateSession: .*NoSuchOperator"):
        session(library, unknown_op)
    with pytest.raises(RuntimeError, match="could not load the ONNX Runtime library"):
        _core.onnxruntime_session(str(tmp_path / "nothing.so"), options(DIGITS))


def test_engines_refuse_what_they_cannot_run(library: str, tmp_path: Path) -> None:
    def engine(model: Path, inputs: list[str], outputs: list[str]) -> _core.OnnxRuntimeEngine:
        return _core.onnxruntime_engine(session(library, model), inputs, outputs, True)

    with pytest.raises(ValueError, match="the model has no input 'image'"):
        engine(DIGITS, ["image"], ["label"])
    with pytest.raises(ValueError, match="the model has no output 'logits'"):
        engine(DIGITS, ["pixels"], ["logits"])
    with pytest.raises(ValueError, match="the model has 2 inputs; the engine was given 1"):
        engine(ADD_SUB, ["INPUT0"], ["OUTPUT0"])
    with pytest.raises(ValueError, match="input 'INPUT0' is named twice"):
        engine(ADD_SUB, ["INPUT0", "INPUT0"], ["OUTPUT0"])
    strings = save(tmp_path, every_dtype_graph())
    names = [n for n, _, _ in session(library, strings).inputs]
    with pytest.raises(NotImplementedError, match="input 'in_bytes' is a string tensor"):
        engine(strings, names, ["out_fp32"])
    numeric = [n for n in names if n != "in_bytes"]
    with pytest.raises(ValueError, match="has 14 inputs; the engine was given 13"):
        engine(strings, numeric, ["out_fp32"])
    one = session(library, DIGITS)
    _core.onnxruntime_engine(one, ["pixels"], ["label"], True)
    with pytest.raises(ValueError, match="already runs in an engine"):
        _core.onnxruntime_engine(one, ["pixels"], ["label"], True)


# --- batches through the scheduler -----------------------------------------------------------------

def run_batch(m: Model, requests: Sequence[Sequence[np.ndarray]]) -> dict[int, tuple[int, Any]]:
    """Submit every request while the scheduler holds, so that they form one batch."""
    m.scheduler.hold(len(requests))
    ids = [m.submit(*((a.shape, a) for a in arrays)) for arrays in requests]
    m.scheduler.hold(0)
    m.scheduler.advance_clock(DELAY_US)
    done = wait_completions(m.cq, len(requests))
    return {i: done[i] for i in ids}


def fp32(name: str, dims: Sequence[int]) -> Spec:
    return (name, int(DataType.FP32), tuple(dims))


@pytest.mark.parametrize("preallocate", [True, False], ids=["preallocated", "runtime-allocated"])
def test_digits_batches_equal_the_python_session(
    library: str, make: Callable[..., Model], preallocate: bool
) -> None:
    engine = _core.onnxruntime_engine(
        session(library, DIGITS, intra_op_num_threads=1), ["pixels"], ["label", "probabilities"],
        True, preallocate_outputs=preallocate,
    )
    m = make([fp32("pixels", (64,))], [("label", int(DataType.INT64), (1,)),
             fp32("probabilities", (10,))], [engine], max_batch_size=128, delay_us=DELAY_US,
             manual_clock=True)
    reference = ort.InferenceSession(str(DIGITS), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    for sizes in ([1], [16], [1, 7, 3, 64, 1]):
        requests = [[(rng.random((n, 64)) * 16).astype(np.float32)] for n in sizes]
        done = run_batch(m, requests)
        assert m.scheduler.batch_sizes()[-1] == sum(sizes)
        want_label, want_prob = reference.run(
            ["label", "probabilities"], {"pixels": np.concatenate([r[0] for r in requests])})
        row = 0
        for (code, views), (pixels,) in zip(done.values(), requests, strict=True):
            assert code == StatusCode.OK, views
            n = pixels.shape[0]
            (label_shape, label), (prob_shape, prob) = views
            assert label_shape == (n, 1) and prob_shape == (n, 10)
            np.testing.assert_array_equal(np.frombuffer(label, np.int64).reshape(n, 1),
                                          want_label[row : row + n])
            np.testing.assert_array_equal(np.frombuffer(prob, np.float32).reshape(n, 10),
                                          want_prob[row : row + n])
            row += n
    assert engine.executions == 3
    outputs = 2 * engine.executions
    assert (engine.preallocated_outputs, engine.runtime_allocated_outputs) == (
        (outputs, 0) if preallocate else (0, outputs))


def test_add_sub_serves_a_subset_of_outputs_in_its_own_order(
    library: str, make: Callable[..., Model]
) -> None:
    engine = _core.onnxruntime_engine(
        session(library, ADD_SUB), ["INPUT1", "INPUT0"], ["OUTPUT1"], True)
    m = make([fp32("INPUT1", (16,)), fp32("INPUT0", (16,))], [fp32("OUTPUT1", (16,))], [engine],
             max_batch_size=64, delay_us=DELAY_US, manual_clock=True)
    reference = ort.InferenceSession(str(ADD_SUB), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    requests = [[rng.standard_normal((n, 16)).astype(np.float32) for _ in range(2)]
                for n in (2, 5, 1)]
    done = run_batch(m, requests)
    for (code, ((shape, out),)), (in1, in0) in zip(done.values(), requests, strict=True):
        assert code == StatusCode.OK and shape == in0.shape
        (want,) = reference.run(["OUTPUT1"], {"INPUT0": in0, "INPUT1": in1})
        np.testing.assert_array_equal(np.frombuffer(out, np.float32).reshape(shape), want)


def random_array(dtype: DataType, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if dtype is DataType.BOOL:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype is DataType.BF16:  # no numpy type: the bits of float32 values rounded down
        return (rng.standard_normal(shape).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    if dtype in (DataType.FP16, DataType.FP32, DataType.FP64):
        return rng.standard_normal(shape).astype(dtype.numpy)
    info = np.iinfo(dtype.numpy)
    return rng.integers(info.min // 2, info.max // 2, size=shape, endpoint=True, dtype=dtype.numpy)


def dtype_graph(dtype: DataType, dims: Sequence[int | str | None]) -> onnx.GraphProto:
    """y = x, and z = x + x (numbers), not x (BOOL) or x as float32 (BF16)."""
    t = ONNX_TYPES[dtype]
    second = {DataType.BOOL: ("Not", ["x"], t), DataType.BF16: ("Cast", ["x"], TensorProto.FLOAT)}
    op, args, z_type = second.get(dtype, ("Add", ["x", "x"], t))
    attrs = {"to": TensorProto.FLOAT} if op == "Cast" else {}
    return helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"]), helper.make_node(op, args, ["z"], **attrs)],
        f"dtype_{dtype.name}",
        [helper.make_tensor_value_info("x", t, dims)],
        [helper.make_tensor_value_info("y", t, dims), helper.make_tensor_value_info("z", z_type, dims)],
    )


@pytest.mark.parametrize("dims", [("N", 3), ("N", "W")], ids=["fixed", "open"])
@pytest.mark.parametrize("dtype", list(ONNX_TYPES), ids=lambda d: d.name)
def test_every_datatype_equals_the_python_session(
    library: str, make: Callable[..., Model], tmp_path: Path, dtype: DataType,
    dims: tuple[str, int | str],
) -> None:
    path = save(tmp_path, dtype_graph(dtype, dims))
    engine = _core.onnxruntime_engine(session(library, path), ["x"], ["y", "z"], True)
    z_dtype = DataType.FP32 if dtype is DataType.BF16 else dtype
    width = 3 if dims[1] == 3 else -1
    m = make([("x", int(dtype), (width,))],
             [("y", int(dtype), (width,)), ("z", int(z_dtype), (width,))], [engine],
             max_batch_size=8, delay_us=DELAY_US, manual_clock=True)
    rng = np.random.default_rng(int(dtype))
    requests = [[random_array(dtype, (n, 3), rng)] for n in (1, 4, 2)]
    done = run_batch(m, requests)
    batch = np.concatenate([r[0] for r in requests])
    if dtype is DataType.BF16:  # onnxruntime's Python module takes no bfloat16 arrays
        want_y, want_z = batch, (batch.astype(np.uint32) << 16).view(np.float32)
    else:
        reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        want_y, want_z = reference.run(["y", "z"], {"x": batch})
    row = 0
    for (code, views), (x,) in zip(done.values(), requests, strict=True):
        assert code == StatusCode.OK, views
        (y_shape, y), (z_shape, z) = views
        n = x.shape[0]
        assert y_shape == z_shape == (n, 3)
        assert y.tobytes() == np.ascontiguousarray(want_y[row : row + n]).tobytes()
        assert z.tobytes() == np.ascontiguousarray(want_z[row : row + n]).tobytes()
        row += n
    fixed = dims[1] == 3
    assert (engine.preallocated_outputs, engine.runtime_allocated_outputs) == (
        (2, 0) if fixed else (0, 2))


def test_outputs_onnx_runtime_allocated_outlive_the_batch_and_the_engine(
    library: str, tmp_path: Path
) -> None:
    """An Identity output of a graph input may be the input's own memory in ONNX Runtime: the
    output buffer keeps the batch's inputs alive, and the OrtValue outlives its session."""
    path = save(tmp_path, dtype_graph(DataType.FP32, ("N", "W")))
    engine = _core.onnxruntime_engine(session(library, path), ["x"], ["y", "z"], True)
    m = Model([fp32("x", (-1,))], [fp32("y", (-1,)), fp32("z", (-1,))], [engine],
              max_batch_size=8, delay_us=DELAY_US, manual_clock=True)
    data = [np.full((1, 5), i, np.float32) for i in range(4)]
    done = run_batch(m, [[d] for d in data])
    views = [v for _, v in done.values()]
    m.close()
    del m, done, engine
    m = Model([fp32("x", (-1,))], [fp32("y", (-1,))], [_core.identity_engine()])
    m.close()  # churn the allocator between
    gc.collect()
    for (y, z), d in zip(views, data, strict=True):
        np.testing.assert_array_equal(np.frombuffer(y[1], np.float32), d.ravel())
        np.testing.assert_array_equal(np.frombuffer(z[1], np.float32), 2 * d.ravel())


def test_a_model_that_does_not_batch(library: str, make: Callable[..., Model], tmp_path: Path) -> None:
    path = save(tmp_path, helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])], "add",
        [helper.make_tensor_value_info("a", TensorProto.INT32, [2, 3]),
         helper.make_tensor_value_info("b", TensorProto.INT32, [3])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [2, 3])],
    ))
    engine = _core.onnxruntime_engine(session(library, path), ["a", "b"], ["c"], False)
    spec = [("a", int(DataType.INT32), (2, 3)), ("b", int(DataType.INT32), (3,))]
    m = make(spec, [("c", int(DataType.INT32), (2, 3))], [engine], max_batch_size=0)
    a, b = np.arange(6, dtype=np.int32).reshape(2, 3), np.array([10, 20, 30], np.int32)
    request_id = m.submit(((2, 3), a), ((3,), b))
    code, ((shape, c),) = wait_completions(m.cq, 1)[request_id]
    assert code == StatusCode.OK and shape == (2, 3)
    np.testing.assert_array_equal(np.frombuffer(c, np.int32).reshape(2, 3), a + b)
    assert engine.preallocated_outputs == 1


# --- errors while running: the batch fails with ONNX Runtime's message, the instance carries on -----

@pytest.mark.parametrize("fixed", [True, False], ids=["preallocated", "runtime-allocated"])
def test_a_failing_batch_fails_alone(
    library: str, make: Callable[..., Model], tmp_path: Path, fixed: bool
) -> None:
    """Gather with indices the request chooses: out of range is ONNX Runtime's error at run time."""
    data = helper.make_tensor("data", TensorProto.FLOAT, [5], [0.5, 1.5, 2.5, 3.5, 4.5])
    path = save(tmp_path, helper.make_graph(
        [helper.make_node("Gather", ["data", "i"], ["v"])], "gather",
        [helper.make_tensor_value_info("i", TensorProto.INT64, ["N", 2 if fixed else "K"])],
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, ["N", 2 if fixed else "K"])],
        [data],
    ))
    engine = _core.onnxruntime_engine(session(library, path), ["i"], ["v"], True)
    m = make([("i", int(DataType.INT64), (2,))], [fp32("v", (2,))], [engine], max_batch_size=8,
             delay_us=DELAY_US, manual_clock=True)
    done = run_batch(m, [[np.array([[0, 4]], np.int64)], [np.array([[1, 9]], np.int64)]])
    for code, message in done.values():  # one bad request fails its batch
        assert code == StatusCode.INTERNAL
        assert message.startswith("Run: INVALID_ARGUMENT: ") and "indices" in message
    done = run_batch(m, [[np.array([[0, 4], [2, 3]], np.int64)]])
    ((code, ((shape, v),)),) = done.values()
    assert code == StatusCode.OK and shape == (2, 2)
    np.testing.assert_array_equal(np.frombuffer(v, np.float32), [0.5, 4.5, 2.5, 3.5])
    assert engine.executions == 2
    stats = m.scheduler.stats()
    assert stats["fail_by_reason"]["BACKEND"] == 2 and stats["success"]["count"] == 1


def test_outputs_that_break_their_declared_shape_still_answer(
    library: str, make: Callable[..., Model], tmp_path: Path
) -> None:
    """y declares [2, 2] but Reshape makes whatever `s` says: ONNX Runtime refuses a buffer of the
    declared shape, so the engine reruns the batch with y left to ONNX Runtime (as the Python
    engine would answer) and stops pre-allocating for this model."""
    path = save(tmp_path, helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"])], "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
    ))
    engine = _core.onnxruntime_engine(session(library, path), ["x", "s"], ["y"], False)
    m = make([fp32("x", (1, 4)), ("s", int(DataType.INT64), (2,))], [fp32("y", (-1, -1))],
             [engine], max_batch_size=0)
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    for shape in ((2, 2), (1, 4), (4, 1)):
        request_id = m.submit(((1, 4), x), ((2,), np.array(shape, np.int64)))
        code, ((got_shape, y),) = wait_completions(m.cq, 1)[request_id]
        assert code == StatusCode.OK and got_shape == shape
        np.testing.assert_array_equal(np.frombuffer(y, np.float32), x.ravel())
    # the first batch fit its declared shape; the second needed the rerun; the third no longer
    # pre-allocates
    assert (engine.executions, engine.preallocated_outputs, engine.runtime_allocated_outputs) == (
        3, 1, 2)
