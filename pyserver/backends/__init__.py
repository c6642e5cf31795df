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
from pyserver.config import ModelConfig
from pyserver.errors import ModelLoadError

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
}


def load(config: ModelConfig, version_dir: Path) -> LoadedModel:
    """Load one version of a model with the backend its config names."""
    module_name = _BACKENDS.get(config.backend)
    if module_name is None:
        known = ", ".join(sorted(_BACKENDS))
        raise ModelLoadError(
            f"{config.path / 'config.toml'}: backend: '{config.backend}' is not available in this "
            f"build (available: {known})"
        )
    module = importlib.import_module(module_name)
    loaded: LoadedModel = module.load(config, version_dir)
    return loaded


def cpu_instance_count(config: ModelConfig) -> int:
    """Instances for a CPU-only backend: the sum of the instance groups' counts (1 when none).
    A KIND_GPU group is a load error here: GPU placement belongs to the GPU backends."""
    total = 0
    for i, group in enumerate(config.instance_group):
        if group.kind == "KIND_GPU":
            raise ModelLoadError(
                f"{config.path / 'config.toml'}: instance_group[{i}].kind: backend "
                f"'{config.backend}' runs on the CPU; expected KIND_CPU or KIND_AUTO, got KIND_GPU"
            )
        total += group.count
    return total or 1
