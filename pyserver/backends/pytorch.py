"""PyTorch: a TorchScript file (`model.pt`) or a `torch.export` program (`model.pt2`), run on
the CPU or on its instance's GPU. PyTorch is an optional extra (`pip install 'pyserver[pytorch]'`),
imported only when a model asks for it.

A PyTorch file does not declare its tensors' names, datatypes and shapes reliably (TorchScript
keeps argument names but no dtypes; an exported program keeps example shapes), so the config must
declare every input and output. At load, one dry run on a batch of zeros (1 row, dims -1 read as
1) checks that the model returns what the config promises, so a mismatch is a load error naming
the output rather than a failure of every batch later.

Instances on one device share one copy of the model (PyTorch's forward is safe to call from
several threads; the weights are read only under inference mode):

- CPU instances are core.PythonEngine: the core's batch buffers become tensors with
  torch.from_numpy (no copy), and the outputs go back as numpy views of the result tensors.
- GPU instances are core.DeviceEngine: the core has copied the inputs to the device on the
  instance's stream; they become tensors through the CUDA array interface (no copy), the model
  runs on that same stream (torch.cuda.ExternalStream), and each result tensor is handed to the
  core, which copies it to pinned host memory on the stream and keeps it alive until then.

Config parameters (strings, as Triton's): intra_op_threads (CPU instances: threads of PyTorch's
intra-op pool for the instance's worker thread; 0 = PyTorch's default), dry_run (true | false,
default true: skip the load-time check for models that cannot run on zeros).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy.typing as npt

from pyserver import _core
from pyserver.backends import (
    LoadedModel,
    Placement,
    auto_batching,
    gpu_available,
    placements,
)
from pyserver.config import ModelConfig
from pyserver.errors import ModelLoadError
from pyserver.types import DataType, TensorSpec

if TYPE_CHECKING:
    import torch

# v2 datatypes -> torch dtype names (looked up on the torch module once it is imported)
_TORCH_TYPES = {
    DataType.BOOL: "bool", DataType.UINT8: "uint8", DataType.UINT16: "uint16",
    DataType.UINT32: "uint32", DataType.UINT64: "uint64", DataType.INT8: "int8",
    DataType.INT16: "int16", DataType.INT32: "int32", DataType.INT64: "int64",
    DataType.FP16: "float16", DataType.FP32: "float32", DataType.FP64: "float64",
    DataType.BF16: "bfloat16",
}


class OutputMismatch(Exception):
    """What the model returned is not what the config declares (the message says how); `key`
    is the config key it contradicts."""

    def __init__(self, message: str, key: str = "output") -> None:
        super().__init__(message)
        self.key = key


def _dtype(torch_module: Any, datatype: DataType) -> torch.dtype:
    dtype: torch.dtype = getattr(torch_module, _TORCH_TYPES[datatype])
    return dtype


def _describe_dtype(dtype: torch.dtype, by_dtype: dict[torch.dtype, DataType]) -> str:
    known = by_dtype.get(dtype)
    return f"{known.config_name} ({dtype})" if known is not None else str(dtype)


class _Signature:
    """The declared tensors and how to hold the model's results up against them; shared by the
    CPU and GPU engines and the load-time dry run."""

    def __init__(self, torch_module: Any, config: ModelConfig) -> None:
        self.inputs = config.inputs
        self.outputs = config.outputs
        self.batched = config.max_batch_size > 0
        self.input_dtypes = [_dtype(torch_module, t.datatype) for t in config.inputs]
        self.output_dtypes = [_dtype(torch_module, t.datatype) for t in config.outputs]
        self.by_dtype = {_dtype(torch_module, d): d for d in _TORCH_TYPES}
        self.tensor_type = torch_module.Tensor

    def ordered(self, result: Any) -> list[torch.Tensor]:
        """The model's result as one tensor per configured output, in config order: a lone
        tensor, a tuple or list in output order, or a dict keyed by the output names."""
        names = [t.name for t in self.outputs]
        if isinstance(result, self.tensor_type):
            found: list[Any] = [result]
        elif isinstance(result, dict):
            missing = [n for n in names if n not in result]
            if missing:
                raise OutputMismatch(
                    f"the model returned a dict without {', '.join(map(repr, missing))} (its keys: "
                    f"{', '.join(map(repr, result))}); expected the keys {', '.join(names)}"
                )
            found = [result[n] for n in names]
        elif isinstance(result, (tuple, list)):
            found = list(result)
        else:
            raise OutputMismatch(
                f"the model returned {type(result).__name__}; expected a tensor, a tuple or list "
                f"of tensors, or a dict of tensors keyed by the output names"
            )
        if len(found) != len(names):
            raise OutputMismatch(
                f"the model returned {len(found)} outputs; the config declares {len(names)} "
                f"({', '.join(names)})"
            )
        for j, value in enumerate(found):
            if not isinstance(value, self.tensor_type):
                raise OutputMismatch(
                    f"output '{names[j]}': the model returned {type(value).__name__}, expected "
                    f"a tensor", f"output[{j}]"
                )
        return found

    def check(self, j: int, tensor: torch.Tensor, rows: int, device: Any) -> None:
        """Output j against its declaration: dtype, and shape (with `rows` as the batch
        dimension when the model batches; -1 dims match any size); and on `device`, where the
        engine hands it on from."""
        spec = self.outputs[j]
        if tensor.device != device:
            raise OutputMismatch(
                f"output '{spec.name}': the model returned it on {tensor.device}, expected it "
                f"on {device} (where the instance runs)", f"output[{j}]"
            )
        expected_shape = ([rows] if self.batched else []) + list(spec.dims)
        shape = list(tensor.shape)
        shape_ok = len(shape) == len(expected_shape) and all(
            e == -1 or e == s for e, s in zip(expected_shape, shape, strict=True)
        )
        if tensor.dtype != self.output_dtypes[j] or not shape_ok:
            raise OutputMismatch(
                f"output '{spec.name}': expected {spec.datatype.config_name} of shape "
                f"{expected_shape} (-1 = any size), the model returned "
                f"{_describe_dtype(tensor.dtype, self.by_dtype)} of shape {shape}",
                f"output[{j}].data_type" if tensor.dtype != self.output_dtypes[j]
                else f"output[{j}].dims",
            )


class TorchCpuEngine:
    """One CPU instance (core.PythonEngine), called on its worker thread with the GIL held.
    PyTorch releases the GIL inside its operators, so the event loop keeps serving."""

    def __init__(
        self, torch_module: Any, model: torch.nn.Module, signature: _Signature, threads: int
    ) -> None:
        self._torch = torch_module
        self._model = model
        self._signature = signature
        self._threads = threads
        self._threads_set = False
        self._cpu = torch_module.device("cpu")
        self._bf16 = [t.datatype is DataType.BF16 for t in signature.inputs]
        self._bf16_out = [t.datatype is DataType.BF16 for t in signature.outputs]

    def execute(self, inputs: list[npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        torch_module = self._torch
        if self._threads and not self._threads_set:
            # With PyTorch's OpenMP pool the thread count belongs to the calling thread, and an
            # instance always runs on the same worker thread: set it there, once.
            torch_module.set_num_threads(self._threads)
            self._threads_set = True
        rows = inputs[0].shape[0] if inputs and self._signature.batched else 0
        with torch_module.inference_mode():
            tensors = []
            for array, bf16 in zip(inputs, self._bf16, strict=True):
                if not array.flags.writeable:
                    # PyTorch has no read-only tensors: a model writing into its input must not
                    # write into memory the core lent read-only (the core's batch buffers are
                    # writable, so this copy is not on the usual path).
                    array = array.copy()
                tensor = torch_module.from_numpy(array)  # shares the core's batch buffer
                # numpy has no bfloat16: the core hands BF16 as uint16 holding the same bits.
                tensors.append(tensor.view(torch_module.bfloat16) if bf16 else tensor)
            results = self._signature.ordered(self._model(*tensors))
            out = []
            for j, tensor in enumerate(results):
                self._signature.check(j, tensor, rows, self._cpu)
                tensor = tensor.contiguous()
                if self._bf16_out[j]:
                    tensor = tensor.view(torch_module.uint16)
                # A view of the result's memory: the array keeps the tensor alive.
                out.append(tensor.numpy())
        return out


class TorchGpuEngine:
    """One GPU instance (core.DeviceEngineImpl), called on its worker thread with the GIL held
    and its GPU's context current. Everything is enqueued on the instance's stream: the core's
    input copies before, the model, then the core's output copies after, so nothing here waits
    for the device."""

    def __init__(
        self, torch_module: Any, model: torch.nn.Module, signature: _Signature, gpu: int
    ) -> None:
        self._torch = torch_module
        self._model = model
        self._signature = signature
        self._device = torch_module.device("cuda", gpu)
        # The core's stream is the same handle for every batch of this instance: wrap it once.
        self._streams: dict[int, Any] = {}
        self._bf16 = [t.datatype is DataType.BF16 for t in signature.inputs]
        self._bf16_out = [t.datatype is DataType.BF16 for t in signature.outputs]

    def execute(
        self, stream: int, inputs: list[_core.DeviceArray], outputs: list[_core.DeviceOutput]
    ) -> None:
        torch_module = self._torch
        external = self._streams.get(stream)
        if external is None:
            external = torch_module.cuda.ExternalStream(stream, device=self._device)
            self._streams[stream] = external
        rows = inputs[0].shape[0] if inputs and self._signature.batched else 0
        with (
            torch_module.cuda.device(self._device),
            torch_module.cuda.stream(external),
            torch_module.inference_mode(),
        ):
            tensors = [
                _device_tensor(torch_module, array, bf16, stream, self._device)
                for array, bf16 in zip(inputs, self._bf16, strict=True)
            ]
            results = self._signature.ordered(self._model(*tensors))
            for j, (output, tensor) in enumerate(zip(outputs, results, strict=True)):
                self._signature.check(j, tensor, rows, self._device)
                if self._bf16_out[j]:
                    # The interface has no bfloat16 typestr: copy into the core's own buffer for
                    # this output, seen as its bits (one device copy, for BF16 outputs only).
                    target = output.allocate(list(tensor.shape))
                    _device_tensor(torch_module, target, True, stream, self._device).copy_(tensor)
                    continue
                # The caching allocator ties the result's memory to this stream, and the core
                # holds the tensor until its copy to host on the same stream is done.
                output.set(tensor.contiguous())


class _RawBits:
    """A BF16 DeviceArray seen through the CUDA array interface as 2-byte integers (the core
    gives BF16 no interface of its own, having no typestr for it)."""

    def __init__(self, array: _core.DeviceArray, stream: int) -> None:
        self.__cuda_array_interface__ = {
            "shape": tuple(array.shape), "typestr": "<u2", "data": (array.ptr, False),
            "strides": None, "version": 3, "stream": stream or None,
        }


def _device_tensor(
    torch_module: Any, array: _core.DeviceArray, bf16: bool, stream: int, device: Any
) -> Any:
    """The core's device buffer as a tensor, without a copy (CUDA array interface)."""
    if bf16:
        raw = torch_module.as_tensor(_RawBits(array, stream), device=device)
        return raw.view(torch_module.bfloat16)
    return torch_module.as_tensor(array, device=device)


