"""The transport-agnostic data plane: what every endpoint means, whoever carries it.

HTTP (and later gRPC) call these methods; they return plain objects and raise pyserver.errors.
"""

from __future__ import annotations

from typing import Any

from pyserver import __version__
from pyserver.errors import NotFound, Unavailable
from pyserver.logs import LOGS
from pyserver.model import Model
from pyserver.protocol.codec import InferRequest
from pyserver.repository import ModelRepository

# Triton's extension names, as perf_analyzer and tritonclient read them from GET /v2.
EXTENSIONS = ("binary_tensor_data", "model_configuration", "statistics", "logging")


class DataPlane:
    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository
        self._ready = False

    # health
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self._ready and all(m.ready for m in self.repository.models())

    def set_ready(self, ready: bool) -> None:
        self._ready = ready

    # metadata
    def server_metadata(self) -> dict[str, Any]:
        return {"name": "pyserver", "version": __version__, "extensions": list(EXTENSIONS)}

    def model(self, name: str, version: str | None = None) -> Model:
        try:
            return self.repository.get(name, version)
        except NotFound:
            if not self._ready:
                raise Unavailable(
                    f"model '{name}' is not available yet: the server is still loading its "
                    "model repository"
                ) from None
            raise

    def model_ready(self, name: str, version: str | None = None) -> bool:
        return self.repository.get(name, version).ready

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        model = self.repository.get(name, version)
        batch = [-1] if model.config.max_batch_size > 0 else []
        return {
            "name": model.name,
            "versions": [str(v) for v in self.repository.versions(model.name)],
            "platform": model.config.platform,
            "inputs": [
                {"name": t.name, "datatype": t.datatype.name, "shape": batch + list(t.dims)}
                for t in model.config.inputs
            ],
            "outputs": [
                {"name": t.name, "datatype": t.datatype.name, "shape": batch + list(t.dims)}
                for t in model.config.outputs
            ],
        }

    def model_config(self, name: str, version: str | None = None) -> dict[str, Any]:
        return self.repository.get(name, version).config.to_triton()

    def model_stats(self, name: str | None = None, version: str | None = None) -> dict[str, Any]:
        """Triton's statistics extension: one entry per model version asked for."""
        if name is None:
            models = self.repository.models()
        elif version is None:
            models = [self.repository.get(name, v) for v in map(str, self.repository.versions(name))]
            if not models:
                models = [self.repository.get(name)]  # raises NotFound with the reason
        else:
            models = [self.repository.get(name, version)]
        return {"model_stats": [_model_stats(m) for m in models]}

    # logging (Triton's logging extension)
    def log_settings(self) -> dict[str, Any]:
        return LOGS.as_dict()

    def update_log_settings(self, changes: object) -> dict[str, Any]:
        """Change the settings the body names; InvalidRequest (nothing changed) if any is bad."""
        LOGS.update(changes)
        return LOGS.as_dict()

    # inference
    async def infer(self, model: Model, request: InferRequest) -> list[tuple[tuple[int, ...], Any]]:
        return await model.infer(request)


def _model_stats(model: Model) -> dict[str, Any]:
    core = model.stats()
    return {
        "name": model.name,
        "version": model.version_str,
        "last_inference": core["last_inference"],
        "inference_count": core["inference_count"],
        "execution_count": core["execution_count"],
        "inference_stats": {
            key: core[key]
            for key in (
                "success", "fail", "queue", "compute_input", "compute_infer", "compute_output"
            )
        }
        | {"cache_hit": {"count": 0, "ns": 0}, "cache_miss": {"count": 0, "ns": 0}},
        "response_stats": {},
        "batch_stats": core["batch_stats"],
        "memory_usage": model.memory_usage(),
        # pyserver's own: where each instance runs (Triton's clients ignore unknown fields)
        "instances": model.instances(),
    }

