"""The PyTorch backend on the CPU, under a real core Scheduler: TorchScript (scripted and traced)
and torch.export models, batched, checked against calling the model directly; and the load
errors (missing file, undeclared tensors, outputs that do not match the config, no PyTorch).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pyserver import _core  # noqa: E402
from pyserver.backends import load  # noqa: E402
from pyserver.backends.pytorch import TorchCpuEngine  # noqa: E402
from pyserver.completions import StatusCode  # noqa: E402
from pyserver.config import load_config  # noqa: E402
from pyserver.errors import ModelLoadError  # noqa: E402
from pyserver.model import scheduler_options  # noqa: E402
from pyserver.types import DataType  # noqa: E402
from tests.unit.core_support import wait_completions  # noqa: E402


class TupleModel(torch.nn.Module):
    """Two inputs, two outputs of different datatypes, returned as a tuple."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear(x) + y, torch.argmax(x, dim=1, keepdim=True)


class DictModel(TupleModel):
    """The same, returned as a dict keyed by the output names (in the other order)."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"index": torch.argmax(x, dim=1, keepdim=True), "sum": self.linear(x) + y}


class SingleModel(torch.nn.Module):
    """One input, one output, returned as a lone tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x) * 3


TWO_INPUTS = """
[[input]]
name = "x"
data_type = "TYPE_FP32"
dims = [4]
[[input]]
name = "y"
data_type = "TYPE_FP32"
dims = [3]
"""
TWO_OUTPUTS = """
[[output]]
name = "sum"
data_type = "TYPE_FP32"
dims = [3]
[[output]]
name = "index"
data_type = "TYPE_INT64"
dims = [1]
"""


def config_text(
    tensors: str = TWO_INPUTS + TWO_OUTPUTS, *, count: int = 2, kind: str = "KIND_CPU",
    parameters: str = "", filename: str | None = None,
) -> str:
    name = f'default_model_filename = "{filename}"\n' if filename else ""
    return (
        f'backend = "pytorch"\nmax_batch_size = 8\n{name}{tensors}'
        f'[[instance_group]]\nkind = "{kind}"\ncount = {count}\n'
        f"[parameters]\n{parameters}\n"
        "[dynamic_batching]\nmax_queue_delay_microseconds = 1000000\n"
    )


def example_inputs(module: torch.nn.Module, rows: int = 2) -> tuple[torch.Tensor, ...]:
    if isinstance(module, SingleModel):
        return (torch.randn(rows, 5),)
    return (torch.randn(rows, 4), torch.randn(rows, 3))


