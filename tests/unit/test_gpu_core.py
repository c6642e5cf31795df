"""The core's GPU path on a CPU machine: the CUDA loader's report when there is no driver, and,
through the fake driver (tests/fakes/fake_cuda.c, host memory standing in for device memory),
contexts, streams, device buffers, the copies, the pinned pool and its fallback, placement, and
every CUDA error named by its call."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pyserver import _core
from pyserver.backends import Placement, placements
from pyserver.config import load_config
from pyserver.errors import ModelLoadError
from tests.fakes.cuda import FakeCuda
from tests.unit.core_support import wait_completions

FP32, INT64, BYTES = 11, 9, 13
MIB = 2**20


def host_view(array: Any, dtype: Any = np.float32) -> np.ndarray:
    """The fake's device memory is host memory: a numpy view of a DeviceArray's bytes."""
    n = array.nbytes // np.dtype(dtype).itemsize
    raw = (ctypes.c_char * max(array.nbytes, 1)).from_address(array.ptr)
    return np.frombuffer(raw, dtype=dtype, count=n).reshape(array.shape)


class PlusOne:
    """A device engine: OUT = IN + 1 in core-allocated device memory; remembers what it saw."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def execute(self, stream: int, inputs: list[Any], outputs: list[Any]) -> None:
        x = inputs[0]
        out = outputs[0].allocate(x.shape)
        host_view(out)[...] = host_view(x) + 1
        self.seen.append({"stream": stream, "gpu": x.gpu, "shape": x.shape,
                          "cai": x.__cuda_array_interface__, "name": outputs[0].name})


def options(max_batch_size: int = 8, dtype: int = FP32) -> _core.SchedulerOptions:
    o = _core.SchedulerOptions()
    o.model_name = "gpu_model"
    o.max_batch_size = max_batch_size
    o.inputs = [("IN", dtype, [4])]
    o.outputs = [("OUT", dtype, [4])]
    return o


def run(engines: list[Any], batches: list[np.ndarray], opts: _core.SchedulerOptions | None = None
        ) -> dict[int, tuple[int, Any]]:
    """Each array as one request, submitted together under hold so they form one batch."""
    cq = _core.CompletionQueue()
    scheduler = _core.Scheduler(opts or options(), engines, cq)
    try:
        scheduler.hold(len(batches))
        for i, a in enumerate(batches):
            scheduler.submit(i + 1, [(a.shape, a)])
        return wait_completions(cq, len(batches))
    finally:
        scheduler.stop()
        cq.close()


def as_floats(payload: Any) -> np.ndarray:
    shape, view = payload[0]
    return np.frombuffer(view.tobytes(), dtype=np.float32).reshape(shape)


# --- no driver --------------------------------------------------------------------------------

@pytest.fixture
def no_driver(tmp_path: Path) -> Iterator[None]:
    _core.use_cuda_driver(str(tmp_path / "libcuda.so.1"))
    try:
        yield
    finally:
        _core.use_cuda_driver(None)


def test_without_a_driver_the_loader_says_so(no_driver: None) -> None:
    driver = _core.cuda_driver()
    assert driver["available"] is False
    assert driver["devices"] == []
    assert driver["error"].startswith("no CUDA driver was found: ")
    assert "libcuda.so.1" in driver["error"]
    with pytest.raises(_core.CudaUnavailable, match="no CUDA driver was found"):
        _core.device_engine(PlusOne(), 0)
    with pytest.raises(_core.CudaUnavailable, match="no CUDA driver was found"):
        _core.cuda_make_current(0)


def test_a_gpu_model_fails_to_load_without_a_driver(no_driver: None, tmp_path: Path) -> None:
    folder = tmp_path / "resnet"
    (folder / "1").mkdir(parents=True)
    (folder / "config.toml").write_text(
        'backend = "tensorrt"\n[[instance_group]]\nkind = "KIND_GPU"\ncount = 1\n')
    config = load_config(folder)
    with pytest.raises(ModelLoadError, match="model 'resnet' needs a GPU: no CUDA driver was found"):
        placements(config, auto="KIND_GPU")


def test_a_library_without_the_driver_symbols_is_refused(tmp_path: Path) -> None:
    # libm is a real shared library, just not a CUDA driver.
    _core.use_cuda_driver("libm.so.6")
    try:
        driver = _core.cuda_driver()
        assert not driver["available"]
        assert "has no symbol cuInit" in driver["error"]
    finally:
        _core.use_cuda_driver(None)


