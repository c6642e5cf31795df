"""The transport-agnostic data plane: what every endpoint means, whoever carries it.

HTTP and gRPC are thin adapters over this class: they turn their wire format into calls here and
the answers back into their wire format, and nothing else. Every step of an inference that does
not depend on the wire lives here, in this order:

1. `admit`: look the model version up (404 unknown, 503 while the repository loads or the model
   is not ready), and refuse at once when its queue is full (503, counted REJECTED), before the
   transport reads the request's body;
2. `infer`: decode the request against the model's signature with the transport's decoder (a
   malformed request is counted as a failure of that model, OTHER), run the engine's own
   per-request checks, queue it on the model's scheduler and wait for its outputs;
3. the answer is an `InferResponse`: the outputs the request asked for, with their shapes and
   zero-copy views of the batch's output buffer, which the transport encodes.

Methods return plain objects and raise pyserver.errors exceptions, each carrying its status.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pyserver import __version__
from pyserver.completions import from_status
from pyserver.config import to_triton
from pyserver.errors import (
    InvalidRequest,
    NotFound,
    QueueFull,
    ServerError,
    Unavailable,
)
from pyserver.lifecycle import ModelManager
from pyserver.logs import LOGS
from pyserver.model import Model
from pyserver.protocol.codec import InferRequest
from pyserver.types import ModelSignature

# Triton's extension names, as perf_analyzer and tritonclient read them from GET /v2.
EXTENSIONS = (
    "binary_tensor_data", "model_configuration", "statistics", "logging", "model_repository",
    "model_repository(unload_dependents)",
)

# A transport's decoder: its wire request, checked against the model's signature.
Decoder = Callable[[ModelSignature], InferRequest]
# How an inference ends: (the response, None) or (None, the error).
Finished = Callable[["InferResponse | None", "ServerError | None"], None]


@dataclass(slots=True)
class Admission:
    """One inference admitted to a model version: the version it will run on (fixed at
    admission, so a reload that switches versions meanwhile does not move it) and when it
    arrived (for the failure statistics). A context manager: the version counts the request as
    accepted until the `with` block ends, so that it finishes it before it unloads."""

    model: Model
    started_ns: int
    released: bool = False

    @property
    def signature(self) -> ModelSignature:
        return self.model.signature

    def fail(self) -> None:
        """Count this request as failed before it reached the queue (malformed: OTHER)."""
        self.model.record_failure(self.started_ns)

    def release(self) -> None:
        """The request has been answered (or abandoned): the version stops counting it."""
        if not self.released:
            self.released = True
            self.model.release()

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


@dataclass(slots=True)
class InferResponse:
    """A finished inference: the request as decoded and one (shape, flat uint8 view) per model
    output, in the signature's order (the request's `outputs` say which go back, and how)."""

    model: Model
    request: InferRequest
    results: list[tuple[tuple[int, ...], Any]]

    @property
    def signature(self) -> ModelSignature:
        return self.model.signature

    @property
    def model_version(self) -> str:
        return self.model.version_str


class ControlMode(enum.StrEnum):
    """Triton's --model-control-mode."""

    NONE = "none"  # every model at start; the repository API's load and unload are refused
    POLL = "poll"  # every model at start, then the folder is rescanned
    EXPLICIT = "explicit"  # --load-model at start; the rest through the repository API


