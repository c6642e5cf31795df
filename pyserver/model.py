"""A loaded model version: its configuration, its core scheduler, and its state."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any

from pyserver import _core
from pyserver.completions import CompletionRouter
from pyserver.config import ModelConfig
from pyserver.errors import ServerError, Unavailable
from pyserver.protocol.codec import InferRequest
from pyserver.types import ModelSignature


class ModelState(enum.Enum):
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"  # stopping or stopped


def scheduler_options(config: ModelConfig) -> _core.SchedulerOptions:
    """The core's options for a model: batching policy and tensor specs, from its config."""
    options = _core.SchedulerOptions()
    options.model_name = config.name
    options.max_batch_size = config.max_batch_size
    batching = config.dynamic_batching
    if batching is not None:
        options.preferred_batch_sizes = list(batching.preferred_batch_size)
        options.max_queue_delay_us = batching.max_queue_delay_microseconds
    else:
        # Without a [dynamic_batching] table each request runs alone, as in Triton.
        options.dynamic_batching = False
    options.inputs = [(t.name, int(t.datatype), list(t.dims)) for t in config.inputs]
    options.outputs = [(t.name, int(t.datatype), list(t.dims)) for t in config.outputs]
    return options


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
        self.state = ModelState.READY

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY

    async def infer(self, request: InferRequest) -> list[tuple[tuple[int, ...], Any]]:
        """Run one decoded request; returns one (shape, uint8 view) per model output."""
        if self.state is not ModelState.READY:
            raise Unavailable(f"model '{self.name}' version {self.version} is not ready")
        if self._check_inputs is not None:
            started = time.monotonic_ns()
            try:
                self._check_inputs(request.inputs)
            except ServerError:
                self.record_failure(started)
                raise
        result: list[tuple[tuple[int, ...], Any]] = await self._router.submit(
            self._scheduler, request.inputs
        )
        return result

    def record_failure(self, started_ns: int) -> None:
        """Count a request that failed before reaching the queue (it never reached the core)."""
        self._scheduler.record_failure(time.monotonic_ns() - started_ns)

    def stats(self) -> dict[str, Any]:
        return self._scheduler.stats()

    def stop(self) -> None:
        """Fail queued requests, finish running batches and join the core's threads."""
        self.state = ModelState.UNAVAILABLE
        self._scheduler.stop()
