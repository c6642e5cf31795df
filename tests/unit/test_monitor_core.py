"""The core's monitor through its Python face: a real scheduler with the C++ identity engine
(outputs are the inputs' bytes) and a manual clock, so counts, the window's ageing and drift are
exact. The arithmetic itself is tested in C++ (test_monitor_cpp.py); this checks the wiring:
options in, batches measured on the worker threads, snapshots and references across the
binding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyserver import _core
from pyserver.types import DataType
from tests.unit.core_support import frame, wait_completions

SECOND_US = 1_000_000


def tensor(name: str, buckets: list[float], *, input: bool = True, **fields: object
           ) -> _core.MonitorTensor:
    t = _core.MonitorTensor()
    t.name = name
    t.input = input
    t.buckets = buckets
    for key, value in fields.items():
        setattr(t, key, value)
    return t


def make(tensors: list[_core.MonitorTensor], *, inputs: list[tuple[str, int, list[int]]],
         outputs: list[tuple[str, int, list[int]]], max_batch_size: int = 8,
         sample_every: int = 1) -> tuple[_core.Scheduler, _core.CompletionQueue]:
    options = _core.SchedulerOptions()
    options.model_name = "m"
    options.max_batch_size = max_batch_size
    options.inputs = inputs
    options.outputs = outputs
    options.manual_clock = True
    options.monitor.sample_every = sample_every
    options.monitor.window_ns = 10 * 10**9
    options.monitor.intervals = 10
    options.monitor.tensors = tensors
    cq = _core.CompletionQueue()
    return _core.Scheduler(options, [_core.identity_engine()], cq), cq


FP32 = int(DataType.FP32)
X = [("x", FP32, [3])]
Y = [("y", FP32, [3])]


def run(scheduler: _core.Scheduler, cq: _core.CompletionQueue, *arrays: np.ndarray) -> None:
    """One request per array, each answered before the next (each its own batch)."""
    for i, array in enumerate(arrays):
        scheduler.submit(i + 1, [(array.shape, array)])
        ((code, payload),) = wait_completions(cq, 1).values()
        assert code == 0, payload


def pooled(counts: list[int], buckets: int) -> list[int]:
    return [sum(counts[k::buckets]) for k in range(buckets)]


def test_counts_from_the_batch_buffers() -> None:
    scheduler, cq = make([tensor("x", [0, 1], per_feature=True),
                          tensor("y", [0.5], input=False, top=True)], inputs=X, outputs=Y)
    warmup = np.full((1, 3), 7, np.float32)
    run(scheduler, cq, warmup)  # before monitor_start: not counted (warmup runs before READY)
    scheduler.monitor_start()
    a = np.array([[0, 0.5, 2], [1, -1, np.nan]], np.float32)
    b = np.array([[np.inf, -np.inf, 0.25]], np.float32)
    run(scheduler, cq, a, b)
    snap = scheduler.monitor_snapshot()
    assert snap is not None
    assert (snap["batches_seen"], snap["batches_sampled"], snap["running"]) == (2, 2, True)
    x, y = snap["tensors"]
    assert (x["name"], x["input"], x["features"], x["datatype"]) == ("x", True, 3, FP32)
    # feature 0: 0, 1, +inf; feature 1: 0.5, -1, -inf; feature 2: 2, NaN, 0.25
    assert x["total"]["counts"] == [1, 1, 0, 1, 1, 0, 0, 1, 1]
    assert (x["total"]["nan"], x["total"]["inf"], x["total"]["elements"]) == (1, 2, 9)
    assert x["total"]["sums"] == [1.0, -0.5, 2.25]
    assert x["window"] == x["total"]
    # identity: y is x. Each row's top score and its class: 2.0 (class 2), 1.0 (class 0, the
    # NaN skipped), +inf (class 0: an infinite score still wins its row).
    assert y["class_count"] == 3
    assert y["total"]["classes"] == [2, 0, 1, 0]
    assert y["total"]["counts"] == [0, 2]  # +inf is not finite: counted apart
    assert y["total"]["inf"] == 1
    scheduler.stop()


def test_window_ages_out_on_the_scheduler_clock() -> None:
    scheduler, cq = make([tensor("x", [0])], inputs=X, outputs=Y)
    scheduler.monitor_start()
    run(scheduler, cq, np.zeros((2, 3), np.float32))
    scheduler.advance_clock(6 * SECOND_US)
    run(scheduler, cq, np.ones((1, 3), np.float32))
    snap = scheduler.monitor_snapshot()
    assert snap is not None
    assert snap["tensors"][0]["window"]["counts"] == [6, 3]
    scheduler.advance_clock(5 * SECOND_US)  # t = 11 s: the window is intervals 2..11
    snap = scheduler.monitor_snapshot()
    assert snap is not None
    assert snap["tensors"][0]["window"]["counts"] == [0, 3]
    assert snap["tensors"][0]["total"]["counts"] == [6, 3]
    assert snap["now_ns"] - snap["started_ns"] == 11 * 10**9
    scheduler.stop()


def test_sample_every() -> None:
    scheduler, cq = make([tensor("x", [0])], inputs=X, outputs=Y, sample_every=2)
    scheduler.monitor_start()
    run(scheduler, cq, *[np.full((1, 3), i, np.float32) for i in range(5)])
    snap = scheduler.monitor_snapshot()
    assert snap is not None
    assert (snap["batches_seen"], snap["batches_sampled"]) == (5, 3)
    assert snap["tensors"][0]["total"]["sums"] == [0.0 + 2 * 3 + 4 * 3]  # batches 0, 2 and 4
    scheduler.stop()


def test_reference_sample_and_drift() -> None:
    scheduler, cq = make([tensor("x", [0, 1], per_feature=True)], inputs=X, outputs=Y)
    reference = np.array([[0, 0.5, 9], [0, 3, 9]], np.float32)
    scheduler.monitor_set_reference("x", FP32, reference)
    scheduler.monitor_start()
    snap = scheduler.monitor_snapshot()
    assert snap is not None
    x = snap["tensors"][0]
    assert x["reference_source"] == "file"
    assert x["reference"]["counts"] == [2, 0, 0, 0, 1, 1, 0, 0, 2]
    assert all(math.isnan(p) for p in x["psi"])  # no data in the window yet
    run(scheduler, cq, reference[::-1].copy())
    x = scheduler.monitor_snapshot()["tensors"][0]  # type: ignore[index]
    assert x["psi"] == [0.0, 0.0, 0.0] and x["psi_pooled"] == 0.0
    run(scheduler, cq, np.array([[1, 0.5, 9], [1, 3, 9]], np.float32))
    x = scheduler.monitor_snapshot()["tensors"][0]  # type: ignore[index]
    assert x["psi"][0] > 1 and x["psi"][1:] == [0.0, 0.0]
    # The sample in another datatype (INT64: 0 and 9 exactly; 0.5 -> 0, 3 -> 3).
    scheduler.monitor_set_reference("x", int(DataType.INT64), reference.astype(np.int64))
    x = scheduler.monitor_snapshot()["tensors"][0]  # type: ignore[index]
    assert x["reference"]["counts"] == [2, 0, 0, 1, 0, 1, 0, 0, 2]
    with pytest.raises(ValueError, match="do not make whole rows of 3 features"):
        scheduler.monitor_set_reference("x", FP32, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        scheduler.monitor_set_reference("x", FP32, np.zeros((3, 6), np.float32)[:, ::2])
    with pytest.raises(ValueError, match="input 'y' is not monitored"):
        scheduler.monitor_set_reference("y", FP32, reference)
    scheduler.stop()


def test_bytes_input_lengths() -> None:
    scheduler, cq = make([tensor("s", [1, 4])], inputs=[("s", int(DataType.BYTES), [1])],
                         outputs=[("t", int(DataType.BYTES), [1])])
    scheduler.monitor_start()
    body = frame([b"", b"abc", b"abcdefgh"])
    scheduler.submit(1, [((3, 1), body)])
    assert wait_completions(cq, 1)[1][0] == 0
    s = scheduler.monitor_snapshot()["tensors"][0]  # type: ignore[index]
    assert s["total"]["counts"] == [1, 1, 1] and s["total"]["sums"] == [11.0]
    scheduler.stop()


def test_options_are_checked_by_the_core() -> None:
    with pytest.raises(ValueError, match="monitoring: input 'nope': the model has no such input"):
        make([tensor("nope", [1])], inputs=X, outputs=Y)
    with pytest.raises(ValueError, match="classes counts integer outputs, got FP32"):
        make([tensor("y", [], input=False, classes=3)], inputs=X, outputs=Y)


def test_a_model_without_monitoring() -> None:
    options = _core.SchedulerOptions()
    options.model_name = "plain"
    options.inputs = X
    options.outputs = Y
    scheduler = _core.Scheduler(options, [_core.identity_engine()], _core.CompletionQueue())
    assert scheduler.monitor_snapshot() is None
    with pytest.raises(ValueError, match="the model has no monitoring"):
        scheduler.monitor_start()
    scheduler.stop()
