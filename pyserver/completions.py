"""The event loop's side of the core: one CompletionQueue, one eventfd reader, many futures.

Every model's scheduler pushes finished requests into the same CompletionQueue and writes its
eventfd once per batch. The loop wakes once, drains every completion in bulk and resolves the
futures that are still waiting (a future cancelled by a departed client is skipped). The inputs
of each request stay referenced here until its completion is drained: the core's worker threads
read them through raw pointers, so the memory must outlive the request.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

from pyserver import _core
from pyserver.errors import Unavailable, from_status

# (shape, bytes-like) per model input, as the core's Scheduler.submit takes them
CoreInputs = Sequence[tuple[Sequence[int], Any]]


class CompletionRouter:
    """Routes the core's completions to asyncio futures. Create and use it on the loop thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue = _core.CompletionQueue()
        # request id -> (future, the inputs whose buffers the core is still reading)
        self._waiting: dict[int, tuple[asyncio.Future[Any], CoreInputs]] = {}
        self._ids = itertools.count(1)
        self._closed = False
        loop.add_reader(self._queue.fileno(), self._drain)

    @property
    def queue(self) -> _core.CompletionQueue:
        return self._queue

    async def run(
        self, scheduler: _core.Scheduler, inputs: CoreInputs, priority: int = 0, timeout_us: int = 0
    ) -> Any:
        """Queue a request on `scheduler` and wait for its outputs (one (shape, uint8 view) per
        model output); failures raise a pyserver.errors exception. When the waiting task is
        cancelled (the client went away), a request still queued is taken out of the queue;
        one already running finishes and its result is dropped."""
        if self._closed:
            raise Unavailable("the server is shutting down")
        request_id = next(self._ids)
        future = self._loop.create_future()
        self._waiting[request_id] = (future, inputs)
        try:
            scheduler.submit(request_id, inputs, priority, timeout_us)
        except BaseException:  # a TypeError from the binding: nothing was queued
            del self._waiting[request_id]
            raise
        try:
            return await future
        except asyncio.CancelledError:
            # Its CANCELLED completion (or its result) still arrives and releases the inputs.
            scheduler.cancel(request_id)
            raise

    def _drain(self) -> None:
        # Called by the loop when the eventfd is readable: one wake-up for every batch that
        # finished since the last one.
        for request_id, code, payload in self._queue.drain():
            entry = self._waiting.pop(request_id, None)
            if entry is None:
                continue
            future = entry[0]
            if future.done():  # cancelled: the client went away
                continue
            if code == 0:
                future.set_result(payload)
            else:
                future.set_exception(from_status(code, payload))

    def close(self) -> None:
        """Stop watching the eventfd. Call after every scheduler has stopped."""
        if self._closed:
            return
        self._closed = True
        self._drain()
        self._loop.remove_reader(self._queue.fileno())
        self._queue.close()
        # Every scheduler has stopped, so nothing still waiting can be answered by the core.
        for future, _ in self._waiting.values():
            if not future.done():
                future.set_exception(Unavailable("the server is shutting down"))
        self._waiting.clear()