def _import_torch(config: ModelConfig) -> Any:
    try:
        import torch as torch_module
    except ImportError as exc:
        raise ModelLoadError(
            f"{config.source}: backend: model '{config.name}' needs PyTorch, which "
            f"is not installed (pip install 'pyserver[pytorch]'): {exc}"
        ) from None
    return torch_module


def _model_file(config: ModelConfig, version_dir: Path) -> Path:
    """The configured file; with the default name (model.pt) absent, an exported model.pt2."""
    model_file = version_dir / (config.default_model_filename or "model.pt")
    if not model_file.is_file() and model_file.name == "model.pt":
        exported = version_dir / "model.pt2"
        if exported.is_file():
            return exported
    if not model_file.is_file():
        also = " (nor model.pt2)" if model_file.name == "model.pt" else ""
        raise ModelLoadError(f"{model_file}: model file not found{also}")
    return model_file


# warnings.catch_warnings swaps process-wide state: two loads on two threads must not interleave
# their filters. Loads are rare, so one at a time.
_LOAD_LOCK = threading.Lock()


def _open_model(torch_module: Any, model_file: Path, device: Any) -> torch.nn.Module:
    """Deserialize the model onto `device`: an exported program for .pt2, else TorchScript."""
    exported = model_file.suffix == ".pt2"
    kind = "an exported program (torch.export)" if exported else "a TorchScript file"
    try:
        with _LOAD_LOCK:
            if exported:
                program = torch_module.export.load(str(model_file))
                if device.type != "cpu":
                    from torch.export.passes import move_to_device_pass

                    program = move_to_device_pass(program, device)
                # An exported module has no train/eval switch (it raises); it is traced as is.
                model: torch.nn.Module = program.module()
                return model
            with warnings.catch_warnings():
                # TorchScript is deprecated in recent PyTorch, and warns so on every load; the
                # file is still the most common way PyTorch models are shipped for serving.
                warnings.filterwarnings(
                    "ignore", message=r"`torch\.jit\.load` is deprecated", category=DeprecationWarning
                )
                script: torch.nn.Module = torch_module.jit.load(
                    str(model_file), map_location=device
                )
            return script.eval()
    except Exception as exc:  # PyTorch raises many classes (RuntimeError, pickle, zip) for bad files
        raise ModelLoadError(f"{model_file}: PyTorch could not load it as {kind}: {exc}") from None