# --- the fake driver --------------------------------------------------------------------------

def test_devices_are_listed_with_names_and_uuids(fake_cuda: FakeCuda) -> None:
    driver = _core.cuda_driver()
    assert driver["available"] and driver["error"] == ""
    assert driver["driver_version"] == 13000
    assert [(d["index"], d["name"], d["uuid"]) for d in driver["devices"]] == [
        (0, "Fake GPU 0", "GPU-00000000-0000-0000-0000-000000000001"),
        (1, "Fake GPU 1", "GPU-00000000-0000-0000-0000-000000000002"),
    ]
    with pytest.raises(ValueError, match="GPU 2 does not exist: the CUDA driver sees 2 GPU"):
        _core.device_engine(PlusOne(), 2)


def test_a_batch_goes_to_the_gpu_and_back(fake_cuda: FakeCuda) -> None:
    impl = PlusOne()
    engine = _core.device_engine(impl, 1)
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.full((3, 4), 10, dtype=np.float32)
    got = run([engine], [a, b])
    assert got[1][0] == 0 and got[2][0] == 0
    np.testing.assert_array_equal(as_floats(got[1][1]), a + 1)
    np.testing.assert_array_equal(as_floats(got[2][1]), b + 1)
    # one batch of 5 rows: one copy in for the one input, one copy out for the one output
    assert len(impl.seen) == 1 and impl.seen[0]["shape"] == (5, 4)
    counters = fake_cuda.counters()
    assert counters["htod"] == 1 and counters["htod_bytes"] == 5 * 4 * 4
    assert counters["dtoh"] == 1 and counters["dtoh_bytes"] == 5 * 4 * 4
    # the instance's stream, on its GPU, and the CUDA array interface says so
    seen = impl.seen[0]
    assert seen["gpu"] == 1 and seen["name"] == "OUT"
    assert seen["stream"] != 0 and seen["cai"]["stream"] == seen["stream"]
    assert seen["cai"]["version"] == 3 and seen["cai"]["typestr"] == "<f4"
    assert seen["cai"]["shape"] == (5, 4) and seen["cai"]["strides"] is None
    # the worker cleaned up: stream destroyed, device memory freed, context released
    counters = fake_cuda.counters()
    assert counters["stream_create"] == counters["stream_destroy"] == 1
    assert counters["device_bytes"] == 0 and counters["mem_alloc"] == counters["mem_free"]
    # the worker released its context; the pinned pool's region still holds one reference
    assert counters["retain"] == 2 and counters["release"] == 1


def test_each_instance_has_its_stream_and_sets_its_context_once(fake_cuda: FakeCuda) -> None:
    impls = [PlusOne() for _ in range(3)]
    engines = [_core.device_engine(impl, gpu) for impl, gpu in zip(impls, (0, 0, 1))]
    cq = _core.CompletionQueue()
    scheduler = _core.Scheduler(options(max_batch_size=1), engines, cq)
    try:
        # 30 single-row batches over three instances (the caller keeps inputs alive)
        arrays = [np.full((1, 4), i, dtype=np.float32) for i in range(30)]
        for i, a in enumerate(arrays):
            scheduler.submit(i + 1, [(a.shape, a)])
        got = wait_completions(cq, 30)
        streams = [e.stream for e in engines]
        assert all(s != 0 for s in streams) and len(set(streams)) == 3
        for i in range(30):
            assert got[i + 1][0] == 0
            np.testing.assert_array_equal(as_floats(got[i + 1][1]), np.full((1, 4), i + 1))
        for impl, engine in zip(impls, engines):
            assert {s["stream"] for s in impl.seen} <= {engine.stream}
            assert {s["gpu"] for s in impl.seen} <= {engine.gpu}
        assert sum(len(impl.seen) for impl in impls) == 30
        counters = fake_cuda.counters()
        # one context made current per worker thread, however many batches ran
        assert counters["set_current"] == 3
        assert counters["stream_create"] == 3
        assert counters["htod"] == counters["dtoh"] == 30
        # device buffers are kept between batches: one input and one output buffer each
        assert counters["mem_alloc"] == 6
        assert [e.gpu for e in engines] == [0, 0, 1]
        assert all(e.device_memory_bytes > 0 for e in engines)
    finally:
        scheduler.stop()
        cq.close()


