"""Helpers shared by the core's unit tests: bounded waits on the completion queue, and a
scheduler with its completion queue (Model)."""

from __future__ import annotations

import select
import struct
import time
from collections.abc import Sequence
from typing import Any

import pytest

from pyserver import _core

TIMEOUT_S = 10.0
DELAY_US = 1_000_000  # long enough that only advance_clock can make it pass

Spec = tuple[str, int, Sequence[int]]


def wait_completions(cq: _core.CompletionQueue, n: int) -> dict[int, tuple[int, Any]]:
    """Drain until n completions have arrived (bounded); return {request_id: (code, payload)}."""
    got: dict[int, tuple[int, Any]] = {}
    deadline = time.monotonic() + TIMEOUT_S
    while len(got) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"only {len(got)} of {n} completions arrived within {TIMEOUT_S}s")
        ready, _, _ = select.select([cq.fileno()], [], [], remaining)
        if ready:
            for request_id, code, payload in cq.drain():
                assert request_id not in got, f"request {request_id} completed twice"
                got[request_id] = (code, payload)
    assert len(got) == n, f"expected {n} completions, got {len(got)}"
    return got


def frame(items: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


class Model:
    """A scheduler with its completion queue; keeps submitted buffers alive until the end."""

    def __init__(
        self,
        inputs: Sequence[Spec],
        outputs: Sequence[Spec],
        engines: Sequence[_core.Engine],
        *,
        max_batch_size: int = 8,
        delay_us: int = 0,
        manual_clock: bool = False,
    ) -> None:
        self.cq = _core.CompletionQueue()
        options = _core.SchedulerOptions()
        options.model_name = "m"
        options.max_batch_size = max_batch_size
        options.max_queue_delay_us = delay_us
        options.inputs = list(inputs)
        options.outputs = list(outputs)
        options.manual_clock = manual_clock
        self.scheduler = _core.Scheduler(options, list(engines), self.cq)
        self.buffers: list[Any] = []
        self.next_id = 0

    def submit(self, *inputs: tuple[Sequence[int], Any]) -> int:
        request_id = self.next_id
        self.next_id += 1
        self.buffers.append(inputs)
        self.scheduler.submit(request_id, list(inputs))
        return request_id

    def close(self) -> None:
        self.scheduler.stop()
        self.cq.close()