def _complete_from_export(torch_module: Any, config: ModelConfig, model_file: Path) -> ModelConfig:
    """Auto-complete for an exported program: its user inputs (named as the forward's
    arguments) and outputs (OUTPUT__0, ...: an exported graph's outputs have no names), with
    their datatypes and shapes (a symbolic dimension is -1)."""
    try:
        with _LOAD_LOCK:
            program = torch_module.export.load(str(model_file))
    except Exception as exc:
        raise ModelLoadError(
            f"{model_file}: PyTorch could not load it as an exported program: {exc}"
        ) from None
    by_dtype = {_dtype(torch_module, d): d for d in _TORCH_TYPES}
    nodes = {node.name: node for node in program.graph.nodes}
    output_node = next(n for n in program.graph.nodes if n.op == "output")
    produced = {getattr(arg, "name", None): arg for arg in output_node.args[0]}

    def spec(name: str, node: Any) -> TensorSpec:
        value: Any = node.meta.get("val") if node is not None else None
        datatype = by_dtype.get(value.dtype) if hasattr(value, "dtype") else None
        if value is None or datatype is None:
            raise ModelLoadError(
                f"{model_file}: tensor '{name}' has no datatype a v2 client can send "
                f"({getattr(value, 'dtype', 'unknown')}); declare the model's tensors in a "
                "config.toml"
            )
        dims = tuple(d if isinstance(d, int) else -1 for d in value.shape)
        return TensorSpec(name, datatype, dims)

    signature = program.graph_signature
    inputs = [spec(name, nodes.get(name)) for name in signature.user_inputs]
    outputs = [
        spec(f"OUTPUT__{i}", produced.get(name)) for i, name in enumerate(signature.user_outputs)
    ]
    config = auto_batching(config, [t.dims for t in (*inputs, *outputs)])
    if config.max_batch_size > 0:
        inputs = [TensorSpec(t.name, t.datatype, t.dims[1:]) for t in inputs]
        outputs = [TensorSpec(t.name, t.datatype, t.dims[1:]) for t in outputs]
    return config.with_tensors(tuple(inputs), tuple(outputs))