def test_inputs_are_gathered_into_pinned_memory(fake_cuda: FakeCuda) -> None:
    _core.configure_pinned_memory(4 * MIB)
    try:
        engine = _core.device_engine(PlusOne(), 0)
        before = _core.memory_stats()
        run([engine], [np.ones((2, 4), np.float32)])
        after = _core.memory_stats()
        assert after["pinned_pool_bytes"] == 4 * MIB
        # one piece for the gathered input, one for the copied-back output
        assert after["pinned_allocations"] - before["pinned_allocations"] == 2
        assert after["fallback_allocations"] == before["fallback_allocations"]
        assert after["pinned_in_use"] == 0 and after["fallback_in_use"] == 0
        assert fake_cuda.counters()["host_alloc"] == 1  # the pool's one region
    finally:
        _core.configure_pinned_memory(256 * MIB)
    # The pool is gone with its last piece, freed here on a thread with no context current:
    # the region is still given back to the driver.
    del engine
    counters = fake_cuda.counters()
    assert counters["host_free"] == 1
    assert counters["retain"] == counters["release"]  # and its context reference with it


def test_staging_falls_back_to_ordinary_memory_when_the_pool_is_full(fake_cuda: FakeCuda) -> None:
    _core.configure_pinned_memory(256)  # room for one small piece only
    try:
        engine = _core.device_engine(PlusOne(), 0)
        a = np.arange(64 * 4, dtype=np.float32).reshape(64, 4)  # 1 KiB: larger than the pool
        got = run([engine], [a], options(max_batch_size=64))
        np.testing.assert_array_equal(as_floats(got[1][1]), a + 1)
        stats = _core.memory_stats()
        assert stats["fallback_allocations"] == 2 and stats["pinned_allocations"] == 0
        # the answer's view still holds the output's staging memory; the input's is back
        assert stats["fallback_in_use"] == 1024 and engine.fallback_bytes == 1024
        del got
        assert _core.memory_stats()["fallback_in_use"] == 0 and engine.fallback_bytes == 0
    finally:
        _core.configure_pinned_memory(256 * MIB)


def test_a_pool_that_cannot_be_locked_falls_back(fake_cuda: FakeCuda) -> None:
    fake_cuda.fail_next("cuMemHostAlloc")
    engine = _core.device_engine(PlusOne(), 0)
    _core.configure_pinned_memory(1 * MIB)
    try:
        engine = _core.device_engine(PlusOne(), 0)
        got = run([engine], [np.ones((1, 4), np.float32)])
        np.testing.assert_array_equal(as_floats(got[1][1]), np.full((1, 4), 2))
        stats = _core.memory_stats()
        assert stats["pinned_pool_bytes"] == 0 and stats["fallback_allocations"] == 2
    finally:
        _core.configure_pinned_memory(256 * MIB)


@pytest.mark.parametrize("call", ["cuMemcpyHtoDAsync_v2", "cuMemAlloc_v2",
                                  "cuMemcpyDtoHAsync_v2", "cuStreamSynchronize"])
def test_a_cuda_error_fails_its_batch_naming_the_call(fake_cuda: FakeCuda, call: str) -> None:
    engine = _core.device_engine(PlusOne(), 0)
    cq = _core.CompletionQueue()
    scheduler = _core.Scheduler(options(max_batch_size=64), [engine], cq)
    try:
        # the first batch warms the buffers, so that cuMemAlloc_v2 is reached on a larger one
        a = np.ones((1, 4), np.float32)
        scheduler.submit(1, [(a.shape, a)])
        assert wait_completions(cq, 1)[1][0] == 0
        fake_cuda.fail_next(call)
        big = np.ones((64, 4), np.float32)
        scheduler.submit(2, [(big.shape, big)])
        code, message = wait_completions(cq, 1)[2]
        assert code != 0
        assert message.startswith("GPU 0: ")
        assert f"{call}: CUDA_ERROR_OUT_OF_MEMORY (out of memory)" in message
        # the instance carries on
        scheduler.submit(3, [(big.shape, big)])
        code, payload = wait_completions(cq, 1)[3]
        assert code == 0
        np.testing.assert_array_equal(as_floats(payload), big + 1)
    finally:
        scheduler.stop()
        cq.close()


