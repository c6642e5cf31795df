"""The dynamic batcher of the C++ core (pyserver._core), deterministically.

Batches are made observable without timing: hold(n) keeps the batcher from forming a batch until
n requests are queued, the manual clock moves only through advance_clock, and batch_sizes() lists
every executed batch. Completions are awaited on the CompletionQueue's eventfd with select() and a
bounded timeout, never by sleeping.
"""

from __future__ import annotations

import select
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from pyserver import _core
from pyserver.completions import StatusCode
from pyserver.types import DataType
from tests.unit.core_support import DELAY_US, TIMEOUT_S, Spec, frame, wait_completions

FP32_X: list[Spec] = [("x", int(DataType.FP32), (4,))]
FP32_Y: list[Spec] = [("y", int(DataType.FP32), (4,))]




def assert_no_completion(cq: _core.CompletionQueue, seconds: float = 0.1) -> None:
    ready, _, _ = select.select([cq.fileno()], [], [], seconds)
    if ready:
        assert cq.drain() == []


def floats(view: tuple[tuple[int, ...], np.ndarray]) -> np.ndarray:
    shape, data = view
    return np.frombuffer(data, dtype=np.float32).reshape(shape)




class Harness:
    """One scheduler and its completion queue; keeps every submitted buffer alive."""

    def __init__(
        self,
        *,
        max_batch_size: int = 8,
        preferred: Sequence[int] = (),
        delay_us: int = DELAY_US,
        inputs: Sequence[Spec] = FP32_X,
        outputs: Sequence[Spec] = FP32_Y,
        engines: Sequence[_core.Engine] | None = None,
        manual_clock: bool = True,
        dynamic_batching: bool = True,
    ) -> None:
        self.cq = _core.CompletionQueue()
        options = _core.SchedulerOptions()
        options.model_name = "m"
        options.max_batch_size = max_batch_size
        options.preferred_batch_sizes = list(preferred)
        options.max_queue_delay_us = delay_us
        options.inputs = list(inputs)
        options.outputs = list(outputs)
        options.manual_clock = manual_clock
        options.dynamic_batching = dynamic_batching
        self.scheduler = _core.Scheduler(
            options, list(engines) if engines else [_core.identity_engine()], self.cq
        )
        self.buffers: dict[int, Any] = {}
        self.next_id = 0

    def submit(self, *inputs: tuple[Sequence[int], Any]) -> int:
        request_id = self.next_id
        self.next_id += 1
        self.buffers[request_id] = inputs  # alive until the completion is drained
        self.scheduler.submit(request_id, list(inputs))
        return request_id

    def submit_rows(self, rows: int, value: float = 0.0, width: int = 4) -> int:
        data = (np.arange(rows * width, dtype=np.float32) + value).reshape(rows, width)
        return self.submit(((rows, width), data))

    def close(self) -> None:
        self.scheduler.stop()
        self.cq.close()


@pytest.fixture
def make() -> Iterator[Callable[..., Harness]]:
    harnesses: list[Harness] = []

    def factory(**kwargs: Any) -> Harness:
        harness = Harness(**kwargs)
        harnesses.append(harness)
        return harness

    yield factory
    for harness in harnesses:
        harness.close()


def test_batches_fill_up_to_max_batch_size(make: Callable[..., Harness]) -> None:
    h = make(max_batch_size=4)
    h.scheduler.hold(6)
    ids = [h.submit_rows(1, value=10 * i) for i in range(6)]
    first = wait_completions(h.cq, 4)
    assert sorted(first) == ids[:4]
    assert h.scheduler.batch_sizes() == [4]

    h.scheduler.hold(0)
    assert_no_completion(h.cq)  # two queued, neither full nor past the delay
    h.scheduler.advance_clock(DELAY_US)
    second = wait_completions(h.cq, 2)
    assert sorted(second) == ids[4:]
    assert h.scheduler.batch_sizes() == [4, 2]

    for request_id, (code, payload) in {**first, **second}.items():
        assert code == StatusCode.OK
        (view,) = payload
        expected = np.arange(4, dtype=np.float32) + 10 * ids.index(request_id)
        np.testing.assert_array_equal(floats(view), expected.reshape(1, 4))