def _check_tensors(config: ModelConfig) -> None:
    source = config.source
    for kind, specs in (("input", config.inputs), ("output", config.outputs)):
        if not specs:
            raise ModelLoadError(
                f"{source}: {kind}: the pytorch backend needs every {kind} declared ([[{kind}]] "
                f"with name, data_type and dims): a PyTorch file does not declare its tensors"
            )
        for i, spec in enumerate(specs):
            if spec.datatype is DataType.BYTES:
                raise ModelLoadError(
                    f"{source}: {kind}[{i}].data_type: expected a numeric datatype (PyTorch has "
                    f"no string tensors), got TYPE_STRING"
                )


def _dry_run(
    torch_module: Any, model: torch.nn.Module, signature: _Signature, device: Any,
    config: ModelConfig, model_file: Path,
) -> None:
    """Run one batch of zeros (1 row; -1 dims as 1) and check what comes back."""
    source = config.source
    batch = [1] if signature.batched else []
    try:
        with torch_module.inference_mode():
            tensors = [
                torch_module.zeros(batch + [d if d > 0 else 1 for d in spec.dims], dtype=dtype,
                                   device=device)
                for spec, dtype in zip(signature.inputs, signature.input_dtypes, strict=True)
            ]
            results = signature.ordered(model(*tensors))
            for j, tensor in enumerate(results):
                signature.check(j, tensor, 1, device)
            if device.type == "cuda":
                torch_module.cuda.synchronize(device)
    except OutputMismatch as exc:
        raise ModelLoadError(
            f"{source}: {exc.key}: {exc} (a dry run of {model_file.name} at load on 1 row of "
            f"zeros)"
        ) from None
    except Exception as exc:
        shapes = ", ".join(
            f"{t.name} {batch + [d if d > 0 else 1 for d in t.dims]}" for t in signature.inputs
        )
        raise ModelLoadError(
            f"{model_file}: the model failed a dry run at load on zeros shaped as the config's inputs "
            f"({shapes}): {_summary(exc)} (set parameters.dry_run = false to skip it)"
        ) from None


