"""pyserver.backends.onnxruntime.load: which engine a model gets (native by default; the Python
engine for string tensors, a library that does not load, or parameters.engine = "python"), the
log line that says so, and the parameters' load errors. Real models, real ONNX Runtime."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from pyserver import _core
from pyserver.backends import LoadedModel
from pyserver.backends.onnxruntime import library_path, load
from pyserver.config import load_config
from pyserver.errors import ModelLoadError
from pyserver.types import DataType, TensorSpec

ENGINES = Path(__file__).resolve().parents[2] / "engines"
LOGGER = "pyserver.backends.onnxruntime"


def digits(tmp_path: Path, parameters: str = "", extra: str = "") -> Path:
    folder = tmp_path / "digits"
    shutil.copytree(ENGINES / "digits" / "1", folder / "1")
    (folder / "config.toml").write_text(
        f'backend = "onnxruntime"\nmax_batch_size = 16\n{extra}\n[parameters]\n'
        f'intra_op_num_threads = 1\n{parameters}\n'
    )
    return folder


def strings(tmp_path: Path, parameters: str = "") -> Path:
    folder = tmp_path / "echo"
    (folder / "1").mkdir(parents=True)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["TEXT"], ["ECHO"])], "echo",
        [helper.make_tensor_value_info("TEXT", TensorProto.STRING, ["N", 1])],
        [helper.make_tensor_value_info("ECHO", TensorProto.STRING, ["N", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(folder / "1" / "model.onnx"))
    (folder / "config.toml").write_text(
        f'backend = "onnxruntime"\nmax_batch_size = 4\n[parameters]\n{parameters}\n')
    return folder


def load_folder(folder: Path) -> LoadedModel:
    return load(load_config(folder), folder / "1")


def engine_lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    """The backend's log lines; each must have `level`."""
    records = [r for r in caplog.records if r.name == LOGGER]
    assert [r.levelno for r in records] == [level] * len(records)
    return [r.getMessage() for r in records]


def test_digits_runs_on_the_native_engine(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    loaded = load_folder(digits(tmp_path, extra="[[instance_group]]\ncount = 2\nkind = \"KIND_CPU\"\n"))
    assert len(loaded.engines) == 2
    assert all(isinstance(e, _core.OnnxRuntimeEngine) for e in loaded.engines)
    assert loaded.engines[0] is not loaded.engines[1]
    assert loaded.check_inputs is None
    assert loaded.config.inputs == (TensorSpec("pixels", DataType.FP32, (64,)),)
    assert loaded.config.outputs == (TensorSpec("label", DataType.INT64, (1,)),
                                     TensorSpec("probabilities", DataType.FP32, (10,)))
    import onnxruntime as ort

    assert engine_lines(caplog) == [
        f"model digits version 1: native ONNX Runtime engine (ONNX Runtime {ort.__version__}, "
        f"{library_path()}), 2 instance(s)"
    ]


def test_engine_python_keeps_the_python_engine(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    loaded = load_folder(digits(tmp_path, 'engine = "python"'))
    assert [type(e) for e in loaded.engines] == [_core.Engine]
    assert engine_lines(caplog) == [
        "model digits version 1: Python ONNX Runtime engine: parameters.engine = python"]


def test_string_tensors_stay_on_the_python_engine(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    loaded = load_folder(strings(tmp_path))
    assert [type(e) for e in loaded.engines] == [_core.Engine]
    assert loaded.check_inputs is not None  # UTF-8 is checked per request, as before
    assert engine_lines(caplog) == [
        "model echo version 1: Python ONNX Runtime engine: string tensors (TEXT, ECHO) run on "
        "the Python engine only"]


def test_engine_native_insists(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_folder(strings(tmp_path, 'engine = "native"'))
    assert str(info.value) == (
        f"{tmp_path / 'echo' / 'config.toml'}: parameters.engine: the native ONNX Runtime engine "
        "cannot run this model: string tensors (TEXT, ECHO) run on the Python engine only")
    loaded = load_folder(digits(tmp_path, 'engine = "NATIVE"'))
    assert isinstance(loaded.engines[0], _core.OnnxRuntimeEngine)


def test_a_library_that_does_not_load_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    missing = tmp_path / "libonnxruntime.so.1.0"
    monkeypatch.setenv("PYSERVER_ONNXRUNTIME_LIBRARY", str(missing))
    loaded = load_folder(digits(tmp_path))
    assert [type(e) for e in loaded.engines] == [_core.Engine]
    (line,) = engine_lines(caplog, logging.WARNING)  # an installation problem, not the model's
    assert line.startswith("model digits version 1: Python ONNX Runtime engine: could not load "
                           f"the ONNX Runtime library: {missing}")
    with pytest.raises(ModelLoadError, match=r"parameters.engine: the native ONNX Runtime engine "
                                             r"cannot run this model: could not load"):
        load_folder(digits(tmp_path / "again", 'engine = "native"'))


@pytest.mark.parametrize(
    ("parameter", "message"),
    [
        ('engine = "gpu"', "parameters.engine: expected one of native, python, got 'gpu'"),
        ('graph_optimization_level = "max"',
         "parameters.graph_optimization_level: expected one of disable, basic, extended, all, "
         "got 'max'"),
        ('execution_mode = "async"',
         "parameters.execution_mode: expected one of sequential, parallel, got 'async'"),
        ('inter_op_num_threads = "-1"',
         "parameters.inter_op_num_threads: expected a non-negative integer, got '-1'"),
    ],
)
def test_bad_parameters_are_load_errors(tmp_path: Path, parameter: str, message: str) -> None:
    folder = digits(tmp_path, parameter)
    with pytest.raises(ModelLoadError) as info:
        load_folder(folder)
    assert str(info.value) == f"{folder / 'config.toml'}: {message}"


@pytest.mark.parametrize("engine", ["native", "python"])
def test_every_parameter_value_loads_on_both_engines(tmp_path: Path, engine: str) -> None:
    for level in ("disable", "basic", "extended", "all"):
        for mode in ("sequential", "parallel"):
            folder = digits(
                tmp_path / f"{level}-{mode}",
                f'engine = "{engine}"\ninter_op_num_threads = 1\n'
                f'graph_optimization_level = "{level}"\nexecution_mode = "{mode}"',
            )
            loaded = load_folder(folder)
            assert isinstance(loaded.engines[0], _core.OnnxRuntimeEngine) == (engine == "native")


@pytest.mark.parametrize("engine", ["native", "python"])
def test_load_errors_name_the_file_on_both_engines(tmp_path: Path, engine: str) -> None:
    folder = digits(tmp_path, f'engine = "{engine}"')
    (folder / "1" / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ModelLoadError, match=r"model.onnx: onnxruntime could not load it: .*[Pp]rotobuf"):
        load_folder(folder)
    (folder / "config.toml").write_text(
        f'backend = "onnxruntime"\nmax_batch_size = 4\n[parameters]\nengine = "{engine}"\n'
        '[[input]]\nname = "image"\ndata_type = "TYPE_FP32"\ndims = [64]\n')
    shutil.copy(ENGINES / "digits" / "1" / "model.onnx", folder / "1" / "model.onnx")
    with pytest.raises(ModelLoadError, match=r"input\[0\].name: the model has no input 'image'"):
        load_folder(folder)
