"""The model repository: a folder of models, each with config.toml and numeric version folders.

Loading one model never stops another: a model whose config or files are wrong is recorded with
the message that says why, and the rest of the repository loads and serves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pyserver import _core, backends
from pyserver.completions import CompletionRouter
from pyserver.config import load_config, model_versions
from pyserver.errors import ModelLoadError, NotFound, ServerError
from pyserver.model import Model

log = logging.getLogger("pyserver.repository")


@dataclass(frozen=True)
class LoadFailure:
    name: str
    reason: str


class ModelRepository:
    """Loaded models by name and version. Lookups happen on the loop thread; loading may run in
    a worker thread before the server reports ready."""

    def __init__(
        self, root: Path, router: CompletionRouter, pinned_memory_pool_bytes: int | None = None
    ) -> None:
        self.root = root
        self._router = router
        # None: the core's default (256 MiB, Triton's); the pool is locked only when a GPU
        # model runs its first batch.
        self._pinned_memory_pool_bytes = pinned_memory_pool_bytes
        self._models: dict[str, dict[int, Model]] = {}
        self._latest: dict[str, Model] = {}
        self.failures: dict[str, LoadFailure] = {}

    def load_all(self) -> None:
        """Load every model folder under the root (a folder holding config.toml)."""
        if not self.root.is_dir():
            raise ServerError(f"model repository {self.root} is not a directory")
        if self._pinned_memory_pool_bytes is not None:
            _core.configure_pinned_memory(self._pinned_memory_pool_bytes)
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if not (folder / "config.toml").is_file():
                log.warning("skipping %s: no config.toml", folder)
                continue
            try:
                self._load_model(folder)
            except ModelLoadError as exc:
                self.failures[folder.name] = LoadFailure(folder.name, str(exc))
                log.error("model %s failed to load: %s", folder.name, exc)
            except Exception as exc:  # a backend's or the core's own error: this model only
                reason = f"{folder}: {type(exc).__name__}: {exc}"
                self.failures[folder.name] = LoadFailure(folder.name, reason)
                log.exception("model %s failed to load", folder.name)
            else:
                log.info("model %s loaded: versions %s", folder.name,
                         sorted(self._models[folder.name]))

    def _load_model(self, folder: Path) -> None:
        config = load_config(folder)
        versions = model_versions(config)
        if not versions:
            raise ModelLoadError(f"{folder}: no numeric version folder (expected e.g. {folder}/1/)")
        loaded: dict[int, Model] = {}
        try:
            for version in versions:
                result = backends.load(config, folder / str(version))
                loaded[version] = Model(
                    result.config, version, result.engines, self._router, result.check_inputs
                )
        except BaseException:
            for model in loaded.values():
                model.stop()
            raise
        self._models[config.name] = loaded
        self._latest[config.name] = loaded[max(loaded)]

    def get(self, name: str, version: str | None = None) -> Model:
        """The model version a request names (the latest when none); NotFound otherwise."""
        if version is None:
            model = self._latest.get(name)
            if model is None:
                raise NotFound(self._unknown(name))
            return model
        versions = self._models.get(name)
        if versions is None:
            raise NotFound(self._unknown(name))
        model = versions.get(int(version)) if version.isdigit() else None
        if model is None:
            raise NotFound(
                f"model '{name}' has no version '{version}' (loaded: "
                f"{', '.join(str(v) for v in sorted(versions))})"
            )
        return model

    def _unknown(self, name: str) -> str:
        failure = self.failures.get(name)
        if failure is not None:
            return f"model '{name}' is not available: it failed to load: {failure.reason}"
        return f"unknown model '{name}'"

    def models(self) -> list[Model]:
        # list() copies in one step under the GIL: loading may add models from another thread.
        return [m for versions in list(self._models.values()) for m in versions.values()]

    def versions(self, name: str) -> list[int]:
        return sorted(self._models.get(name, {}))

    def stop(self) -> None:
        for model in self.models():
            model.stop()