def test_preferred_batch_size_dispatches_at_once(make: Callable[..., Harness]) -> None:
    h = make(max_batch_size=8, preferred=[2, 4])
    h.scheduler.hold(5)
    ids = [h.submit_rows(1) for _ in range(5)]
    # rows 1..5 are queued: the longest prefix with a preferred size (4) goes, without delay
    assert sorted(wait_completions(h.cq, 4)) == ids[:4]
    assert h.scheduler.batch_sizes() == [4]

    h.scheduler.hold(0)
    assert_no_completion(h.cq)  # 1 row is no preferred size
    h.scheduler.advance_clock(DELAY_US)
    assert sorted(wait_completions(h.cq, 1)) == ids[4:]

    a = h.submit_rows(1)
    assert_no_completion(h.cq)
    b = h.submit_rows(1)  # 2 rows: preferred, goes at once on the manual clock
    assert sorted(wait_completions(h.cq, 2)) == [a, b]
    assert h.scheduler.batch_sizes() == [4, 1, 2]


def test_queue_delay_on_the_manual_clock(make: Callable[..., Harness]) -> None:
    h = make(max_batch_size=8, delay_us=1000)
    ids = [h.submit_rows(1) for _ in range(3)]
    assert_no_completion(h.cq)
    h.scheduler.advance_clock(999)
    assert_no_completion(h.cq)
    h.scheduler.advance_clock(1)
    assert sorted(wait_completions(h.cq, 3)) == ids  # the whole pending batch
    assert h.scheduler.batch_sizes() == [3]


def test_zero_delay_dispatches_whatever_is_queued(make: Callable[..., Harness]) -> None:
    h = make(max_batch_size=8, delay_us=0)
    request_id = h.submit_rows(1)
    assert list(wait_completions(h.cq, 1)) == [request_id]
    assert h.scheduler.batch_sizes() == [1]


def test_without_dynamic_batching_each_request_is_its_own_batch(
    make: Callable[..., Harness],
) -> None:
    # Triton's default scheduler: a batching model with no dynamic_batching runs every request
    # alone, however many are queued, each with the rows it carries.
    h = make(max_batch_size=8, delay_us=0, dynamic_batching=False)
    h.scheduler.hold(3)
    ids = [h.submit_rows(rows, value=10 * rows) for rows in (1, 3, 2)]
    h.scheduler.hold(0)
    done = wait_completions(h.cq, 3)
    assert h.scheduler.batch_sizes() == [1, 3, 2]
    for request_id, rows in zip(ids, (1, 3, 2), strict=True):
        code, (view,) = done[request_id]
        assert code == StatusCode.OK
        assert floats(view).shape == (rows, 4) and floats(view)[0, 0] == 10 * rows


def test_advance_clock_needs_the_manual_clock(make: Callable[..., Harness]) -> None:
    h = make(manual_clock=False)
    with pytest.raises(ValueError, match="manual_clock"):
        h.scheduler.advance_clock(10)


