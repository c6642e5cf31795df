"""`pyserver build-engine`: its arguments, what it asks of TensorRT (a fake: tests/fakes/tensorrt),
what it writes, and its errors, TensorRT missing among them."""

from __future__ import annotations

import json
import socket
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pyserver import _core
from pyserver.backends import tensorrt as backend
from pyserver.cli import build_engine
from pyserver.cli.main import build_parser, main
from pyserver.config import DynamicBatching, load_config
from pyserver.types import DataType, TensorSpec
from tests.fakes.trt import load_fake_tensorrt

onnx = pytest.importorskip("onnx")
helper = onnx.helper

MiB = 2**20


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A fresh fake tensorrt as sys.modules['tensorrt']; no CUDA driver unless a test adds one."""
    module = load_fake_tensorrt(monkeypatch)
    monkeypatch.setattr(_core, "cuda_driver", lambda: {
        "available": False, "error": "libcuda.so.1: cannot open", "devices": []}, raising=False)
    return module


def onnx_model(path: Path, shapes: dict[str, list[Any]] | None = None,
               unsupported: int = 0) -> Path:
    """inputs -> Add(input, 1) -> outputs; `unsupported` extra nodes the fake parser refuses."""
    shapes = shapes or {"x": ["N", 4]}
    one = helper.make_tensor("one", onnx.TensorProto.FLOAT, [], [1.0])
    nodes, inputs, outputs = [], [], []
    for i, (name, shape) in enumerate(shapes.items()):
        inputs.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape))
        outputs.append(helper.make_tensor_value_info(f"y{i}", onnx.TensorProto.FLOAT, shape))
        nodes.append(helper.make_node("Add", [name, "one"], [f"y{i}"], name=f"add{i}"))
    for i in range(unsupported):
        nodes.append(helper.make_node("FakeUnsupported", ["y0"], [f"bad{i}_out"], name=f"bad{i}"))
    graph = helper.make_graph(nodes, "g", inputs, outputs, [one])
    onnx.save(helper.make_model(graph), str(path))
    return path


def run(*argv: str | Path) -> int:
    args = build_parser().parse_args(["build-engine", *map(str, argv)])
    return build_engine.run(args)


def read_plan(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_bytes())
    return result


# -- arguments --------------------------------------------------------------------------------


def test_defaults() -> None:
    args = build_parser().parse_args(["build-engine", "m.onnx"])
    assert args.model == Path("m.onnx") and args.name is None and args.version == 1
    assert args.repository == Path("engines") and args.output is None
    assert (args.min_batch, args.opt_batch, args.max_batch) == (None, None, None)
    assert args.profiles == 1 and args.workspace is None and args.timing_cache is None
    assert not (args.fp16 or args.bf16 or args.int8 or args.strongly_typed) and args.gpu == 0


@pytest.mark.parametrize(("text", "size"), [
    ("1073741824", 2**30), ("512MiB", 512 * MiB), ("4GiB", 4 * 2**30), ("1.5gib", 3 * 2**29),
    ("64 KiB", 64 * 1024), ("100B", 100),
])
def test_workspace_sizes(text: str, size: int) -> None:
    assert build_parser().parse_args(["build-engine", "m.onnx", "--workspace", text]).workspace == size


@pytest.mark.parametrize("argv", [
    ["--workspace", "4GB"], ["--workspace", "0"], ["--workspace", "-1MiB"], ["--profiles", "0"],
    ["--max-batch", "x"], ["--gpu", "-1"], ["--version", "0"],
])
def test_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["build-engine", "m.onnx", *argv])
    assert info.value.code == 2 and "error" in capsys.readouterr().err


def test_tensorrt_missing_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = onnx_model(tmp_path / "add.onnx")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(SystemExit) as info:
        main(["build-engine", str(model), "--repository", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "TensorRT is not installed" in err and "pip install 'pyserver[tensorrt]'" in err
    assert not (tmp_path / "add").exists()


def test_missing_model(tmp_path: Path, trt: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path / "nope.onnx") == 2
    assert "nope.onnx: ONNX model not found" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--min-batch", "8", "--max-batch", "4"], "expected min <= opt <= max"),
    (["--opt-batch", "9", "--max-batch", "8"], "expected min <= opt <= max"),
    (["--max-batch", "70000"], "expected at most 65536"),
    (["--name", "a/b"], "expected a folder name"),
])
def test_inconsistent_arguments(
    tmp_path: Path, trt: ModuleType, capsys: pytest.CaptureFixture[str], argv: list[str],
    message: str
) -> None:
    assert run(onnx_model(tmp_path / "add.onnx"), *argv) == 2
    assert message in capsys.readouterr().err
    assert "Builder" not in trt.names()


# -- building ---------------------------------------------------------------------------------


def test_builds_the_plan_and_a_config_that_serves_it(
    tmp_path: Path, trt: ModuleType, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("build-engine must not reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    model = onnx_model(tmp_path / "add.onnx")
    repo = tmp_path / "engines"
    code = run(model, "--repository", repo, "--profiles", "2", "--min-batch", "1",
               "--opt-batch", "4", "--max-batch", "16", "--workspace", "256MiB")
    assert code == 0, capsys.readouterr().err
    plan_file = repo / "add" / "1" / "model.plan"
    plan = read_plan(plan_file)
    assert plan["profiles"] == [{"x": [[1, 4], [4, 4], [16, 4]]}] * 2
    assert plan["workspace"] == 256 * MiB and plan["flags"] == [] and not plan["strongly_typed"]
    assert [n for n in trt.names() if n != "Logger"] == [
        "Builder", "Builder.create_network", "OnnxParser", "OnnxParser.parse",
        "Builder.create_builder_config", "IBuilderConfig.set_memory_pool_limit",
        "Builder.create_optimization_profile", "IOptimizationProfile.set_shape",
        "IBuilderConfig.add_optimization_profile",
        "Builder.create_optimization_profile", "IOptimizationProfile.set_shape",
        "IBuilderConfig.add_optimization_profile",
        "Builder.build_serialized_network",
    ]
    assert trt.calls("Builder.create_network") == [(0,)]  # weakly typed: TensorRT 10's default
    assert trt.calls("OnnxParser.parse") == [(model.stat().st_size, str(model))]
    assert trt.calls("IBuilderConfig.set_memory_pool_limit") == [
        (trt.MemoryPoolType.WORKSPACE, 256 * MiB)]
    # The config beside the version folder loads, and serves the plan as built.
    config = load_config(repo / "add")
    assert config.backend == "tensorrt" and config.max_batch_size == 16
    assert config.dynamic_batching == DynamicBatching()  # on, with Triton's defaults
    assert [(g.kind, g.count) for g in config.instance_group] == [("KIND_GPU", 2)]
    out = capsys.readouterr().out
    assert f"wrote {plan_file}" in out and "batch 1..16 (opt 4), 2 profiles" in out


def test_the_plan_it_writes_loads_in_the_backend(
    tmp_path: Path, trt: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(onnx_model(tmp_path / "add.onnx"), "--repository", tmp_path, "--profiles", "2") == 0
    monkeypatch.setattr(_core, "cuda_driver", lambda: {
        "available": True, "error": "", "devices": [{"index": 0}]}, raising=False)
    monkeypatch.setattr(_core, "cuda_make_current", lambda gpu: None, raising=False)
    monkeypatch.setattr(_core, "device_engine", lambda impl, gpu: impl, raising=False)
    config = load_config(tmp_path / "add")
    loaded = backend.load(config, tmp_path / "add" / "1")
    assert loaded.config.max_batch_size == 8  # the default --max-batch
    assert loaded.config.inputs == (TensorSpec("x", DataType.FP32, (4,)),)
    assert loaded.config.outputs == (TensorSpec("y0", DataType.FP32, (4,)),)
    assert [e.profile for e in loaded.engines] == [0, 1]  # type: ignore[attr-defined]


def test_an_existing_config_is_kept(
    tmp_path: Path, trt: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "add").mkdir()
    (tmp_path / "add" / "config.toml").write_text('backend = "tensorrt"\nmax_batch_size = 2\n')
    assert run(onnx_model(tmp_path / "add.onnx"), "--repository", tmp_path, "--version", "3") == 0
    assert (tmp_path / "add" / "3" / "model.plan").is_file()
    assert (tmp_path / "add" / "config.toml").read_text().endswith("max_batch_size = 2\n")
    assert "kept" in capsys.readouterr().out


def test_name_and_output(tmp_path: Path, trt: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    model = onnx_model(tmp_path / "add.onnx")
    assert run(model, "--repository", tmp_path, "--name", "adder") == 0
    assert (tmp_path / "adder" / "1" / "model.plan").is_file()
    # --output into a version folder: the config names the file.
    assert run(model, "--output", tmp_path / "m" / "2" / "fast.plan") == 0
    raw = tomllib.loads((tmp_path / "m" / "config.toml").read_text())
    assert raw["default_model_filename"] == "fast.plan"
    # --output anywhere else: only the plan.
    assert run(model, "--output", tmp_path / "loose.plan") == 0
    assert (tmp_path / "loose.plan").is_file() and not (tmp_path.parent / "config.toml").exists()
    assert "no config.toml written" in capsys.readouterr().out


def test_timing_cache_is_read_and_updated(
    tmp_path: Path, trt: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    model = onnx_model(tmp_path / "add.onnx")
    cache = tmp_path / "caches" / "trt.cache"
    assert run(model, "--repository", tmp_path, "--timing-cache", cache) == 0
    assert trt.calls("IBuilderConfig.create_timing_cache") == [(b"",)]  # no file yet
    first = cache.read_bytes()
    assert json.loads(first)["builds"] == 1
    del trt.CALLS[:]
    assert run(model, "--repository", tmp_path, "--timing-cache", cache) == 0
    assert trt.calls("IBuilderConfig.create_timing_cache") == [(first,)]
    assert trt.calls("IBuilderConfig.set_timing_cache") == [(1, False)]  # no ignore_mismatch
    names = trt.names()
    assert names.index("IBuilderConfig.set_timing_cache") < names.index(
        "Builder.build_serialized_network") < names.index("ITimingCache.serialize")
    assert json.loads(cache.read_bytes())["builds"] == 2
    assert f"updated timing cache {cache}" in capsys.readouterr().out


def test_a_file_that_is_not_a_timing_cache(
    tmp_path: Path, trt: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "trt.cache"
    cache.write_bytes(b"garbage")
    assert run(onnx_model(tmp_path / "add.onnx"), "--repository", tmp_path,
               "--timing-cache", cache) == 2
    assert "not a TensorRT timing cache" in capsys.readouterr().err
    assert cache.read_bytes() == b"garbage"


@pytest.mark.parametrize(("argv", "flags"), [
    (["--fp16"], ["FP16"]), (["--bf16"], ["BF16"]), (["--int8", "--fp16"], ["FP16", "INT8"]),
])
def test_precision_flags_on_tensorrt_10(
    tmp_path: Path, trt: ModuleType, argv: list[str], flags: list[str]
) -> None:
    assert run(onnx_model(tmp_path / "add.onnx"), "--repository", tmp_path, *argv) == 0
    assert [args[0] for args in trt.calls("IBuilderConfig.set_flag")] == flags
    assert read_plan(tmp_path / "add" / "1" / "model.plan")["flags"] == flags


def test_strongly_typed_on_tensorrt_10(tmp_path: Path, trt: ModuleType) -> None:
    assert run(onnx_model(tmp_path / "add.onnx"), "--repository", tmp_path, "--strongly-typed") == 0
    assert trt.calls("Builder.create_network") == [
        (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED),)]


def test_precision_with_strongly_typed_is_refused(
    tmp_path: Path, trt: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(onnx_model(tmp_path / "add.onnx"), "--fp16", "--strongly-typed") == 2
    assert "leave out one or the other" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--fp16", "--bf16", "--int8"])
def test_precision_flags_on_tensorrt_11_explain_strong_typing(
    tmp_path: Path, trt: ModuleType, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    trt.set_version("11.0.0")
    assert not hasattr(trt.BuilderFlag, "FP16")
    assert run(onnx_model(tmp_path / "add.onnx"), "--repository", tmp_path, flag) == 2
    err = capsys.readouterr().err
    assert f"{flag}: TensorRT 11.0.0 builds strongly typed networks only" in err
    assert "precision comes from the ONNX graph" in err
    assert "Builder" not in trt.names()


def test_tensorrt_11_builds_without_flags(tmp_path: Path, trt: ModuleType) -> None:
    trt.set_version("11.0.0")
    assert run(onnx_model(tmp_path / "add.onnx"), "--repository", tmp_path, "--strongly-typed") == 0
    assert trt.calls("Builder.create_network") == [(0,)]  # strong typing is not a flag on 11
    plan = read_plan(tmp_path / "add" / "1" / "model.plan")
    assert plan["trt_major"] == 11 and plan["strongly_typed"]


def test_parser_errors_one_per_line_with_their_node(
    tmp_path: Path, trt: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    model = onnx_model(tmp_path / "add.onnx", unsupported=2)
    assert run(model, "--repository", tmp_path) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == (f"pyserver build-engine: {model}: TensorRT's ONNX parser failed "
                        f"(2 errors):")
    assert lines[1:] == [
        "  [node 1, name bad0, operator FakeUnsupported] no importer registered for op: "
        "FakeUnsupported",
        "  [node 2, name bad1, operator FakeUnsupported] no importer registered for op: "
        "FakeUnsupported",
    ]
    assert not (tmp_path / "add").exists()


def test_dynamic_dims_beyond_the_batch_are_refused(
    tmp_path: Path, trt: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    model = onnx_model(tmp_path / "add.onnx", {"x": ["N", "T"]})
    assert run(model, "--repository", tmp_path) == 1
    err = capsys.readouterr().err
    assert "input 'x' has shape [-1, -1]" in err and "static non-batch dimensions" in err


def test_inputs_must_all_batch_or_none(
    tmp_path: Path, trt: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    model = onnx_model(tmp_path / "add.onnx", {"a": ["N", 2], "b": [3, 2]})
    assert run(model, "--repository", tmp_path) == 1
    assert "inputs a have a dynamic first (batch) dimension but b do not" in (
        capsys.readouterr().err)


def test_static_model(tmp_path: Path, trt: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    model = onnx_model(tmp_path / "add.onnx", {"x": [2, 4]})
    assert run(model, "--repository", tmp_path, "--profiles", "3") == 0
    assert read_plan(tmp_path / "add" / "1" / "model.plan")["profiles"] == []
    config = load_config(tmp_path / "add")
    assert config.max_batch_size == 0 and config.dynamic_batching is None
    assert config.instance_group[0].count == 3
    assert run(model, "--repository", tmp_path / "other", "--max-batch", "4") == 2
    assert "static shapes (x [2, 4]), so there is no batch dimension" in capsys.readouterr().err


def test_a_failed_build(
    tmp_path: Path, trt: ModuleType, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(trt.Builder, "build_serialized_network", lambda self, n, c: None)
    assert run(onnx_model(tmp_path / "add.onnx"), "--repository", tmp_path) == 1
    err = capsys.readouterr().err
    assert "TensorRT could not build the engine" in err
    assert "no CUDA driver was found: libcuda.so.1: cannot open" in err
    assert not (tmp_path / "add" / "1" / "model.plan").exists()


def test_builds_on_the_gpu_asked_for(
    tmp_path: Path, trt: ModuleType, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_core, "cuda_driver", lambda: {
        "available": True, "error": "", "devices": [{"index": 0}, {"index": 1}]}, raising=False)
    monkeypatch.setattr(_core, "cuda_make_current",
                        lambda gpu: trt.CALLS.append(("cuda_make_current", (gpu,))), raising=False)
    model = onnx_model(tmp_path / "add.onnx")
    assert run(model, "--repository", tmp_path, "--gpu", "1") == 0
    assert trt.calls("cuda_make_current") == [(1,)]
    assert trt.names().index("cuda_make_current") < trt.names().index("Builder")
    assert run(model, "--repository", tmp_path, "--gpu", "5") == 2
    assert "--gpu 5: expected a visible GPU (0, 1)" in capsys.readouterr().err
