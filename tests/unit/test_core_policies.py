"""The core's scheduling options through the bindings: QueuePolicy and SchedulerOptions reach
the scheduler, bad combinations are refused at creation with a message, and per-request
priority, timeout and cancel arrive where they should. The batching logic itself is tested
exactly, in C++ (csrc/tests/scheduler_test.cc, run by test_core_cpp.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pyserver import _core
from pyserver.completions import StatusCode
from pyserver.types import DataType
from tests.unit.core_support import wait_completions

SPEC = [("x", int(DataType.FP32), (2,))]


def options(**fields: Any) -> _core.SchedulerOptions:
    o = _core.SchedulerOptions()
    o.model_name = "m"
    o.max_batch_size = 1
    o.inputs = SPEC
    o.outputs = SPEC
    o.manual_clock = True
    for key, value in fields.items():
        setattr(o, key, value)
    return o


def policy(**fields: Any) -> _core.QueuePolicy:
    p = _core.QueuePolicy()
    for key, value in fields.items():
        setattr(p, key, value)
    return p


@pytest.fixture
def cq() -> Iterator[_core.CompletionQueue]:
    queue = _core.CompletionQueue()
    yield queue
    queue.close()


def row(value: float) -> tuple[tuple[int, int], np.ndarray]:
    return ((1, 2), np.full((1, 2), value, np.float32))


def test_queue_policy_fields() -> None:
    p = policy(timeout_action="DELAY", default_timeout_us=5, allow_timeout_override=True,
               max_queue_size=3)
    assert (p.timeout_action, p.default_timeout_us, p.allow_timeout_override,
            p.max_queue_size) == ("DELAY", 5, True, 3)
    assert repr(p) == ("QueuePolicy(timeout_action='DELAY', default_timeout_us=5, "
                       "allow_timeout_override=True, max_queue_size=3)")
    with pytest.raises(ValueError, match="timeout_action is 'REJECT' or 'DELAY', got 'DROP'"):
        p.timeout_action = "DROP"


@pytest.mark.parametrize(("fields", "message"), [
    ({"priority_levels": 2, "default_priority_level": 3},
     "default_priority_level 3 is outside 1..2"),
    ({"default_priority_level": 1}, "default_priority_level 1 needs priority_levels"),
    ({"priority_levels": -1}, "priority_levels must be from 0 to 1024"),
    ({"priority_levels": 2, "default_priority_level": 1,
      "priority_queue_policy": {3: _core.QueuePolicy()}},
     "priority_queue_policy level 3 is outside 1..2"),
    ({"default_queue_policy": policy(max_queue_size=-1)},
     "default_queue_policy.max_queue_size must be >= 0"),
    ({"latency_target_us": -5}, "latency_target_us must be from 0"),
])
def test_bad_options_are_refused(cq: _core.CompletionQueue, fields: dict[str, Any],
                                 message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _core.Scheduler(options(**fields), [_core.identity_engine()], cq)


def test_options_repr_names_every_policy() -> None:
    o = options(priority_levels=2, default_priority_level=2, preserve_ordering=True,
                latency_target_us=900,
                priority_queue_policy={1: policy(max_queue_size=4)})
    text = repr(o)
    assert "priority_levels=2, default_priority_level=2" in text
    assert "priority_queue_policy={1: QueuePolicy(timeout_action='REJECT'" in text
    assert "max_queue_size=4)}" in text
    assert "preserve_ordering=True, latency_target_us=900" in text


def test_priority_timeout_and_cancel_reach_the_queue(cq: _core.CompletionQueue) -> None:
    engine = _core.identity_engine()
    s = _core.Scheduler(options(
        priority_levels=2, default_priority_level=2,
        default_queue_policy=policy(max_queue_size=1, allow_timeout_override=True),
    ), [engine], cq)
    try:
        buffers = [row(float(i)) for i in range(6)]
        s.hold(3)  # nothing runs until three requests wait
        s.submit(0, [buffers[0]], priority=2)
        s.submit(1, [buffers[1]], priority=2)  # level 2 holds one: refused
        s.submit(2, [buffers[2]], priority=1, timeout_us=1000)
        s.submit(3, [buffers[3]], priority=7)  # no such level
        got = wait_completions(cq, 2)
        assert got[1][0] == StatusCode.RESOURCE_EXHAUSTED
        assert "priority level 2 is full" in got[1][1]
        assert got[3][0] == StatusCode.INVALID_ARGUMENT
        assert "priority 7 is outside 1..2" in got[3][1]
        assert s.queued() == 2 and s.queue_full()  # both levels hold their one request

        assert s.cancel(0) is True
        assert s.cancel(0) is False  # no longer queued
        assert s.cancel(99) is False
        s.advance_clock(1000)  # request 2's own timeout (1 ms) runs out
        got = wait_completions(cq, 2)
        assert got[0][0] == StatusCode.CANCELLED
        assert got[2][0] == StatusCode.DEADLINE_EXCEEDED
        assert s.queued() == 0 and s.pending() == 0
        assert engine.executions == 0
        assert s.stats()["fail_by_reason"] == {
            "REJECTED": 2, "CANCELED": 1, "BACKEND": 0, "OTHER": 1}
    finally:
        s.stop()


def test_a_queue_longer_than_the_plan_window_still_fills_batches(cq: _core.CompletionQueue) -> None:
    """The batcher reads at most 4,096 requests per decision: a group of a longer queue counts
    as full rather than waiting out the queue delay with a full batch's worth queued."""
    engine = _core.identity_engine()
    s = _core.Scheduler(options(max_batch_size=8192, max_queue_delay_us=1_000_000),
                        [engine], cq)
    try:
        buffer = row(1.0)
        s.hold(9000)
        for request_id in range(9000):
            s.submit(request_id, [buffer])
        s.hold(0)  # no clock advance: only fullness can dispatch
        # Twice the queue is longer than the window; the last 808 fit in it and are no batch
        # of 8,192, so they wait for their delay.
        wait_completions(cq, 8192)
        assert s.batch_sizes() == [4096, 4096]
        assert s.queued() == 808
    finally:
        s.stop()
