"""Engines, one module per kind. The contract every backend module keeps:

    load(config: ModelConfig, version_dir: Path) -> LoadedModel

in three steps: (1) find and open the model file in `version_dir`; (2) read the tensors it
declares, fill in what the config left out and check what it gave (a mismatch raises
ModelLoadError naming the file, the key and what was expected); (3) make one core engine per
instance. The gateway never sees a backend: adding TensorRT or PyTorch is a new module here and a
line in _BACKENDS.

Backend modules are imported only when a model asks for them, so an engine library that is not
installed is a clear load error for that model alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyserver import _core
from pyserver.config import DynamicBatching, ModelConfig
from pyserver.errors import ModelLoadError
from pyserver.types import TensorSpec

# (shape, bytes-like) per model input, in the model's input order
Inputs = Sequence[tuple[Sequence[int], Any]]


@dataclass(frozen=True)
class LoadedModel:
    """A backend's answer: the config with every tensor filled in, one engine per instance, and
    optionally a per-request check for what only this engine refuses (raising InvalidRequest),
    run before the request joins a batch, so that it fails alone."""

    config: ModelConfig
    engines: list[_core.Engine]
    check_inputs: Callable[[Inputs], None] | None = None


_BACKENDS = {
    "identity": "pyserver.backends.identity",
    "onnxruntime": "pyserver.backends.onnxruntime",
    "tensorrt": "pyserver.backends.tensorrt",
    "pytorch": "pyserver.backends.pytorch",
}


def load(config: ModelConfig, version_dir: Path) -> LoadedModel:
    """Load one version of a model with the backend its config names."""
    module_name = _BACKENDS.get(config.backend)
    if module_name is None:
        known = ", ".join(sorted(_BACKENDS))
        raise ModelLoadError(
            f"{config.source}: backend: '{config.backend}' is not available in this "
            f"build (available: {known})"
        )
    module = importlib.import_module(module_name)
    loaded: LoadedModel = module.load(config, version_dir)
    return loaded


def auto_batching(config: ModelConfig, shapes: Sequence[Sequence[int]]) -> ModelConfig:
    """Auto-complete (a model without a configuration file): the model batches when every input
    and output has a dynamic first dimension (`shapes`: the model file's full shapes, -1 for a
    dynamic dimension); then max_batch_size is the default (--backend-config=
    default-max-batch-size) and dynamic batching is on. Other configs come back as they are."""
    if not config.auto_complete:
        return config
    if shapes and all(len(shape) > 0 and shape[0] == -1 for shape in shapes):
        return config.with_batching(
            config.max_batch_size, config.dynamic_batching or DynamicBatching()
        )
    return config.with_batching(0, None)


def cpu_instance_count(config: ModelConfig) -> int:
    """Instances for a CPU-only backend: the sum of the instance groups' counts (1 when none).
    A KIND_GPU group is a load error here: GPU placement belongs to the GPU backends."""
    total = 0
    for i, group in enumerate(config.instance_group):
        if group.kind == "KIND_GPU":
            raise ModelLoadError(
                f"{config.source}: instance_group[{i}].kind: backend "
                f"'{config.backend}' runs on the CPU; expected KIND_CPU or KIND_AUTO, got KIND_GPU"
            )
        total += group.count
    return total or 1


def reconcile_tensors(
    kind: str,
    declared: tuple[TensorSpec, ...],
    actual: tuple[TensorSpec, ...],
    source: str,
    *,
    owner: str = "model",
    require_all: bool = False,
) -> tuple[TensorSpec, ...]:
    """Step (2) for a model file that declares its tensors: the config's `kind` ("input" or
    "output") tensors checked against the file's (`owner` says what declares them in messages);
    when the config declares none, the file's. With `require_all` the config must name every one
    of them (an engine that reads or writes each)."""
    if not declared:
        return actual
    by_name = {t.name: t for t in actual}
    for i, spec in enumerate(declared):
        real = by_name.get(spec.name)
        if real is None:
            raise ModelLoadError(
                f"{source}: {kind}[{i}].name: the {owner} has no {kind} '{spec.name}'; expected "
                f"one of {', '.join(sorted(by_name))}"
            )
        if real.datatype is not spec.datatype:
            raise ModelLoadError(
                f"{source}: {kind}[{i}].data_type: expected {real.datatype.config_name} (as the "
                f"{owner} declares '{spec.name}'), got {spec.datatype.config_name}"
            )
        if len(real.dims) != len(spec.dims) or any(
            r != -1 and s != r for r, s in zip(real.dims, spec.dims, strict=True)
        ):
            raise ModelLoadError(
                f"{source}: {kind}[{i}].dims: expected dims compatible with {list(real.dims)} "
                f"(the {owner}'s '{spec.name}' without the batch dimension), got {list(spec.dims)}"
            )
    missing = sorted(set(by_name) - {t.name for t in declared})
    if missing and require_all:
        raise ModelLoadError(
            f"{source}: {kind}: the {owner} also has {kind}s {', '.join(missing)}; declare every "
            f"one (it reads or writes each) or leave [[{kind}]] out"
        )
    return declared


@dataclass(frozen=True)
class Placement:
    """Where one instance runs: on the CPU (gpu is None) or on GPU `gpu` (a CUDA ordinal)."""

    gpu: int | None = None

    @property
    def kind(self) -> str:
        return "KIND_CPU" if self.gpu is None else "KIND_GPU"


def visible_gpus(config: ModelConfig) -> list[int]:
    """The CUDA ordinals the driver sees. A load error naming the model when there is no driver
    or no GPU: a GPU model cannot load on this machine."""
    driver = _core.cuda_driver()
    if not driver["available"]:
        raise ModelLoadError(
            f"{config.source}: model '{config.name}' needs a GPU: no CUDA driver "
            f"was found ({driver['error']})"
        )
    return [int(d["index"]) for d in driver["devices"]]


def placements(config: ModelConfig, auto: str) -> list[Placement]:
    """One Placement per instance, from the model's instance groups, as Triton places them:
    KIND_CPU groups give `count` CPU instances; KIND_GPU groups give `count` instances on each
    GPU in `gpus`, or on every visible GPU when `gpus` is empty. KIND_AUTO is KIND_GPU when
    `auto` is "KIND_GPU" (and else KIND_CPU). A GPU the driver does not have is a load error."""
    source = config.source
    out: list[Placement] = []
    visible: list[int] | None = None  # asked of the driver once, and only for GPU groups
    for i, group in enumerate(config.instance_group):
        kind = auto if group.kind == "KIND_AUTO" else group.kind
        if kind == "KIND_CPU":
            out.extend(Placement() for _ in range(group.count))
            continue
        if visible is None:
            visible = visible_gpus(config)
        if not visible:
            raise ModelLoadError(f"{source}: instance_group[{i}]: the CUDA driver sees no GPU")
        for gpu in group.gpus or tuple(visible):
            if gpu not in visible:
                raise ModelLoadError(
                    f"{source}: instance_group[{i}].gpus: GPU {gpu} is not visible (visible: "
                    f"{', '.join(map(str, visible))})"
                )
            out.extend(Placement(gpu) for _ in range(group.count))
    return out or [Placement()]


def gpu_available() -> bool:
    """Whether the CUDA driver loads and sees at least one GPU (for KIND_AUTO)."""
    driver = _core.cuda_driver()
    return bool(driver["available"] and driver["devices"])