def test_a_stream_that_cannot_be_created_fails_every_batch_clearly(fake_cuda: FakeCuda) -> None:
    fake_cuda.fail_next("cuStreamCreate")
    got = run([_core.device_engine(PlusOne(), 0)], [np.ones((1, 4), np.float32)])
    code, message = got[1]
    assert code != 0 and "GPU 0: cuStreamCreate: CUDA_ERROR_OUT_OF_MEMORY" in message


class SetsOwnMemory:
    """Hands the core memory of its own (the CUDA array interface), as the PyTorch engine does;
    `stream` is what its interface says the memory was written on (absent when "absent")."""

    def __init__(self, dtype: Any = np.float32, contiguous: bool = True,
                 stream: Any = "absent") -> None:
        self.dtype = dtype
        self.contiguous = contiguous
        self.stream = stream
        self.kept: list[Any] = []

    def execute(self, stream: int, inputs: list[Any], outputs: list[Any]) -> None:
        x = host_view(inputs[0])
        result = (x * 2).astype(self.dtype)
        if not self.contiguous:
            result = np.asfortranarray(np.repeat(result, 2, axis=1))[:, ::2]

        class Owned:  # the fake's device memory is host memory: numpy's will do
            def __init__(self, a: np.ndarray, stream: Any) -> None:
                self.a = a
                self.__cuda_array_interface__ = {
                    "shape": a.shape, "typestr": a.dtype.str,
                    "data": (a.ctypes.data, False), "version": 3,
                    "strides": None if a.flags.c_contiguous else a.strides,
                }
                if stream != "absent":
                    self.__cuda_array_interface__["stream"] = stream

        owned = Owned(result, self.stream)
        outputs[0].set(owned)
        self.kept.append(outputs[0])


def test_an_engine_may_hand_over_its_own_device_memory(fake_cuda: FakeCuda) -> None:
    impl = SetsOwnMemory()
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    got = run([_core.device_engine(impl, 0)], [a])
    np.testing.assert_array_equal(as_floats(got[1][1]), a * 2)
    # the output slot is of no use once its batch is done
    with pytest.raises(ValueError, match="belongs to a batch that has finished"):
        impl.kept[0].allocate((1, 4))


def test_memory_written_on_another_stream_is_waited_for(fake_cuda: FakeCuda) -> None:
    # 1: the legacy default stream, where the producer says it wrote the output
    impl = SetsOwnMemory(stream=1)
    a = np.ones((2, 4), dtype=np.float32)
    got = run([_core.device_engine(impl, 0)], [a])
    np.testing.assert_array_equal(as_floats(got[1][1]), a * 2)
    assert fake_cuda.counters()["sync_default"] == 1
    # the instance's own stream, or none given: no extra wait
    for stream in (None, "absent"):
        run([_core.device_engine(SetsOwnMemory(stream=stream), 0)], [a])
    assert fake_cuda.counters()["sync_default"] == 1


def test_stream_zero_is_refused_as_the_interface_says(fake_cuda: FakeCuda) -> None:
    got = run([_core.device_engine(SetsOwnMemory(stream=0), 0)], [np.ones((1, 4), np.float32)])
    code, message = got[1]
    assert code != 0 and "stream 0 is not allowed" in message


class AllocatesTwice:
    def __init__(self, shape: tuple[int, ...] | None = None) -> None:
        self.shape = shape

    def execute(self, stream: int, inputs: list[Any], outputs: list[Any]) -> None:
        outputs[0].allocate(self.shape or inputs[0].shape)
        outputs[0].allocate(inputs[0].shape)


def test_an_output_is_allocated_once_per_batch(fake_cuda: FakeCuda) -> None:
    got = run([_core.device_engine(AllocatesTwice(), 0)], [np.ones((1, 4), np.float32)])
    code, message = got[1]
    assert code != 0 and "output 'OUT': already allocated or set" in message


def test_an_absurd_output_shape_is_refused_at_once(fake_cuda: FakeCuda) -> None:
    # 2**61 FP32 elements: no size arithmetic may overflow, and nothing may loop on it
    got = run([_core.device_engine(AllocatesTwice((2**61 + 1,)), 0)],
              [np.ones((1, 4), np.float32)])
    code, message = got[1]
    assert code != 0 and "output 'OUT': invalid shape [2305843009213693953] of FP32" in message


def test_an_output_of_the_wrong_datatype_fails_its_batch(fake_cuda: FakeCuda) -> None:
    got = run([_core.device_engine(SetsOwnMemory(np.float64), 0)], [np.ones((1, 4), np.float32)])
    code, message = got[1]
    assert code != 0 and "output 'OUT'" in message and "FP64" in message and "FP32" in message