def _summary(exc: BaseException) -> str:
    """One line for an error: TorchScript's carry both tracebacks, and the last line is the
    error itself ("RuntimeError: mat1 and mat2 shapes cannot be multiplied ...")."""
    lines = str(exc).strip().splitlines()
    if len(lines) > 1:
        return lines[-1].strip()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _parameters(config: ModelConfig) -> tuple[int, bool]:
    source = config.source
    params = config.parameters
    threads_text = params.get("intra_op_threads", "0")
    try:
        threads = int(threads_text)
        if threads < 0:
            raise ValueError
    except ValueError:
        raise ModelLoadError(
            f"{source}: parameters.intra_op_threads: expected a non-negative integer, got "
            f"{threads_text!r}"
        ) from None
    dry_run_text = params.get("dry_run", "true").lower()
    if dry_run_text not in ("true", "false"):
        raise ModelLoadError(
            f"{source}: parameters.dry_run: expected true or false, got {params['dry_run']!r}"
        )
    return threads, dry_run_text == "true"


def _check_gpus(torch_module: Any, config: ModelConfig, where: Sequence[Placement]) -> None:
    source = config.source
    gpus = sorted({p.gpu for p in where if p.gpu is not None})
    if not gpus:
        return
    if not torch_module.cuda.is_available():
        raise ModelLoadError(
            f"{source}: instance_group: model '{config.name}' has KIND_GPU instances, but this "
            f"PyTorch ({torch_module.__version__}) cannot use CUDA; install a CUDA build of "
            f"PyTorch or use KIND_CPU"
        )
    count = torch_module.cuda.device_count()
    if gpus[-1] >= count:
        raise ModelLoadError(
            f"{source}: instance_group: GPU {gpus[-1]} is visible to the CUDA driver but not to "
            f"PyTorch, which sees {count} GPU(s)"
        )


def load(config: ModelConfig, version_dir: Path) -> LoadedModel:
    torch_module = _import_torch(config)
    source = config.source
    # (1) the model file, and where the instances go (KIND_AUTO: the GPU when both the core's
    # driver and this PyTorch can use one; torch first, so a CPU build never asks the driver).
    model_file = _model_file(config, version_dir)
    if config.auto_complete and not config.inputs and model_file.suffix == ".pt2":
        config = _complete_from_export(torch_module, config, model_file)
    threads, dry_run = _parameters(config)
    auto = "KIND_GPU" if torch_module.cuda.is_available() and gpu_available() else "KIND_CPU"
    where = placements(config, auto=auto)
    _check_gpus(torch_module, config, where)
    # (2) tensors: from the config alone, checked by a dry run on each device's copy.
    _check_tensors(config)
    signature = _Signature(torch_module, config)
    models: dict[int | None, torch.nn.Module] = {}
    for placement in where:
        if placement.gpu in models:
            continue
        device = (
            torch_module.device("cpu")
            if placement.gpu is None
            else torch_module.device("cuda", placement.gpu)
        )
        model = _open_model(torch_module, model_file, device)
        if dry_run:
            _dry_run(torch_module, model, signature, device, config, model_file)
        models[placement.gpu] = model
    # (3) one engine per instance, sharing its device's copy of the model.
    engines: list[_core.Engine] = []
    for placement in where:
        model = models[placement.gpu]
        if placement.gpu is None:
            engines.append(
                _core.python_engine(TorchCpuEngine(torch_module, model, signature, threads))
            )
            continue
        try:
            engines.append(
                _core.device_engine(
                    TorchGpuEngine(torch_module, model, signature, placement.gpu), placement.gpu
                )
            )
        except (RuntimeError, ValueError) as exc:  # CudaUnavailable/CudaError, a bad ordinal
            raise ModelLoadError(
                f"{source}: instance_group: GPU {placement.gpu}: {exc}"
            ) from None
    return LoadedModel(config, engines)


__all__ = ["OutputMismatch", "TorchCpuEngine", "TorchGpuEngine", "load"]