def test_different_shapes_never_share_a_batch(make: Callable[..., Harness]) -> None:
    seen: list[tuple[int, ...]] = []

    class RecordShapes:
        def execute(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
            seen.append(inputs[0].shape)
            return [inputs[0]]

    spec: list[Spec] = [("x", int(DataType.FP32), (-1,))]
    out: list[Spec] = [("y", int(DataType.FP32), (-1,))]
    h = make(inputs=spec, outputs=out, engines=[_core.python_engine(RecordShapes())])
    h.scheduler.hold(6)
    ids = [h.submit_rows(1, value=i, width=2 if i % 2 == 0 else 3) for i in range(6)]
    h.scheduler.hold(0)
    assert_no_completion(h.cq)
    h.scheduler.advance_clock(DELAY_US)
    done = wait_completions(h.cq, 6)

    assert h.scheduler.batch_sizes() == [3, 3]
    assert seen == [(3, 2), (3, 3)]  # each batch holds one shape only, oldest first
    for i, request_id in enumerate(ids):
        code, (view,) = done[request_id]
        assert code == StatusCode.OK
        width = 2 if i % 2 == 0 else 3
        np.testing.assert_array_equal(floats(view), np.arange(width, dtype=np.float32)[None] + i)


def test_requests_with_several_rows(make: Callable[..., Harness]) -> None:
    h = make(max_batch_size=8)
    h.scheduler.hold(3)
    a = h.submit_rows(3, value=100)
    b = h.submit_rows(4, value=200)
    c = h.submit_rows(2, value=300)  # 3 + 4 + 2 > 8: the candidate is full at 7 rows
    first = wait_completions(h.cq, 2)
    assert sorted(first) == [a, b]
    assert h.scheduler.batch_sizes() == [7]
    h.scheduler.hold(0)
    h.scheduler.advance_clock(DELAY_US)
    second = wait_completions(h.cq, 1)
    assert h.scheduler.batch_sizes() == [7, 2]

    done = {**first, **second}
    for request_id, rows, value in ((a, 3, 100), (b, 4, 200), (c, 2, 300)):
        code, (view,) = done[request_id]
        assert code == StatusCode.OK
        assert view[0] == (rows, 4)
        assert view[1].dtype == np.uint8 and view[1].ndim == 1 and view[1].nbytes == rows * 16
        expected = (np.arange(rows * 4, dtype=np.float32) + value).reshape(rows, 4)
        np.testing.assert_array_equal(floats(view), expected)


def test_no_batching_runs_one_request_per_batch(make: Callable[..., Harness]) -> None:
    spec: list[Spec] = [("x", int(DataType.FP32), (2, 3))]
    out: list[Spec] = [("y", int(DataType.FP32), (2, 3))]
    h = make(max_batch_size=0, inputs=spec, outputs=out)
    h.scheduler.hold(3)
    data = [np.full((2, 3), i, dtype=np.float32) for i in range(3)]
    ids = [h.submit(((2, 3), d)) for d in data]
    h.scheduler.hold(0)  # three queued at once, yet each batch is one request
    bad = h.submit(((1, 2, 3), np.zeros((1, 2, 3), dtype=np.float32)))  # no batch dim allowed
    done = wait_completions(h.cq, 4)
    assert h.scheduler.batch_sizes() == [1, 1, 1]
    for request_id, d in zip(ids, data, strict=True):
        code, (view,) = done[request_id]
        assert code == StatusCode.OK
        np.testing.assert_array_equal(floats(view), d)
    code, message = done[bad]
    assert code == StatusCode.INVALID_ARGUMENT and "input 'x'" in message


def test_bad_requests_fail_alone(make: Callable[..., Harness]) -> None:
    spec: list[Spec] = [("x", int(DataType.FP32), (4,)), ("s", int(DataType.BYTES), (2,))]
    out: list[Spec] = [("y", int(DataType.FP32), (4,)), ("t", int(DataType.BYTES), (2,))]
    h = make(max_batch_size=8, inputs=spec, outputs=out)
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    s = frame([b"ab", b""])

    good = [h.submit(((1, 4), x + i), ((1, 2), frame([b"r%d" % i, b"\x00"]))) for i in range(2)]
    bad = {
        h.submit(((1, 4), x[:, :3].copy()), ((1, 2), s)): ("input 'x'", "bytes"),
        h.submit(((1, 5), np.zeros((1, 5), np.float32)), ((1, 2), s)): ("input 'x'", "shape"),
        h.submit(((1, 4), x), ((1, 2), s[:-1] + b"\x05")): ("input 's'", "BYTES"),
        h.submit(((1, 4), x), ((1, 2), s + b"\x00")): ("input 's'", "left over"),
        h.submit(((1, 4), x), ((1, 2), frame([b"one"]))): ("input 's'", "ends after 1 of 2"),
        h.submit(((9, 4), np.zeros((9, 4), np.float32)), ((9, 2), frame([b""] * 18))): (
            "input 'x'",
            "batch size 9",
        ),
        h.submit(((1, 4), x)): ("expects 2 inputs", "got 1"),
        h.submit(((1, 4), x), ((1, 2), 12345)): ("input 's'", "buffer"),
        h.submit(((1, 4), x), (("a", 2), s)): ("input 's'", "shape"),
    }
    good.append(h.submit(((1, 4), x + 2), ((1, 2), s)))
    errors = wait_completions(h.cq, len(bad))  # rejected at submit, before any batch
    for request_id, needles in bad.items():
        code, message = errors[request_id]
        assert code == StatusCode.INVALID_ARGUMENT, message
        for needle in needles:
            assert needle in message

    h.scheduler.advance_clock(DELAY_US)
    done = wait_completions(h.cq, len(good))
    assert h.scheduler.batch_sizes() == [3]  # the good ones ran together
    texts = [(b"r0", b"\x00"), (b"r1", b"\x00"), (b"ab", b"")]
    for i, request_id in enumerate(good):
        code, (y, t) = done[request_id]
        assert code == StatusCode.OK
        np.testing.assert_array_equal(floats(y), x + i)
        assert t[0] == (1, 2)
        assert t[1].tobytes() == frame(texts[i])


def test_stop_fails_queued_requests(make: Callable[..., Harness]) -> None:
    h = make(max_batch_size=8)
    ids = [h.submit_rows(1) for _ in range(3)]
    assert h.scheduler.pending() == 3
    h.scheduler.stop()
    done = wait_completions(h.cq, 3)
    assert sorted(done) == ids
    for code, message in done.values():
        assert code == StatusCode.UNAVAILABLE
        assert message == "model 'm' is shutting down"

    late = h.submit_rows(1)
    code, message = wait_completions(h.cq, 1)[late]
    assert code == StatusCode.UNAVAILABLE and "shutting down" in message
    h.scheduler.stop()  # idempotent
    stats = h.scheduler.stats()
    assert stats["fail"]["count"] == 4
    assert stats["pending"] == 0 and h.scheduler.batch_sizes() == []


def test_stop_lets_the_running_batch_finish(make: Callable[..., Harness]) -> None:
    started = threading.Event()
    release = threading.Event()

    class Blocking:
        def execute(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
            started.set()
            assert release.wait(TIMEOUT_S)
            return [inputs[0]]

    h = make(max_batch_size=8, delay_us=0, engines=[_core.python_engine(Blocking())])
    running = h.submit_rows(1)
    assert started.wait(TIMEOUT_S)
    queued = h.submit_rows(1)
    stopper = threading.Thread(target=h.scheduler.stop)
    stopper.start()
    done = wait_completions(h.cq, 1)
    assert done[queued][0] == StatusCode.UNAVAILABLE
    release.set()
    stopper.join(TIMEOUT_S)
    assert not stopper.is_alive()
    assert wait_completions(h.cq, 1)[running][0] == StatusCode.OK


def test_a_busy_instance_lets_the_batch_grow(make: Callable[..., Harness]) -> None:
    started = threading.Event()
    release = threading.Event()

    class Blocking:
        def execute(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
            started.set()
            assert release.wait(TIMEOUT_S)
            return [inputs[0]]

    h = make(max_batch_size=8, delay_us=0, engines=[_core.python_engine(Blocking())])
    h.submit_rows(1)
    assert started.wait(TIMEOUT_S)  # the only instance is busy from here on
    for _ in range(5):
        h.submit_rows(1)
    assert h.scheduler.pending() == 6
    release.set()
    wait_completions(h.cq, 6)
    assert h.scheduler.batch_sizes() == [1, 5]


def test_stats(make: Callable[..., Harness]) -> None:
    h = make(max_batch_size=4)
    h.scheduler.hold(6)
    for _ in range(5):
        h.submit_rows(1)
    # Held until the sixth arrives, so all five are pending (after the sixth a batch may
    # already have run by the time pending() is read).
    assert h.scheduler.pending() == 5
    h.submit_rows(1)
    wait_completions(h.cq, 4)
    h.scheduler.hold(0)
    h.scheduler.advance_clock(DELAY_US)
    wait_completions(h.cq, 2)
    bad = h.submit(((1, 3), np.zeros((1, 3), np.float32)))
    assert wait_completions(h.cq, 1)[bad][0] == StatusCode.INVALID_ARGUMENT
    h.scheduler.record_failure(1234)

    stats = h.scheduler.stats()
    assert stats["inference_count"] == 6
    assert stats["execution_count"] == 2
    assert stats["last_inference"] > 1_600_000_000_000  # ms since the epoch
    assert stats["pending"] == 0 and h.scheduler.pending() == 0
    for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert stats[key]["count"] == 6, key
        assert stats[key]["ns"] > 0, key
    assert stats["fail"]["count"] == 2
    assert stats["fail"]["ns"] >= 1234
    sizes = [entry["batch_size"] for entry in stats["batch_stats"]]
    assert sizes == [2, 4]
    for key in ("compute_input", "compute_infer", "compute_output"):
        assert [entry[key]["count"] for entry in stats["batch_stats"]] == [1, 1]
        # each request is charged its batch's durations (as Triton does): 2 of one, 4 of the other
        charged = sum(e["batch_size"] * e[key]["ns"] for e in stats["batch_stats"])
        assert charged == stats[key]["ns"], key
    assert stats["fail_by_reason"] == {"REJECTED": 0, "CANCELED": 0, "BACKEND": 0, "OTHER": 2}

    histograms = stats["histograms"]
    for name, count in (("request_duration_ns", 8), ("queue_duration_ns", 6),
                        ("compute_duration_ns", 2), ("batch_size", 2)):
        h_ = histograms[name]
        assert len(h_["counts"]) == len(h_["bounds"]) + 1, name
        assert h_["bounds"] == sorted(h_["bounds"]), name
        assert sum(h_["counts"]) == h_["count"] == count, name
    # Batch sizes 4 and 2 fall in the buckets bounded by exactly 4 and 2 (bounds are inclusive).
    sizes_h = histograms["batch_size"]
    assert sizes_h["sum"] == 6
    assert sizes_h["counts"][sizes_h["bounds"].index(2)] == 1
    assert sizes_h["counts"][sizes_h["bounds"].index(4)] == 1
    # Every request's time in the queue is in the queue histogram's sum and in /stats' queue ns.
    assert histograms["queue_duration_ns"]["sum"] == stats["queue"]["ns"]
    assert histograms["request_duration_ns"]["sum"] == stats["success"]["ns"] + stats["fail"]["ns"]


def test_rows_and_bytes_stats_with_multi_row_requests(make: Callable[..., Harness]) -> None:
    h = make(max_batch_size=8, delay_us=0, manual_clock=False)
    for rows in (3, 1, 2):
        request_id = h.submit_rows(rows)
        wait_completions(h.cq, 1)[request_id]
    stats = h.scheduler.stats()
    assert stats["inference_count"] == 6  # rows, not requests
    assert stats["success"]["count"] == 3
    assert sum(entry["compute_infer"]["count"] for entry in stats["batch_stats"]) == 3


def test_options_are_checked(make: Callable[..., Harness]) -> None:
    with pytest.raises(ValueError, match="preferred batch size 9"):
        make(max_batch_size=8, preferred=[9])
    with pytest.raises(ValueError, match="datatype code 99"):
        make(inputs=[("x", 99, (1,))])
    cq = _core.CompletionQueue()
    with pytest.raises(ValueError, match="at least one engine"):
        _core.Scheduler(_core.SchedulerOptions(), [], cq)
    cq.close()
    options = _core.SchedulerOptions()
    options.inputs = [("x", int(DataType.INT8), [2, -1])]
    assert options.inputs == [("x", int(DataType.INT8), (2, -1))]
    assert options.max_batch_size == 0 and options.manual_clock is False


def test_concurrent_submitters_each_get_their_own_rows(make: Callable[..., Harness]) -> None:
    """Real clock, two instances, four submitting threads, two shapes, 1..3 rows: whatever
    batches form, every request gets exactly its own data back."""
    spec: list[Spec] = [("x", int(DataType.FP32), (-1,))]
    out: list[Spec] = [("y", int(DataType.FP32), (-1,))]
    engines = [_core.identity_engine(), _core.identity_engine(execute_delay_us=50)]
    h = make(
        max_batch_size=8,
        preferred=[4],
        delay_us=100,
        inputs=spec,
        outputs=out,
        engines=engines,
        manual_clock=False,
    )
    per_thread = 400
    expected: dict[int, np.ndarray] = {}

    def submitter(t: int) -> None:
        for i in range(per_thread):
            request_id = t * per_thread + i
            rows, width = 1 + i % 3, 2 + (i + t) % 2
            data = np.full((rows, width), request_id, np.float32)
            expected[request_id] = data  # keeps the buffer alive until the end of the test
            h.scheduler.submit(request_id, [((rows, width), data)])

    threads = [threading.Thread(target=submitter, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    done = wait_completions(h.cq, 4 * per_thread)
    for thread in threads:
        thread.join()

    for request_id, (code, payload) in done.items():
        assert code == StatusCode.OK, payload
        (view,) = payload
        np.testing.assert_array_equal(floats(view), expected[request_id])
    sizes = h.scheduler.batch_sizes()
    assert sum(sizes) == sum(d.shape[0] for d in expected.values())
    assert all(1 <= size <= 8 for size in sizes)
    stats = h.scheduler.stats()
    assert stats["success"]["count"] == 4 * per_thread and stats["pending"] == 0