def test_a_strided_output_is_refused(fake_cuda: FakeCuda) -> None:
    got = run([_core.device_engine(SetsOwnMemory(contiguous=False), 0)],
              [np.ones((2, 4), np.float32)])
    code, message = got[1]
    assert code != 0 and "not C-contiguous" in message


class Broken:
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def execute(self, stream: int, inputs: list[Any], outputs: list[Any]) -> None:
        if self.mode == "raise":
            raise RuntimeError("kernel launch failed")
        if self.mode == "bad-shape":
            outputs[0].allocate((-3, 4))


@pytest.mark.parametrize(("mode", "expected"), [
    ("raise", "engine.execute raised RuntimeError: kernel launch failed"),
    ("nothing", "output 'OUT': the engine did not produce it"),
    ("bad-shape", "output 'OUT': invalid shape [-3, 4]"),
])
def test_a_failing_engine_fails_its_batch_alone(fake_cuda: FakeCuda, mode: str, expected: str) -> None:
    got = run([_core.device_engine(Broken(mode), 0)], [np.ones((1, 4), np.float32)])
    code, message = got[1]
    assert code != 0 and expected in message


def test_bytes_tensors_do_not_go_to_a_gpu(fake_cuda: FakeCuda) -> None:
    opts = options(dtype=BYTES)
    framed = np.frombuffer(b"\x01\x00\x00\x00a" * 4, dtype=np.uint8)
    cq = _core.CompletionQueue()
    scheduler = _core.Scheduler(opts, [_core.device_engine(PlusOne(), 0)], cq)
    try:
        scheduler.submit(1, [((1, 4), framed)])
        code, message = wait_completions(cq, 1)[1]
        assert code != 0 and "BYTES tensors cannot go to a GPU" in message
    finally:
        scheduler.stop()
        cq.close()


# --- the pinned pool over the host-memory stand-in -------------------------------------------

def test_pool_pieces_are_aligned_counted_and_returned() -> None:
    pool = _core.HeapPinnedPool(4096)
    a = pool.allocate(1000)  # rounded up to 1024 (256-byte pieces)
    b = pool.allocate(3000)  # 3072: the pool is now full
    assert len(memoryview(a)) == 1000 and len(memoryview(b)) == 3000
    assert pool.stats() == {"pinned_pool_bytes": 4096, "pinned_in_use": 4096,
                            "fallback_in_use": 0, "pinned_allocations": 2,
                            "fallback_allocations": 0}
    assert pool.account_pinned == 4096 and pool.account_fallback == 0
    c = pool.allocate(1)  # no room: ordinary memory
    assert pool.stats()["fallback_in_use"] == 256 and pool.account_fallback == 256
    memoryview(c)[0] = 7  # usable memory all the same
    a.release()
    b.release()
    c.release()
    assert pool.stats()["pinned_in_use"] == 0 and pool.stats()["fallback_in_use"] == 0
    assert pool.account_pinned == 0 and pool.account_fallback == 0


def test_freed_neighbours_merge_so_a_large_piece_fits_again() -> None:
    pool = _core.HeapPinnedPool(3 * 1024)
    pieces = [pool.allocate(1024) for _ in range(3)]
    for p in (pieces[1], pieces[0], pieces[2]):  # middle first: merges on both sides
        p.release()
    whole = pool.allocate(3 * 1024)
    assert pool.stats()["fallback_allocations"] == 0
    assert pool.stats()["pinned_in_use"] == 3 * 1024
    whole.release()


def test_a_pool_of_zero_bytes_serves_everything_from_ordinary_memory() -> None:
    pool = _core.HeapPinnedPool(0)
    piece = pool.allocate(100)
    assert pool.stats()["pinned_pool_bytes"] == 0 and pool.stats()["fallback_allocations"] == 1
    piece.release()


# --- placement --------------------------------------------------------------------------------

def gpu_config(tmp_path: Path, groups: str) -> Any:
    folder = tmp_path / "m"
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text('backend = "pytorch"\n' + groups)
    return load_config(folder)