def save(module: torch.nn.Module, kind: str, file: Path) -> None:
    """Write `module` as TorchScript (script or trace) or as an exported program (export)."""
    module = module.eval()
    file.parent.mkdir(parents=True, exist_ok=True)
    if kind == "export":
        batch = torch.export.Dim("batch")
        example = example_inputs(module)
        program = torch.export.export(
            module, example, dynamic_shapes=tuple({0: batch} for _ in example)
        )
        torch.export.save(program, str(file))
        return
    with warnings.catch_warnings():
        # TorchScript is deprecated in recent PyTorch; it is still what many models ship as.
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.(script|trace|trace_method)` is deprecated",
            category=DeprecationWarning,
        )
        if kind == "script":
            scripted = torch.jit.script(module)
        else:
            scripted = torch.jit.trace(module, example_inputs(module), strict=False)
        scripted.save(str(file))


def write_model(
    tmp_path: Path, module: torch.nn.Module | None, kind: str = "script", text: str | None = None,
    name: str = "m",
) -> Path:
    """A model folder tmp_path/<name> with config.toml and 1/model.pt (or model.pt2)."""
    folder = tmp_path / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(config_text() if text is None else text)
    if module is not None:
        save(module, kind, folder / "1" / ("model.pt2" if kind == "export" else "model.pt"))
    return folder


def load_folder(folder: Path) -> Any:
    return load(load_config(folder), folder / "1")


class Served:
    """A loaded model under a real core Scheduler; keeps submitted buffers alive."""

    def __init__(self, folder: Path) -> None:
        self.loaded = load_folder(folder)
        self.cq = _core.CompletionQueue()
        self.scheduler = _core.Scheduler(
            scheduler_options(self.loaded.config), self.loaded.engines, self.cq
        )
        self.buffers: list[Any] = []

    def run(self, requests: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
        """Submit every request at once so that they form one batch; decode the outputs."""
        self.scheduler.hold(len(requests))
        for request_id, arrays in enumerate(requests):
            self.buffers.append(arrays)
            self.scheduler.submit(request_id, [(a.shape, a) for a in arrays])
        got = wait_completions(self.cq, len(requests))
        results = []
        for request_id in range(len(requests)):
            code, payload = got[request_id]
            assert code == StatusCode.OK, payload
            results.append([
                view.view(spec.datatype.numpy).reshape(shape)
                for (shape, view), spec in zip(payload, self.loaded.config.outputs, strict=True)
            ])
        return results

    def close(self) -> None:
        self.scheduler.stop()
        self.cq.close()


@pytest.fixture
def serve() -> Iterator[Any]:
    served: list[Served] = []

    def make(folder: Path) -> Served:
        s = Served(folder)
        served.append(s)
        return s

    yield make
    for s in served:
        s.close()


def direct(module: torch.nn.Module, arrays: list[np.ndarray], names: list[str]) -> list[np.ndarray]:
    """The model called on one request's inputs, as numpy in output order."""
    with torch.inference_mode():
        result = module.eval()(*(torch.from_numpy(a) for a in arrays))
    if isinstance(result, dict):
        result = [result[n] for n in names]
    elif isinstance(result, torch.Tensor):
        result = [result]
    return [t.numpy() for t in result]


@pytest.mark.parametrize("kind", ["script", "trace", "export"])
@pytest.mark.parametrize("model_class", [TupleModel, DictModel], ids=["tuple", "dict"])
def test_batched_outputs_match_the_model(
    tmp_path: Path, serve: Any, kind: str, model_class: type[torch.nn.Module]
) -> None:
    module = model_class()
    served = serve(write_model(tmp_path, module, kind))
    assert served.loaded.config.inputs == load_config(tmp_path / "m").inputs
    rng = np.random.default_rng(1)
    rows = [1, 3, 2, 1]
    requests = [
        [rng.standard_normal((r, 4), dtype=np.float32), rng.standard_normal((r, 3), dtype=np.float32)]
        for r in rows
    ]
    results = served.run(requests)
    # The four requests ran as one batch of every row, split back per request.
    assert served.scheduler.batch_sizes() == [sum(rows)]
    for request, outputs in zip(requests, results, strict=True):
        expected = direct(module, request, ["sum", "index"])
        assert outputs[0].shape == (len(request[0]), 3)
        # outputs are read-only views of the batch's output buffer: torch.tensor copies them
        assert torch.allclose(torch.tensor(outputs[0]), torch.from_numpy(expected[0]), atol=1e-6)
        np.testing.assert_array_equal(outputs[1], expected[1])


@pytest.mark.parametrize("kind", ["script", "export"])
def test_single_output_and_the_exported_file_found_by_default(
    tmp_path: Path, serve: Any, kind: str
) -> None:
    tensors = (
        '[[input]]\nname = "x"\ndata_type = "TYPE_FP32"\ndims = [5]\n'
        '[[output]]\nname = "y"\ndata_type = "TYPE_FP32"\ndims = [5]\n'
    )
    module = SingleModel()
    served = serve(write_model(tmp_path, module, kind, config_text(tensors, count=1)))
    x = np.linspace(-2, 2, 10, dtype=np.float32).reshape(2, 5)
    (out,) = served.run([[x]])[0]
    assert torch.allclose(torch.tensor(out), torch.tanh(torch.from_numpy(x)) * 3)


class Bf16Model(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x.float()


def test_bf16_crosses_as_its_bits(tmp_path: Path, serve: Any) -> None:
    tensors = (
        '[[input]]\nname = "x"\ndata_type = "TYPE_BF16"\ndims = [3]\n'
        '[[output]]\nname = "doubled"\ndata_type = "TYPE_BF16"\ndims = [3]\n'
        '[[output]]\nname = "wide"\ndata_type = "TYPE_FP32"\ndims = [3]\n'
    )
    folder = write_model(tmp_path, Bf16Model(), "script", config_text(tensors, count=1))
    served = serve(folder)
    values = torch.tensor([[1.5, -2.0, 0.25]], dtype=torch.bfloat16)
    bits = values.view(torch.int16).numpy().view(np.uint16)
    served.buffers.append(bits)
    served.scheduler.submit(0, [((1, 3), bits)])
    code, outputs = wait_completions(served.cq, 1)[0]
    assert code == StatusCode.OK, outputs
    doubled = torch.from_numpy(outputs[0][1].view(np.int16).copy()).view(torch.bfloat16)
    assert torch.equal(doubled, (values * 2).reshape(-1))
    np.testing.assert_array_equal(outputs[1][1].view(np.float32), [1.5, -2.0, 0.25])


def test_intra_op_threads_is_set_on_the_instance_thread(tmp_path: Path) -> None:
    folder = write_model(
        tmp_path, TupleModel(), text=config_text(count=1, parameters="intra_op_threads = 1"))
    loaded = load_folder(folder)
    assert len(loaded.engines) == 1
    # The engine object itself, run on a thread of our own: the count is that thread's.
    from pyserver.backends import pytorch

    signature = pytorch._Signature(torch, loaded.config)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        model = torch.jit.load(str(folder / "1" / "model.pt"))
    engine = TorchCpuEngine(torch, model, signature, threads=1)
    seen: list[int] = []

    def worker() -> None:
        engine.execute([np.zeros((2, 4), np.float32), np.zeros((2, 3), np.float32)])
        seen.append(torch.get_num_threads())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [1]


# --- load errors --------------------------------------------------------------------------------


def load_error(folder: Path) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_folder(folder)
    return str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    message = load_error(write_model(tmp_path, None))
    assert "model.pt: model file not found (nor model.pt2)" in message
    message = load_error(write_model(tmp_path, None, text=config_text(filename="net.pt"), name="n"))
    assert message.endswith("net.pt: model file not found")


def test_unreadable_file(tmp_path: Path) -> None:
    folder = write_model(tmp_path, None)
    (folder / "1" / "model.pt").write_bytes(b"not a model")
    assert "PyTorch could not load it as a TorchScript file" in load_error(folder)


@pytest.mark.parametrize(
    ("tensors", "key"),
    [(TWO_OUTPUTS, "input: the pytorch backend needs every input declared"),
     (TWO_INPUTS, "output: the pytorch backend needs every output declared")],
    ids=["no-inputs", "no-outputs"],
)
def test_tensors_must_be_declared(tmp_path: Path, tensors: str, key: str) -> None:
    folder = write_model(tmp_path, TupleModel(), text=config_text(tensors))
    message = load_error(folder)
    assert "config.toml: " + key in message


def test_bytes_refused(tmp_path: Path) -> None:
    tensors = TWO_INPUTS.replace('"TYPE_FP32"\ndims = [3]', '"TYPE_STRING"\ndims = [3]') + TWO_OUTPUTS
    message = load_error(write_model(tmp_path, TupleModel(), text=config_text(tensors)))
    assert "input[1].data_type: expected a numeric datatype" in message


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        (TWO_OUTPUTS.replace("TYPE_INT64", "TYPE_INT32"),
         "config.toml: output[1].data_type: output 'index': expected TYPE_INT32 of shape [1, 1] "
         "(-1 = any size), the model returned TYPE_INT64 (torch.int64) of shape [1, 1]"),
        (TWO_OUTPUTS.replace("dims = [3]", "dims = [4]"),
         "config.toml: output[0].dims: output 'sum': expected TYPE_FP32 of shape [1, 4]"),
        (TWO_OUTPUTS.split("[[output]]\nname = \"index\"")[0],
         "config.toml: output: the model returned 2 outputs; the config declares 1 (sum)"),
    ],
    ids=["dtype", "dims", "count"],
)
def test_outputs_checked_by_a_dry_run(tmp_path: Path, outputs: str, expected: str) -> None:
    message = load_error(write_model(tmp_path, TupleModel(), text=config_text(TWO_INPUTS + outputs)))
    assert expected in message
    assert "(a dry run of model.pt at load on 1 row of zeros)" in message


def test_dict_output_without_a_declared_name(tmp_path: Path) -> None:
    outputs = TWO_OUTPUTS.replace('name = "index"', 'name = "argmax"')
    message = load_error(write_model(tmp_path, DictModel(), text=config_text(TWO_INPUTS + outputs)))
    assert "the model returned a dict without 'argmax'" in message


def test_input_dims_the_model_cannot_take(tmp_path: Path) -> None:
    tensors = TWO_INPUTS.replace("dims = [4]", "dims = [6]") + TWO_OUTPUTS
    message = load_error(write_model(tmp_path, TupleModel(), text=config_text(tensors)))
    assert "failed a dry run at load on zeros shaped as the config's inputs (x [1, 6], y [1, 3])" in message
    assert "RuntimeError: mat1 and mat2 shapes cannot be multiplied (1x6 and 4x3) (set " \
        "parameters.dry_run = false to skip it)" in message


def test_without_the_dry_run_a_mismatch_fails_the_batch(tmp_path: Path, serve: Any) -> None:
    outputs = TWO_OUTPUTS.replace("TYPE_INT64", "TYPE_INT32")
    text = config_text(TWO_INPUTS + outputs, count=1, parameters="dry_run = false")
    served = serve(write_model(tmp_path, TupleModel(), text=text))
    x, y = np.zeros((1, 4), np.float32), np.zeros((1, 3), np.float32)
    served.buffers.append((x, y))
    served.scheduler.submit(0, [(x.shape, x), (y.shape, y)])
    code, message = wait_completions(served.cq, 1)[0]
    assert code != StatusCode.OK
    assert "output 'index': expected TYPE_INT32" in message


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [('intra_op_threads = "many"', "parameters.intra_op_threads: expected a non-negative integer"),
     ('dry_run = "maybe"', "parameters.dry_run: expected true or false, got 'maybe'")],
)
def test_bad_parameters(tmp_path: Path, parameters: str, expected: str) -> None:
    text = config_text(parameters=parameters)
    assert expected in load_error(write_model(tmp_path, TupleModel(), text=text))


def test_torch_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_model(tmp_path, None)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    message = load_error(folder)
    assert "model 'm' needs PyTorch, which is not installed (pip install 'pyserver[pytorch]')" in message


def test_gpu_instances_need_a_pytorch_with_cuda(tmp_path: Path, fake_cuda: Any) -> None:
    """The core sees a (fake) GPU, but this PyTorch cannot use CUDA: a clear load error."""
    if torch.cuda.is_available():
        pytest.skip("this PyTorch can use CUDA; tests/gpu covers GPU instances")
    text = config_text(kind="KIND_GPU")
    message = load_error(write_model(tmp_path, TupleModel(), text=text))
    assert "has KIND_GPU instances, but this PyTorch" in message
    assert "cannot use CUDA" in message


def test_auto_on_a_cpu_pytorch_is_the_cpu(tmp_path: Path, serve: Any) -> None:
    if torch.cuda.is_available():
        pytest.skip("this PyTorch can use CUDA")
    text = config_text(kind="KIND_AUTO")
    served = serve(write_model(tmp_path, TupleModel(), text=text))
    assert len(served.loaded.engines) == 2
    x, y = np.ones((1, 4), np.float32), np.ones((1, 3), np.float32)
    total, index = served.run([[x, y]])[0]
    assert index.dtype == DataType.INT64.numpy
    assert total.shape == (1, 3)


# --- the GPU engine's logic, with the device faked -----------------------------------------------
# PyTorch cannot use the fake CUDA driver's host pointers, so tests/gpu runs the engine for real.
# Here a stand-in for the torch module keeps every "device" tensor on the CPU, so that the
# engine's handling of inputs, outputs, their order and BF16 runs wherever the tests do.


class FakeDeviceArray:
    """Stands in for _core.DeviceArray: a CPU tensor's memory, found again by its address."""

    memory: dict[int, torch.Tensor] = {}

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor
        self.ptr = tensor.data_ptr()
        self.shape = tuple(tensor.shape)
        FakeDeviceArray.memory[self.ptr] = tensor


def device_arrays(*tensors: torch.Tensor) -> Any:
    """Stand-ins for the core's list of DeviceArray inputs."""
    return [FakeDeviceArray(t) for t in tensors]


class FakeDeviceOutput:
    def __init__(self) -> None:
        self.value: torch.Tensor | None = None
        self.allocated = False

    def set(self, tensor: torch.Tensor) -> None:
        assert tensor.is_contiguous()
        self.value = tensor

    def allocate(self, shape: list[int]) -> FakeDeviceArray:
        self.allocated = True
        self.value = torch.zeros(shape, dtype=torch.uint16)
        return FakeDeviceArray(self.value)


class FakeTorch:
    """torch, but for cuda: devices are the CPU and streams are no-ops."""

    def __init__(self) -> None:
        self.streams: list[int] = []
        fake = self

        class Cuda:
            @staticmethod
            def ExternalStream(handle: int, device: Any) -> int:  # noqa: N802 - torch's name
                fake.streams.append(handle)
                return handle

            device = stream = staticmethod(lambda _: contextlib.nullcontext())

        self.cuda = Cuda

    def device(self, kind: str, index: int | None = None) -> torch.device:
        return torch.device("cpu")

    def as_tensor(self, array: Any, device: Any) -> torch.Tensor:
        if isinstance(array, FakeDeviceArray):
            return array.tensor
        interface = array.__cuda_array_interface__  # the BF16 path's raw bits
        assert interface["typestr"] == "<u2" and interface["stream"] == 7
        tensor = FakeDeviceArray.memory[interface["data"][0]]
        return tensor.view(torch.uint16).reshape(interface["shape"])

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


def test_gpu_engine_logic_with_a_faked_device(tmp_path: Path) -> None:
    from pyserver.backends.pytorch import TorchGpuEngine, _Signature

    folder = write_model(tmp_path, None, text=config_text(count=1))
    config = load_config(folder)
    fake = FakeTorch()
    module = DictModel().eval()
    engine = TorchGpuEngine(fake, module, _Signature(torch, config), gpu=0)
    x, y = torch.randn(3, 4), torch.randn(3, 3)
    outputs: Any = [FakeDeviceOutput(), FakeDeviceOutput()]  # stand-ins for DeviceOutput
    engine.execute(7, device_arrays(x, y), outputs)
    engine.execute(7, device_arrays(x, y), outputs)
    assert fake.streams == [7], "the instance's stream is wrapped once"
    with torch.inference_mode():
        expected = module(x, y)
    assert outputs[0].value is not None and outputs[1].value is not None
    assert torch.allclose(outputs[0].value, expected["sum"])
    assert torch.equal(outputs[1].value, expected["index"])
    # A mismatch fails the batch, naming the output.
    text = config_text(TWO_INPUTS + TWO_OUTPUTS.replace("TYPE_INT64", "TYPE_INT32"), count=1)
    wrong = load_config(write_model(tmp_path, None, text=text, name="wrong"))
    engine = TorchGpuEngine(fake, module, _Signature(torch, wrong), gpu=0)
    with pytest.raises(Exception, match="output 'index': expected TYPE_INT32 of shape \\[3, 1\\]"):
        engine.execute(7, device_arrays(x, y), outputs)


def test_gpu_engine_bf16_with_a_faked_device(tmp_path: Path) -> None:
    from pyserver.backends.pytorch import TorchGpuEngine, _Signature

    tensors = (
        '[[input]]\nname = "x"\ndata_type = "TYPE_BF16"\ndims = [3]\n'
        '[[output]]\nname = "doubled"\ndata_type = "TYPE_BF16"\ndims = [3]\n'
        '[[output]]\nname = "wide"\ndata_type = "TYPE_FP32"\ndims = [3]\n'
    )
    config = load_config(write_model(tmp_path, None, text=config_text(tensors, count=1)))
    engine = TorchGpuEngine(FakeTorch(), Bf16Model(), _Signature(torch, config), gpu=0)
    values = torch.tensor([[1.5, -2.0, 0.25]], dtype=torch.bfloat16)
    bits = values.view(torch.uint16).clone()  # the core's BF16 buffer, as its bits
    outputs: Any = [FakeDeviceOutput(), FakeDeviceOutput()]  # stand-ins for DeviceOutput
    engine.execute(7, device_arrays(bits), outputs)
    assert outputs[0].allocated, "a BF16 output is copied into core memory"
    assert outputs[0].value is not None and outputs[1].value is not None
    assert torch.equal(outputs[0].value.view(torch.bfloat16), values * 2)
    assert torch.equal(outputs[1].value, values.float())
