"""The event loop's side of the core: one CompletionQueue, one eventfd reader, many futures.

Every model's scheduler pushes finished requests into the same CompletionQueue and writes its
eventfd once per batch. The loop wakes once, drains every completion in bulk and calls each request's
callback (or resolves its future), skipping those a departed client cancelled. The inputs
of each request stay referenced here until its completion is drained: the core's worker threads
read them through raw pointers, so the memory must outlive the request.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from pyserver import _core
from pyserver.errors import ServerError, Unavailable, from_core_status

# (shape, bytes-like) per model input, as the core's Scheduler.submit takes them
CoreInputs = Sequence[tuple[Sequence[int], Any]]


# Called on the loop thread with (status code, payload): the outputs when the code is 0, the
# error message otherwise.
Done = Callable[[int, Any], None]

# The core's status codes (their numbers live in csrc/core/status.h only).
StatusCode: Any = enum.IntEnum("StatusCode", _core.STATUS_CODES)  # type: ignore[misc]
UNAVAILABLE = _core.STATUS_CODES["UNAVAILABLE"]


def from_status(code: int, message: str) -> ServerError:
    """The exception for a completion's status code."""
    try:
        name = StatusCode(code).name
    except ValueError:
        name = "INTERNAL"
    return from_core_status(name, message)


class CompletionRouter:
    """Routes the core's completions to callbacks (and futures). Create and use it on the loop
    thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue = _core.CompletionQueue()
        # request id -> (its callback, or None once cancelled; the inputs whose buffers the
        # core is still reading)
        self._waiting: dict[int, list[Any]] = {}
        self._ids = itertools.count(1)
        self._closed = False
        loop.add_reader(self._queue.fileno(), self._drain)

    @property
    def queue(self) -> _core.CompletionQueue:
        return self._queue

    def submit(
        self, scheduler: _core.Scheduler, inputs: CoreInputs, priority: int, timeout_us: int,
        done: Done,
    ) -> int:
        """Queue a request on `scheduler`; `done` is called when its completion is drained,
        unless it was cancelled first. Returns the request's id (for `cancel`). No future and
        no task: the HTTP hot path answers straight from `done`."""
        if self._closed:
            raise Unavailable("the server is shutting down")
        request_id = next(self._ids)
        self._waiting[request_id] = [done, inputs]
        try:
            scheduler.submit(request_id, inputs, priority, timeout_us)
        except BaseException:  # a TypeError from the binding: nothing was queued
            del self._waiting[request_id]
            raise
        return request_id

    def cancel(self, scheduler: _core.Scheduler, request_id: int) -> None:
        """The client went away: a request still queued leaves the queue; one running finishes
        and its result is dropped. Its callback is not called (its completion still arrives and
        releases the inputs)."""
        entry = self._waiting.get(request_id)
        if entry is not None:
            entry[0] = None
            scheduler.cancel(request_id)

    async def run(
        self, scheduler: _core.Scheduler, inputs: CoreInputs, priority: int = 0, timeout_us: int = 0
    ) -> Any:
        """Queue a request and wait for its outputs (one (shape, uint8 view) per model output);
        failures raise a pyserver.errors exception. When the waiting task is cancelled, the
        request is cancelled as `cancel` says."""
        future = self._loop.create_future()

        def done(code: int, payload: Any) -> None:
            if future.done():
                return
            if code == 0:
                future.set_result(payload)
            else:
                future.set_exception(from_status(code, payload))

        request_id = self.submit(scheduler, inputs, priority, timeout_us, done)
        try:
            return await future
        except asyncio.CancelledError:
            self.cancel(scheduler, request_id)
            raise

    def _drain(self) -> None:
        # Called by the loop when the eventfd is readable: one wake-up for every batch that
        # finished since the last one.
        waiting = self._waiting
        for request_id, code, payload in self._queue.drain():
            entry = waiting.pop(request_id, None)
            if entry is not None and entry[0] is not None:
                entry[0](code, payload)

    def close(self) -> None:
        """Stop watching the eventfd. Call after every scheduler has stopped."""
        if self._closed:
            return
        self._closed = True
        self._drain()
        self._loop.remove_reader(self._queue.fileno())
        self._queue.close()
        # Every scheduler has stopped, so nothing still waiting can be answered by the core.
        for done, _ in self._waiting.values():
            if done is not None:
                done(UNAVAILABLE, "the server is shutting down")
        self._waiting.clear()