def test_kind_gpu_without_gpus_places_count_on_every_visible_gpu(
        fake_cuda: FakeCuda, tmp_path: Path) -> None:
    config = gpu_config(tmp_path, '[[instance_group]]\nkind = "KIND_GPU"\ncount = 2\n')
    assert placements(config, auto="KIND_GPU") == [Placement(0), Placement(0), Placement(1),
                                                   Placement(1)]


def test_gpus_restrict_placement_and_groups_add_up(fake_cuda: FakeCuda, tmp_path: Path) -> None:
    config = gpu_config(
        tmp_path,
        '[[instance_group]]\nkind = "KIND_GPU"\ncount = 3\ngpus = [1]\n'
        '[[instance_group]]\nkind = "KIND_CPU"\ncount = 1\n')
    assert placements(config, auto="KIND_GPU") == [Placement(1)] * 3 + [Placement()]
    assert [p.kind for p in placements(config, auto="KIND_GPU")] == ["KIND_GPU"] * 3 + ["KIND_CPU"]


def test_a_gpu_that_is_not_there_is_a_load_error(fake_cuda: FakeCuda, tmp_path: Path) -> None:
    config = gpu_config(tmp_path, '[[instance_group]]\nkind = "KIND_GPU"\ngpus = [0, 5]\n')
    with pytest.raises(ModelLoadError, match=r"instance_group\[0\]\.gpus: GPU 5 is not visible"):
        placements(config, auto="KIND_GPU")


def test_kind_auto_follows_the_backend(fake_cuda: FakeCuda, tmp_path: Path) -> None:
    config = gpu_config(tmp_path, '[[instance_group]]\nkind = "KIND_AUTO"\ncount = 1\n')
    assert placements(config, auto="KIND_GPU") == [Placement(0), Placement(1)]
    assert placements(config, auto="KIND_CPU") == [Placement()]


# --- the statistics' split, from events on the stream -----------------------------------------

class SlowKernel(PlusOne):
    """The model takes 30 ms (its work is done at once on the fake, so the wait stands in)."""

    def execute(self, stream: int, inputs: list[Any], outputs: list[Any]) -> None:
        import time

        super().execute(stream, inputs, outputs)
        time.sleep(0.03)


def run_for_stats(engine: Any) -> dict[str, Any]:
    cq = _core.CompletionQueue()
    scheduler = _core.Scheduler(options(), [engine], cq)
    try:
        a = np.ones((2, 4), np.float32)
        scheduler.submit(1, [(a.shape, a)])
        assert wait_completions(cq, 1)[1][0] == 0
        return scheduler.stats()
    finally:
        scheduler.stop()
        cq.close()


def test_device_events_split_copies_from_the_model(fake_cuda: FakeCuda) -> None:
    stats = run_for_stats(_core.device_engine(SlowKernel(), 0))
    infer_ms = stats["compute_infer"]["ns"] / 1e6
    # the model's 30 ms fall between the marks after the copies in and before the copies back
    assert 25 <= infer_ms < 1000
    assert stats["compute_input"]["ns"] / 1e6 < 25 and stats["compute_output"]["ns"] / 1e6 < 25
    counters = fake_cuda.counters()
    assert counters["event_create"] == counters["event_destroy"] == 4
    assert counters["event_record"] == 4  # four marks for the one batch


def test_copy_totals_count_bytes_each_way(fake_cuda: FakeCuda) -> None:
    engine = _core.device_engine(PlusOne(), 0)
    run([engine], [np.ones((3, 4), np.float32), np.ones((2, 4), np.float32)])
    totals = engine.copy_stats()
    assert totals["htod_bytes"] == totals["dtoh_bytes"] == 5 * 4 * 4
    # the copy times are the device's part of compute_input and compute_output
    engine = _core.device_engine(PlusOne(), 0)
    stats = run_for_stats(engine)
    totals = engine.copy_stats()
    assert totals["htod_bytes"] == totals["dtoh_bytes"] == 2 * 4 * 4
    assert totals["htod_ns"] <= stats["compute_input"]["ns"]
    assert totals["dtoh_ns"] <= stats["compute_output"]["ns"]


def test_without_events_the_whole_batch_is_compute_infer(fake_cuda: FakeCuda) -> None:
    fake_cuda.fail_next("cuEventCreate")
    stats = run_for_stats(_core.device_engine(SlowKernel(), 0))
    assert stats["success"]["count"] == 1  # timing is lost, not the batch
    assert stats["compute_infer"]["ns"] / 1e6 >= 25
    assert fake_cuda.counters()["event_record"] == 0