class DataPlane:
    def __init__(
        self, models: ModelManager, mode: ControlMode = ControlMode.NONE,
        strict_readiness: bool = True,
    ) -> None:
        self.models = models
        self.mode = mode
        self.strict_readiness = strict_readiness
        self._ready = False
        self._shutting_down = False

    # health
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        if not self._ready or self._shutting_down:
            return False
        return self.models.ready() if self.strict_readiness else True

    def set_ready(self, ready: bool) -> None:
        self._ready = ready

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    # metadata
    def server_metadata(self) -> dict[str, Any]:
        return {"name": "pyserver", "version": __version__, "extensions": list(EXTENSIONS)}

    def model(self, name: str, version: str | None = None) -> Model:
        """The model version a request names (the latest when none). NotFound for an unknown
        one; Unavailable while the repository is still loading (it may yet appear)."""
        try:
            return self.models.get(name, version)
        except NotFound:
            if not self._ready:
                raise Unavailable(
                    f"model '{name}' is not available yet: the server is still loading its "
                    "model repository"
                ) from None
            raise

    def model_ready(self, name: str, version: str | None = None) -> bool:
        return self.models.get(name, version).ready

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        model = self.models.get(name, version)
        batch = [-1] if model.config.max_batch_size > 0 else []
        return {
            "name": model.name,
            "versions": [str(v) for v in self.models.versions(model.name)],
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
        return to_triton(self.models.get(name, version).config)

    def model_stats(self, name: str | None = None, version: str | None = None) -> dict[str, Any]:
        """Triton's statistics extension: one entry per model version asked for."""
        if name is None:
            models = self.models.models()
        elif version is None:
            models = [self.models.get(name, v) for v in map(str, self.models.versions(name))]
            if not models:
                models = [self.models.get(name)]  # raises NotFound with the reason
        else:
            models = [self.models.get(name, version)]
        return {"model_stats": [_model_stats(m) for m in models]}

    def model_monitoring(self, name: str, version: str | None = None) -> dict[str, Any]:
        """pyserver's monitoring of one version (GET .../monitoring): its window of inputs and
        outputs against the reference, drift, class shares (pyserver/monitoring.py). NotFound
        when the version's configuration monitors no tensor."""
        model = self.models.get(name, version)
        if model.monitor is None:
            raise NotFound(
                f"model '{model.name}' version {model.version} has no monitoring: its "
                "configuration has no [monitoring] table with [[monitoring.input]] or "
                "[[monitoring.output]] entries"
            )
        return {"model": model.name, "version": model.version_str} | model.monitor.report()

    # logging (Triton's logging extension)
    def log_settings(self) -> dict[str, Any]:
        return LOGS.as_dict()

    def update_log_settings(self, changes: object) -> dict[str, Any]:
        """Change the settings the body names; InvalidRequest (nothing changed) if any is bad."""
        LOGS.update(changes)
        return LOGS.as_dict()

    # model repository (Triton's model_repository extension)
    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Every model the repository holds: {"name", "version"?, "state"?, "reason"?}."""
        return self.models.index(ready_only)

    async def load_model(
        self,
        name: str,
        config: str | None = None,
        files: Mapping[str, bytes] | None = None,
        version: str | None = None,
    ) -> None:
        """Load or reload `name` (its config overridden by `config`, a model config as JSON;
        `files` maps "<version>/<file>" to contents and needs `config`; `version` loads
        just that version beside those serving). Returns when the model is READY; raises with
        the reason otherwise."""
        self._check_control("load")
        await self.models.load(name, config_json=config, files=files,
                               version=_version_number(version))

    async def unload_model(
        self, name: str, unload_dependents: bool = False, version: str | None = None
    ) -> None:
        """Unload `name` (or just `version`): it stops taking requests, finishes what it
        accepted, then frees everything it held. pyserver has no ensembles, so no model has
        dependents and `unload_dependents` changes nothing."""
        self._check_control("unload")
        await self.models.unload(name, _version_number(version))

    def _check_control(self, action: str) -> None:
        if self.mode is not ControlMode.EXPLICIT:
            raise InvalidRequest(
                f"cannot {action} a model: the server runs with --model-control-mode "
                f"{self.mode}; the repository API loads and unloads models only with "
                "--model-control-mode explicit"
            )
        if self._shutting_down:
            raise Unavailable("the server is shutting down")

    # inference
    def admit(self, name: str, version: str | None = None) -> Admission:
        """Step 1: the model version that will run the request, or the error that refuses it
        before its body is read."""
        started = time.monotonic_ns()
        if self._shutting_down:
            raise Unavailable("the server is shutting down")
        model = self.model(name, version)
        if model.queue_full():
            # Backpressure: refuse before the body is read, so that a full queue does not turn
            # into buffered request bodies. The core checks again (by priority level) on submit.
            model.record_failure(started, rejected=True)
            raise QueueFull(
                f"model '{model.name}' version {model.version}: the queue is full; retry later"
            )
        model.acquire()
        return Admission(model, started)

    # shutdown
    async def shutdown(self, timeout_s: float) -> bool:
        """Stop admitting (readiness false, new requests 503 "server is shutting down"), wait
        up to `timeout_s` for every admitted request to be answered, then stop every model
        (what is still queued fails with 503). True when everything was answered in time."""
        self._shutting_down = True
        deadline = time.monotonic() + timeout_s
        while self.models.inflight() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        drained = not self.models.inflight()
        await self.models.stop()
        return drained

    def start_infer(self, admission: Admission, decode: Decoder, done: Finished) -> int:
        """Steps 2 and 3: decode with the transport's decoder (errors raise here, counted as
        failures), queue; `done(response, None)` or `done(None, error)` is called on the loop
        thread when the outputs are in. Returns the id `cancel_infer` takes."""
        model = admission.model
        try:
            request = decode(model.signature)
            model.check_inputs(request)
        except Exception:
            admission.fail()
            raise

        def finished(code: int, payload: Any) -> None:
            if code == 0:
                done(InferResponse(model, request, payload), None)
            else:
                done(None, from_status(code, payload))

        return model.submit(request, finished)

    def cancel_infer(self, admission: Admission, request_id: int) -> None:
        """The client went away: a queued request leaves the queue (counted CANCELED), a
        running one finishes unheard."""
        admission.model.cancel(request_id)

    async def infer(self, admission: Admission, decode: Decoder) -> InferResponse:
        """`start_infer`, awaited: cancelling the awaiting task cancels the request."""
        future: asyncio.Future[InferResponse] = asyncio.get_running_loop().create_future()

        def done(response: InferResponse | None, error: ServerError | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                assert response is not None
                future.set_result(response)

        request_id = self.start_infer(admission, decode, done)
        try:
            return await future
        except asyncio.CancelledError:
            self.cancel_infer(admission, request_id)
            raise


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


def _version_number(version: str | None) -> int | None:
    if version is None or version == "":
        return None
    if not (version.isascii() and version.isdigit()) or version.startswith("0"):
        raise InvalidRequest(f"version must be a positive integer such as \"2\", got {version!r}")
    return int(version)
