"""A loaded model version: its configuration, its core scheduler, its state and what it has
accepted.

A version moves LOADING -> READY -> UNLOADING -> UNAVAILABLE (pyserver/lifecycle.py drives it).
Requests are admitted only while it is READY; each admitted request is counted in `inflight`
until its answer is written, so that an unloading version can finish everything it accepted
(queued, running, or still having its body read) before it stops and frees its engines.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from typing import Any

from pyserver import _core
from pyserver.completions import CompletionRouter, Done
from pyserver.config import ModelConfig, QueuePolicy
from pyserver.errors import Unavailable
from pyserver.monitoring import ModelMonitor, core_options
from pyserver.payload_log import PayloadLog
from pyserver.protocol.codec import InferRequest
from pyserver.types import ModelSignature


class ModelState(enum.StrEnum):
    """Triton's model states, as the repository index reports them."""

    UNKNOWN = "UNKNOWN"
    LOADING = "LOADING"  # built, warming up: takes no request yet
    READY = "READY"
    UNLOADING = "UNLOADING"  # takes no new request; finishing what it accepted
    UNAVAILABLE = "UNAVAILABLE"  # stopped, or failed to load


def scheduler_options(config: ModelConfig) -> _core.SchedulerOptions:
    """The core's options for a model: batching policy and tensor specs, from its config."""
    options = _core.SchedulerOptions()
    options.model_name = config.name
    options.max_batch_size = config.max_batch_size
    batching = config.dynamic_batching
    if batching is not None:
        options.preferred_batch_sizes = list(batching.preferred_batch_size)
        options.max_queue_delay_us = batching.max_queue_delay_microseconds
        options.preserve_ordering = batching.preserve_ordering
        options.priority_levels = batching.priority_levels
        options.default_priority_level = batching.default_priority_level
        options.default_queue_policy = _queue_policy(batching.default_queue_policy)
        options.priority_queue_policy = {
            level: _queue_policy(policy) for level, policy in batching.priority_queue_policy
        }
        options.latency_target_us = batching.latency_target_microseconds
    else:
        # Without a [dynamic_batching] table each request runs alone, as in Triton.
        options.dynamic_batching = False
    options.inputs = [(t.name, int(t.datatype), list(t.dims)) for t in config.inputs]
    options.outputs = [(t.name, int(t.datatype), list(t.dims)) for t in config.outputs]
    monitor = core_options(config)  # ModelLoadError when [monitoring] does not fit the tensors
    if monitor is not None:
        options.monitor = monitor
    return options


def _queue_policy(policy: QueuePolicy) -> _core.QueuePolicy:
    core = _core.QueuePolicy()
    core.timeout_action = policy.timeout_action
    core.default_timeout_us = policy.default_timeout_microseconds
    core.allow_timeout_override = policy.allow_timeout_override
    core.max_queue_size = policy.max_queue_size
    return core


def _logged(payload_log: PayloadLog, request: InferRequest, done: Done) -> Done:
    """`done`, after the payload log has seen a successful request and its outputs."""

    def logged(code: int, payload: Any) -> None:
        if code == 0:
            payload_log.observe(request, payload)
        done(code, payload)

    return logged


