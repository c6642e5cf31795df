"""Engines under the C++ core: the identity engine (every datatype, byte-exact, zero copy) and
engines written in Python (numpy in, numpy out, errors as completions, lifetimes, instances).

Completions are awaited on the CompletionQueue's eventfd with select() and a bounded timeout.
"""

from __future__ import annotations

import gc
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from pyserver import _core
from pyserver.completions import StatusCode
from pyserver.types import DataType
from tests.unit.core_support import DELAY_US, TIMEOUT_S, Model, Spec, frame, wait_completions


def unframe(data: bytes) -> list[bytes]:
    items, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("<I", data, pos)
        items.append(data[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return items


def fp32(name: str, dims: Sequence[int] = (4,)) -> Spec:
    return (name, int(DataType.FP32), tuple(dims))


def random_rows(dtype: DataType, rows: int, width: int, rng: np.random.Generator) -> bytes:
    if dtype is DataType.BYTES:
        items = [
            bytes(rng.integers(0, 256, size=int(rng.integers(0, 9)), dtype=np.uint8))
            for _ in range(rows * width)
        ]
        items[0] = b"\x00trailing\x00"
        return frame(items)
    if dtype is DataType.BOOL:
        return rng.integers(0, 2, size=rows * width, dtype=np.uint8).astype(np.bool_).tobytes()
    if dtype is DataType.FP16:
        return rng.standard_normal(rows * width).astype(np.float16).tobytes()
    return rng.integers(0, 256, size=rows * width * dtype.itemsize, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("dtype", list(DataType), ids=lambda d: d.name)
def test_identity_round_trips_every_dtype(make: Callable[..., Model], dtype: DataType) -> None:
    spec: list[Spec] = [("x", int(dtype), (3,))]
    out: list[Spec] = [("y", int(dtype), (3,))]
    m = make(
        spec, out, [_core.identity_engine()], max_batch_size=4, delay_us=DELAY_US, manual_clock=True
    )
    rng = np.random.default_rng(int(dtype))
    payloads = {
        m.submit(((rows, 3), data)): (rows, data)
        for rows in (1, 2, 1)
        for data in [random_rows(dtype, rows, 3, rng)]
    }
    done = wait_completions(m.cq, 3)
    assert m.scheduler.batch_sizes() == [4]  # full: one batch, no clock needed
    for request_id, (rows, data) in payloads.items():
        code, (view,) = done[request_id]
        assert code == StatusCode.OK
        shape, array = view
        assert shape == (rows, 3)
        assert array.dtype == np.uint8 and array.ndim == 1
        assert array.tobytes() == data
        assert not array.flags.writeable


def test_identity_views_share_one_buffer_and_outlive_the_scheduler() -> None:
    m = Model(
        [fp32("x")],
        [fp32("y")],
        [_core.identity_engine()],
        max_batch_size=4,
        delay_us=DELAY_US,
        manual_clock=True,
    )
    data = [np.full((1, 4), i, np.float32) for i in range(4)]
    ids = [m.submit(((1, 4), d)) for d in data]
    done = wait_completions(m.cq, 4)
    views = [done[i][1][0][1] for i in ids]
    bases = {id(v.base) for v in views}
    assert len(bases) == 1  # one capsule for the batch's output buffer
    m.close()
    del m, done
    gc.collect()
    for view, d in zip(views, data, strict=True):
        np.testing.assert_array_equal(np.frombuffer(view, np.float32), d.ravel())


def test_identity_execute_delay(make: Callable[..., Model]) -> None:
    m = make([fp32("x")], [fp32("y")], [_core.identity_engine(execute_delay_us=30_000)])
    start = time.monotonic()
    request_id = m.submit(((1, 4), np.zeros((1, 4), np.float32)))
    assert wait_completions(m.cq, 1)[request_id][0] == StatusCode.OK
    assert time.monotonic() - start >= 0.03
    assert m.scheduler.stats()["compute_infer"]["ns"] >= 30_000_000
    with pytest.raises(ValueError):
        _core.identity_engine(execute_delay_us=-1)


def test_identity_needs_an_input_per_output(make: Callable[..., Model]) -> None:
    m = make([fp32("x")], [fp32("y"), fp32("z")], [_core.identity_engine()])
    request_id = m.submit(((1, 4), np.zeros((1, 4), np.float32)))
    code, message = wait_completions(m.cq, 1)[request_id]
    assert code == StatusCode.INTERNAL and "identity" in message


class Numpy:
    """x*2 and the row sums; records what it was given."""

    def __init__(self) -> None:
        self.inputs: list[np.ndarray] = []

    def execute(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        (x,) = inputs
        self.inputs.append(x)
        return [x * 2, x.sum(axis=1, keepdims=True)]


def test_python_engine_with_numpy(make: Callable[..., Model]) -> None:
    engine = Numpy()
    m = make(
        [fp32("x")],
        [fp32("y"), fp32("s", (1,))],
        [_core.python_engine(engine)],
        max_batch_size=8,
        delay_us=DELAY_US,
        manual_clock=True,
    )
    m.scheduler.hold(3)
    data = {
        m.submit(((rows, 4), d)): d
        for rows in (1, 3, 2)
        for d in [np.arange(rows * 4, dtype=np.float32).reshape(rows, 4) + rows]
    }
    m.scheduler.hold(0)
    m.scheduler.advance_clock(DELAY_US)
    done = wait_completions(m.cq, 3)

    (x,) = engine.inputs
    assert x.dtype == np.float32 and x.shape == (6, 4)
    assert type(x.base).__name__ == "PyCapsule"  # a view of the gathered buffer, no copy
    for request_id, d in data.items():
        code, ((y_shape, y), (s_shape, s)) = done[request_id]
        assert code == StatusCode.OK
        assert y_shape == d.shape and s_shape == (d.shape[0], 1)
        np.testing.assert_array_equal(np.frombuffer(y, np.float32).reshape(y_shape), d * 2)
        np.testing.assert_array_equal(
            np.frombuffer(s, np.float32).reshape(s_shape), d.sum(axis=1, keepdims=True)
        )
    # the engine kept its input array: still valid after the batch is long done
    np.testing.assert_array_equal(x, np.concatenate(list(data.values())))


def test_python_engine_dtype_mismatch(make: Callable[..., Model]) -> None:
    class Doubles:
        def execute(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
            return [inputs[0].astype(np.float64)]

    m = make(
        [fp32("x")],
        [fp32("y")],
        [_core.python_engine(Doubles())],
        max_batch_size=8,
        delay_us=DELAY_US,
        manual_clock=True,
    )
    ids = [m.submit(((1, 4), np.zeros((1, 4), np.float32))) for _ in range(2)]
    m.scheduler.advance_clock(DELAY_US)
    done = wait_completions(m.cq, 2)
    for request_id in ids:
        code, message = done[request_id]
        assert code == StatusCode.INTERNAL
        assert message == "engine returned float64 for output 'y'; the model config says FP32"
    assert m.scheduler.stats()["fail"]["count"] == 2


@pytest.mark.parametrize(
    ("result", "needle"),
    [
        (lambda x: [x, x], "returned 2 outputs; the model config has 1"),
        (lambda x: [x[:1]], "first dimension must be"),
        (lambda x: 42, "expected a sequence of arrays"),
        (lambda x: [x.reshape(-1)[:3]], "first dimension must be"),
    ],
)
def test_python_engine_bad_outputs(
    make: Callable[..., Model], result: Callable[[np.ndarray], Any], needle: str
) -> None:
    class Bad:
        def execute(self, inputs: list[np.ndarray]) -> Any:
            return result(inputs[0])

    m = make(
        [fp32("x")],
        [fp32("y")],
        [_core.python_engine(Bad())],
        max_batch_size=8,
        delay_us=DELAY_US,
        manual_clock=True,
    )
    ids = [m.submit(((1, 4), np.zeros((1, 4), np.float32))) for _ in range(2)]
    m.scheduler.advance_clock(DELAY_US)
    done = wait_completions(m.cq, 2)
    for request_id in ids:
        code, message = done[request_id]
        assert code == StatusCode.INTERNAL and needle in message, message


def test_python_engine_exception_fails_the_batch_only(make: Callable[..., Model]) -> None:
    class FailsOnce:
        calls = 0

        def execute(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
            self.calls += 1
            if self.calls == 1:
                raise ValueError("boom at batch one")
            return [inputs[0] + 1]

    m = make(
        [fp32("x")],
        [fp32("y")],
        [_core.python_engine(FailsOnce())],
        max_batch_size=8,
        delay_us=DELAY_US,
        manual_clock=True,
    )
    first = [m.submit(((1, 4), np.zeros((1, 4), np.float32))) for _ in range(3)]
    m.scheduler.advance_clock(DELAY_US)
    done = wait_completions(m.cq, 3)
    for request_id in first:
        code, message = done[request_id]
        assert code == StatusCode.INTERNAL
        assert "ValueError: boom at batch one" in message

    second = m.submit(((1, 4), np.ones((1, 4), np.float32)))
    m.scheduler.advance_clock(DELAY_US)
    code, ((_, y),) = wait_completions(m.cq, 1)[second]
    assert code == StatusCode.OK
    np.testing.assert_array_equal(np.frombuffer(y, np.float32), np.full(4, 2, np.float32))
    assert m.scheduler.batch_sizes() == [3, 1]


def test_python_engine_bytes_in_and_out(make: Callable[..., Model]) -> None:
    seen: list[np.ndarray] = []

    class Upper:
        def execute(self, inputs: list[np.ndarray]) -> list[Any]:
            (s,) = inputs
            seen.append(s)
            upper = np.array([b.upper() for b in s.ravel()], dtype=object).reshape(s.shape)
            text = [[b.decode() + "!" for b in row] for row in s]  # lists of str work too
            return [upper, text]

    spec: list[Spec] = [("s", int(DataType.BYTES), (-1,))]
    out: list[Spec] = [("u", int(DataType.BYTES), (-1,)), ("t", int(DataType.BYTES), (-1,))]
    m = make(
        spec,
        out,
        [_core.python_engine(Upper())],
        max_batch_size=8,
        delay_us=DELAY_US,
        manual_clock=True,
    )
    requests = [[[b"ab", b"c\x00"]], [[b"", b"xyz"], [b"q", b"r"]]]
    ids = [m.submit(((len(r), 2), frame([b for row in r for b in row]))) for r in requests]
    m.scheduler.advance_clock(DELAY_US)
    done = wait_completions(m.cq, 2)

    (s,) = seen
    assert s.dtype == object and s.shape == (3, 2)
    assert s.tolist() == [[b"ab", b"c\x00"], [b"", b"xyz"], [b"q", b"r"]]
    for request_id, rows in zip(ids, requests, strict=True):
        code, ((u_shape, u), (t_shape, t)) = done[request_id]
        assert code == StatusCode.OK
        assert u_shape == t_shape == (len(rows), 2)
        flat = [b for row in rows for b in row]
        assert unframe(u.tobytes()) == [b.upper() for b in flat]
        assert unframe(t.tobytes()) == [b + b"!" for b in flat]


def test_python_engine_bytes_output_rejects_numbers(make: Callable[..., Model]) -> None:
    class Numbers:
        def execute(self, inputs: list[np.ndarray]) -> list[Any]:
            return [np.array([[1.5, 2.5]], dtype=object)]

    m = make([fp32("x")], [("t", int(DataType.BYTES), (2,))], [_core.python_engine(Numbers())])
    request_id = m.submit(((1, 4), np.zeros((1, 4), np.float32)))
    code, message = wait_completions(m.cq, 1)[request_id]
    assert code == StatusCode.INTERNAL and "float element for BYTES output 't'" in message


def test_python_engine_bf16_and_fp16(make: Callable[..., Model]) -> None:
    seen: list[np.dtype[Any]] = []

    class Echo:
        def execute(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
            seen.extend(x.dtype for x in inputs)
            return [inputs[0], inputs[1] * 2]

    spec: list[Spec] = [("b", int(DataType.BF16), (2,)), ("h", int(DataType.FP16), (2,))]
    out: list[Spec] = [("b2", int(DataType.BF16), (2,)), ("h2", int(DataType.FP16), (2,))]
    m = make(spec, out, [_core.python_engine(Echo())])
    b = np.array([[0x3F80, 0x4000]], np.uint16)  # bf16 1.0 and 2.0
    h = np.array([[1.5, -2.0]], np.float16)
    request_id = m.submit(((1, 2), b), ((1, 2), h))
    code, ((_, b2), (_, h2)) = wait_completions(m.cq, 1)[request_id]
    assert code == StatusCode.OK
    assert seen == [np.dtype(np.uint16), np.dtype(np.float16)]
    assert b2.tobytes() == b.tobytes()
    np.testing.assert_array_equal(np.frombuffer(h2, np.float16), (h * 2).ravel())


def test_python_engine_outputs_outlive_the_scheduler() -> None:
    class PlusOne:
        def execute(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
            return [inputs[0] + 1]

    m = Model(
        [fp32("x")],
        [fp32("y")],
        [_core.python_engine(PlusOne())],
        max_batch_size=8,
        delay_us=DELAY_US,
        manual_clock=True,
    )
    data = [np.full((1, 4), i, np.float32) for i in range(3)]
    ids = [m.submit(((1, 4), d)) for d in data]
    m.scheduler.advance_clock(DELAY_US)
    done = wait_completions(m.cq, 3)
    views = [done[i][1][0][1] for i in ids]
    m.close()
    del m, done
    gc.collect()
    for view, d in zip(views, data, strict=True):
        np.testing.assert_array_equal(np.frombuffer(view, np.float32), d.ravel() + 1)
    del views
    gc.collect()  # the last owner goes here, on this thread, with the GIL held


def test_two_instances_execute_at_once(make: Callable[..., Model]) -> None:
    barrier = threading.Barrier(2, timeout=TIMEOUT_S)
    threads: set[int] = set()

    class Meet:
        def execute(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
            threads.add(threading.get_ident())
            barrier.wait()  # passes only when both instances are inside execute together
            return [inputs[0]]

    m = make(
        [fp32("x")],
        [fp32("y")],
        [_core.python_engine(Meet()), _core.python_engine(Meet())],
        max_batch_size=1,
    )
    ids = [m.submit(((1, 4), np.full((1, 4), i, np.float32))) for i in range(2)]
    done = wait_completions(m.cq, 2)
    for request_id in ids:
        code, payload = done[request_id]
        assert code == StatusCode.OK, payload
    assert len(threads) == 2 and threading.get_ident() not in threads
    assert m.scheduler.batch_sizes() == [1, 1]


def test_python_engine_needs_execute() -> None:
    with pytest.raises(TypeError, match="execute"):
        _core.python_engine(object())