class Model:
    """One version of one model, ready to take requests through its scheduler."""

    def __init__(
        self,
        config: ModelConfig,
        version: int,
        engines: list[_core.Engine],
        router: CompletionRouter,
        check_inputs: Callable[[Any], None] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.version = version
        self.version_str = str(version)
        self.signature: ModelSignature = config.signature()
        options = scheduler_options(config)
        self._router = router
        self._check_inputs = check_inputs
        self._scheduler = _core.Scheduler(options, engines, router.queue)
        self.engines = engines
        # [monitoring]: the core measures; reference samples are read here (a load thread).
        self.monitor: ModelMonitor | None = None
        self.payload_log: PayloadLog | None = None
        monitoring = config.monitoring
        if monitoring is not None:
            try:
                if options.monitor.tensors:
                    self.monitor = ModelMonitor(config, self._scheduler)
                if monitoring.log_payloads is not None:
                    self.payload_log = PayloadLog(monitoring.log_payloads, self.signature,
                                                  self.version_str)
            except BaseException:
                self._scheduler.stop()
                raise
        # Only a model with a bounded queue can be full: others skip the check per request.
        batching = config.dynamic_batching
        self._bounded = batching is not None and all(
            policy.max_queue_size > 0 for policy in batching.level_policies()
        )
        self._state = ModelState.LOADING
        # What the lifecycle compares to decide whether a reload changes this version.
        self.fingerprint: object = None
        # Requests admitted and not yet answered; `_drained` is set when it falls to 0 while
        # the version unloads (both touched on the event loop thread only).
        self.inflight = 0
        self._drained: asyncio.Event | None = None

    @property
    def state(self) -> ModelState:
        return self._state

    @state.setter
    def state(self, state: ModelState) -> None:
        # The monitor counts from READY on: warmup requests, which run before, are not counted.
        if (state is ModelState.READY and self._state is not ModelState.READY
                and self.monitor is not None):
            self.monitor.start()
        self._state = state

    @property
    def ready(self) -> bool:
        return self._state is ModelState.READY

    def check_inputs(self, request: InferRequest) -> None:
        """The engine's own per-request checks (InvalidRequest), run before the request joins a
        batch so that it fails alone."""
        if self._check_inputs is not None:
            self._check_inputs(request.inputs)

    def submit(self, request: InferRequest, done: Done) -> int:
        """Queue one decoded, checked request; `done(code, payload)` is called on the loop
        thread with its outputs (one (shape, uint8 view) per model output) or its error.
        Returns the id `cancel` takes."""
        if self._state is not ModelState.READY:
            raise Unavailable(f"model '{self.name}' version {self.version} is not ready")
        if self.payload_log is not None:
            done = _logged(self.payload_log, request, done)
        parameters = request.parameters
        # The codec has checked both are non-negative integers; the queue policy decides what
        # they mean (the core ignores a priority when the model has no levels).
        return self._router.submit(
            self._scheduler, request.inputs, parameters.get("priority", 0),
            parameters.get("timeout", 0), done,
        )

    def cancel(self, request_id: int) -> None:
        """The client went away (see CompletionRouter.cancel)."""
        self._router.cancel(self._scheduler, request_id)

    def queue_full(self) -> bool:
        """True when the core would refuse any request now because the queue is full."""
        return self._bounded and self._scheduler.queue_full()

    def record_failure(self, started_ns: int, rejected: bool = False) -> None:
        """Count a request that failed before reaching the queue (it never reached the core):
        a malformed one, or (rejected) one refused because the queue was full."""
        self._scheduler.record_failure(time.monotonic_ns() - started_ns, rejected)

    def stats(self) -> dict[str, Any]:
        return self._scheduler.stats()

    def monitor_snapshot(self) -> dict[str, Any] | None:
        """The core monitor's snapshot (pyserver._core.Scheduler.monitor_snapshot), or None
        when the version measures nothing."""
        return self.monitor.snapshot() if self.monitor is not None else None

    def instances(self) -> list[dict[str, Any]]:
        """Where each instance runs: {"index", "kind" (KIND_CPU or KIND_GPU), "gpu" (ordinal or
        None), "gpu_uuid" (or None)}, in instance order."""
        gpus = [e.gpu if isinstance(e, _core.DeviceEngine) else None for e in self.engines]
        uuids: dict[int, str] = {}
        if any(g is not None for g in gpus):
            uuids = {d["index"]: d["uuid"] for d in _core.cuda_driver()["devices"]}
        return [
            {"index": i, "kind": "KIND_CPU" if g is None else "KIND_GPU", "gpu": g,
             "gpu_uuid": None if g is None else uuids.get(g)}
            for i, g in enumerate(gpus)
        ]

    def memory_usage(self) -> list[dict[str, Any]]:
        """Triton's memory_usage: what this version's instances hold now. Device buffers per GPU
        ("GPU", its ordinal), pinned staging memory ("CPU_PINNED") and staging memory that fell
        back to ordinary memory when the pinned pool was full ("CPU"). Empty for CPU models,
        whose batch buffers live only while a batch runs."""
        device: dict[int, int] = {}
        pinned = fallback = 0
        for engine in self.engines:
            if isinstance(engine, _core.DeviceEngine):
                device[engine.gpu] = device.get(engine.gpu, 0) + engine.device_memory_bytes
                pinned += engine.pinned_bytes
                fallback += engine.fallback_bytes
        if not device:
            return []
        usage = [{"type": "GPU", "id": gpu, "byte_size": size} for gpu, size in sorted(device.items())]
        usage.append({"type": "CPU_PINNED", "id": 0, "byte_size": pinned})
        usage.append({"type": "CPU", "id": 0, "byte_size": fallback})
        return usage

    # -- what it has accepted (event loop thread) ---------------------------------------------

    def acquire(self) -> None:
        """Count one admitted request."""
        self.inflight += 1

    def release(self) -> None:
        """The admitted request has been answered."""
        self.inflight -= 1
        if self.inflight == 0 and self._drained is not None:
            self._drained.set()

    async def drain(self) -> None:
        """Stop taking requests and wait until every admitted one has been answered."""
        self.state = ModelState.UNLOADING
        if self.inflight == 0:
            return
        self._drained = asyncio.Event()
        await self._drained.wait()

    async def run_raw(self, inputs: Any) -> list[tuple[tuple[int, ...], Any]]:
        """Queue (shape, buffer) inputs whatever the state (warmup runs before READY)."""
        result: list[tuple[tuple[int, ...], Any]] = await self._router.run(self._scheduler, inputs)
        return result

    def stop(self) -> None:
        """Fail queued requests, finish running batches and join the core's threads."""
        self.state = ModelState.UNAVAILABLE
        self._scheduler.stop()
        if self.payload_log is not None:
            self.payload_log.close()  # what it queued is written first
