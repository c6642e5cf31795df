"""Typed stub for the compiled core, ``pyserver._core`` (csrc/bindings/module.cc).

The core queues requests, forms dynamic batches, gathers inputs into one contiguous buffer per
input, runs batches on engine instances (one worker thread each) and hands every request its own
view of the batch's outputs through a CompletionQueue whose eventfd the event loop watches.

Datatype codes are Triton's TYPE_* numbers (see pyserver.types.DataType): BOOL=1, UINT8=2,
UINT16=3, UINT32=4, UINT64=5, INT8=6, INT16=7, INT32=8, INT64=9, FP16=10, FP32=11, FP64=12,
BYTES=13, BF16=14. Status codes: STATUS_CODES below (pyserver.completions.StatusCode).
"""


from collections.abc import Sequence
from typing import Any, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt
from typing_extensions import Buffer

# (name, datatype code, dims without the batch dimension; -1 = any size)
TensorSpec: TypeAlias = tuple[str, int, Sequence[int]]
# one output of one request: (shape including the batch dimension, flat uint8 view of its bytes;
# for BYTES the view holds the 4-byte length framing of exactly this request's elements)
OutputView: TypeAlias = tuple[tuple[int, ...], npt.NDArray[np.uint8]]
# (request_id, status code, payload): status 0 -> list[OutputView] in the model's output order;
# any other status -> the error message (str)
Completion: TypeAlias = tuple[int, int, Any]

class PythonEngine(Protocol):
    """An engine written in Python, called on an instance's worker thread once per batch with the
    GIL held. Inputs are numpy arrays whose first dimension is the batch (BYTES inputs arrive as
    object arrays of ``bytes``); it returns one array per configured output, in output order,
    each with the batch's row count as its first dimension (BYTES outputs as object arrays)."""

    def execute(self, inputs: list[npt.NDArray[Any]]) -> Sequence[npt.NDArray[Any]]: ...

# A completion's status code by name (csrc/core/status.h, the one table of these numbers);
# pyserver.completions.StatusCode is the enum made from it.
STATUS_CODES: dict[str, int]

class Engine:
    """An engine handle the scheduler can run: make one per instance."""

class IdentityEngine(Engine):
    """The C++ identity engine; counts what it runs."""
    @property
    def executions(self) -> int:
        """Batches executed."""
    @property
    def rows(self) -> int:
        """Rows executed (the first input's first dimension, summed)."""

def identity_engine(execute_delay_us: int = 0) -> IdentityEngine:
    """C++ identity: output i is input i (same bytes, zero copy); sleeps execute_delay_us per
    batch."""

def python_engine(engine: PythonEngine) -> Engine: ...

class CompletionQueue:
    def __init__(self) -> None: ...
    def fileno(self) -> int:
        """The eventfd: readable when completions are waiting."""
    def drain(self) -> list[Completion]:
        """Reset the eventfd and return every waiting completion (call on the loop thread)."""
    def close(self) -> None: ...

class QueuePolicy:
    """Triton's ModelQueuePolicy: 0 = no timeout / an unbounded queue."""

    timeout_action: str  # "REJECT" or "DELAY"
    default_timeout_us: int
    allow_timeout_override: bool  # a request's timeout may shorten the default
    max_queue_size: int
    def __init__(self) -> None: ...

class MonitorTensor:
    """One monitored tensor (csrc/core/monitor.h). Inputs: a value histogram over `buckets`
    (every value, or per position of dims with per_feature), NaN and +-Inf counts; BYTES inputs:
    a histogram of element lengths. Outputs: class counts of integer values in [0, classes), a
    value histogram, or with `top` each row's largest score (histogram) and its position (class)."""

    name: str
    input: bool  # False: an output
    buckets: list[float]  # upper bounds, finite and strictly increasing (Prometheus' le)
    per_feature: bool
    classes: int
    top: bool
    reference_first_window: bool  # the first window after monitor_start is the drift reference
    def __init__(self) -> None: ...

class MonitorOptions:
    sample_every: int  # measure every Nth batch
    window_ns: int  # the sliding window, in `intervals` ring slots
    intervals: int
    tensors: list[MonitorTensor]  # a copy; assign a new list to change it. Empty: no monitor
    def __init__(self) -> None: ...

class SchedulerOptions:
    model_name: str
    max_batch_size: int  # 0: no batching, the shape has no batch dimension
    preferred_batch_sizes: list[int]
    max_queue_delay_us: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    dynamic_batching: bool  # False: each request is its own batch (Triton's default scheduler)
    priority_levels: int  # 0: one level, request priorities ignored
    default_priority_level: int  # 1..priority_levels when there are levels, else 0
    default_queue_policy: QueuePolicy
    priority_queue_policy: dict[int, QueuePolicy]  # level (1-based) -> its policy (a copy)
    preserve_ordering: bool  # completions leave in arrival order
    latency_target_us: int  # 0 = off; else the batcher picks delay and size (scheduler.h)
    manual_clock: bool  # test hook: time moves only through Scheduler.advance_clock
    monitor: MonitorOptions  # no tensors: no monitor
    def __init__(self) -> None: ...

class Scheduler:
    def __init__(
        self, options: SchedulerOptions, engines: Sequence[Engine], completions: CompletionQueue
    ) -> None:
        """Starts one batcher thread and one worker thread per engine (instance)."""
    def submit(
        self,
        request_id: int,
        inputs: Sequence[tuple[Sequence[int], Buffer]],
        priority: int = 0,
        timeout_us: int = 0,
    ) -> None:
        """Queue one request: one (shape, buffer) per model input, in the model's input order.
        priority: 1 = highest, 0 = the model's default level; timeout_us: the request's queue
        timeout (counts only where the level's policy allows overriding, and only to shorten).
        The caller keeps every buffer alive until the request's completion has been drained.
        Problems with the request (shape, size, priority, a full queue, stopped scheduler)
        come back as an error completion, never as an exception."""
    def cancel(self, request_id: int) -> bool:
        """Take a still-queued request out of the queue: it completes CANCELLED (and is counted
        so). False when it is not queued (running, finished or unknown)."""
    def queue_full(self) -> bool:
        """True when a request of any priority would be refused now (every level full)."""
    def queued(self) -> int: ...
    def stats(self) -> dict[str, Any]:
        """Triton-shaped statistics: inference_count, execution_count, last_inference (ms since
        the epoch), success/fail/queue/compute_input/compute_infer/compute_output as
        {"count", "ns"}, batch_stats [{"batch_size", "compute_input", "compute_infer",
        "compute_output"}], pending (requests queued or executing), queued (waiting in the
        queue), fail_by_reason
        {"REJECTED", "CANCELED", "BACKEND", "OTHER": count}, histograms
        {"request_duration_ns", "queue_duration_ns", "compute_duration_ns", "batch_size":
        {"bounds": [inclusive upper bounds], "counts": [per bucket, the last is +Inf],
        "sum", "count"}}."""
    def record_failure(self, duration_ns: int, rejected: bool = False) -> None:
        """Count a request that failed before it reached the queue: validation (OTHER) or,
        with rejected, refused for a full queue (REJECTED)."""
    def pending(self) -> int: ...
    def stop(self) -> None:
        """Fail every queued request with UNAVAILABLE, finish running batches, join threads."""
    # deterministic test hooks
    def hold(self, queued: int) -> None:
        """Form no batch until at least `queued` requests are queued; hold(0) releases."""
    def advance_clock(self, microseconds: int) -> None:
        """With manual_clock: move the scheduler's clock forward and wake the batcher."""
    def estimated_execution_us(self, rows: int) -> float:
        """The latency target's estimate of a batch's execution time (0 until measured)."""
    def latency_batch_limit(self) -> int:
        """The largest batch whose estimated execution fits in half the latency target."""
    def batch_sizes(self) -> list[int]:
        """Every executed batch's size (rows), in execution order (test hook)."""
    # monitoring (SchedulerOptions.monitor); ValueError when the model has none
    def monitor_start(self) -> None:
        """Count from now: batches before the first start are not measured; a restart clears
        every count and a first-window reference (a reference sample set before is kept)."""
    def monitor_set_reference(self, input: str, datatype: int, data: Buffer) -> None:
        """The drift reference of monitored input `input`: a C-contiguous sample of rows of
        its values in `datatype`, histogrammed by the core (the GIL released meanwhile)."""
    def monitor_snapshot(self) -> dict[str, Any] | None:
        """None without monitoring. Else {"running", "started_ns", "now_ns" (the scheduler's
        clock), "window_ns", "interval_ns", "sample_every", "batches_seen", "batches_sampled",
        "batches_failed", "tensors": [{"name", "input", "datatype", "buckets", "per_feature",
        "top", "features", "class_count", "total", "window", "reference" (None without one),
        "reference_source" ("file", "first_window" or ""), "psi" (per feature; NaN without
        data), "psi_pooled"}]}; each span {"counts" (features x (buckets + 1), feature-major;
        finite values only), "sums" (per feature), "nan", "inf", "elements" (all values),
        "classes" (class_count + 1: the last is outside the classes)}."""

# --- the GPU path (csrc/core/cuda_driver.h, pinned_pool.h, gpu_engine.h) -------------------------

class CudaUnavailable(RuntimeError):
    """No CUDA driver could be loaded (or it found no GPU); the message says why."""

class CudaError(RuntimeError):
    """A CUDA driver call failed; the message names the call and the driver's error."""

def cuda_driver() -> dict[str, Any]:
    """What the CUDA driver offers, loaded with dlopen on first use (libcuda.so.1, or the file
    named by $PYSERVER_CUDA_DRIVER): {"available": bool, "error": str ("" when available),
    "library": str, "driver_version": int, "devices": [{"index": int, "name": str, "uuid": str
    ("GPU-..."), "total_memory": int}]}. Never raises."""

def cuda_make_current(gpu: int) -> None:
    """Make GPU `gpu`'s primary context current on the calling thread (so that libraries built on
    the CUDA runtime, TensorRT among them, work on that GPU). Raises CudaUnavailable/CudaError."""

def configure_pinned_memory(pool_byte_size: int) -> None:
    """Size of the pinned host memory pool (taken from the driver when the first GPU engine is
    made; 0 = no pool, every staging buffer is ordinary memory). Call before any GPU engine."""

def memory_stats() -> dict[str, int]:
    """The process's staging memory: {"pinned_pool_bytes", "pinned_in_use", "fallback_in_use",
    "pinned_allocations", "fallback_allocations"} (allocations are counts since start)."""

class DeviceArray:
    """A tensor in device memory, handed to a device engine (an input, or an output the core
    allocated). Valid until execute returns and the batch's copies are done; zero copy for
    consumers of the CUDA array interface (torch.as_tensor, cupy.asarray)."""

    @property
    def ptr(self) -> int: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def datatype(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def gpu(self) -> int: ...
    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        """Version 3: shape, typestr, data (ptr, False), strides None, stream (the instance's)."""

class DeviceOutput:
    """One model output of a batch on a device engine: the engine either asks the core for
    device memory (allocate) or hands over memory of its own (set)."""

    @property
    def name(self) -> str: ...
    @property
    def datatype(self) -> int: ...
    def allocate(self, shape: Sequence[int]) -> DeviceArray:
        """Core-owned device memory for this output (reused across batches by the instance)."""
    def set(self, array: Any) -> None:
        """The engine's own device memory: an object with __cuda_array_interface__ (contiguous,
        the output's datatype); the core keeps it alive until its copy to host is done."""

class DeviceEngineImpl(Protocol):
    """An engine whose model runs on a GPU, written in Python (TensorRT, PyTorch on CUDA). Called
    once per batch on the instance's worker thread with the GIL held and the instance's GPU
    context current. The core has already enqueued one host-to-device copy per input on
    `stream` (a CUstream handle, one per instance); the engine enqueues its work on the same
    stream and fills every output (allocate or set). The core then copies each output into
    pinned host memory on that stream and synchronizes it, with the GIL released."""

    def execute(self, stream: int, inputs: list[DeviceArray], outputs: list[DeviceOutput]) -> None: ...

class DeviceEngine(Engine):
    @property
    def gpu(self) -> int: ...
    @property
    def device_memory_bytes(self) -> int:
        """Device memory the core holds for this instance (its input and output buffers)."""
    @property
    def pinned_bytes(self) -> int:
        """Pinned host memory currently held by this instance's batches."""
    @property
    def fallback_bytes(self) -> int:
        """Staging memory of this instance's batches that is ordinary memory (pool full)."""
    @property
    def stream(self) -> int:
        """The instance's CUstream (0 until its worker thread has started)."""
    def copy_stats(self) -> dict[str, int]:
        """{"htod_bytes", "htod_ns", "dtoh_bytes", "dtoh_ns"} since start: bytes copied to and
        from the device and the copies' time by the device's events."""

def device_engine(engine: DeviceEngineImpl, gpu: int) -> DeviceEngine:
    """An instance on GPU `gpu` running `engine`. Raises CudaUnavailable when there is no
    driver, ValueError for an ordinal the driver does not have."""

class PoolPiece(Buffer):
    """A piece of a HeapPinnedPool (buffer protocol: its bytes)."""
    def release(self) -> None: ...

class HeapPinnedPool:
    """The pinned pool over ordinary heap memory (the host-memory stand-in), for tests of the
    pool's accounting and fallback."""
    def __init__(self, pool_byte_size: int) -> None: ...
    def allocate(self, bytes: int) -> PoolPiece: ...
    def stats(self) -> dict[str, int]: ...
    @property
    def account_pinned(self) -> int: ...
    @property
    def account_fallback(self) -> int: ...

def use_cuda_driver(path: str | None) -> None:
    """Load the CUDA driver from `path` (None: the default search) in place of the one loaded so
    far; engines made before keep the driver they were made with. Tests use it to swap in the
    fake driver (tests/fakes/fake_cuda.c)."""

# --- ONNX Runtime in the core (csrc/core/ort_library.h, ort_engine.h) ----------------------------

def onnxruntime_library(path: str) -> dict[str, Any]:
    """Load ONNX Runtime's C API from the shared library at `path` (once per path, for the life
    of the process): {"available": bool, "error": str ("" when available), "library": str,
    "version": str (ONNX Runtime's, "1.22.0"), "api_version": int (the C API version asked
    for)}. Never raises."""

class OnnxRuntimeSessionOptions:
    """How the core makes a session; -1 keeps ONNX Runtime's default (as onnxruntime's
    SessionOptions would)."""

    model_path: str
    intra_op_num_threads: int  # >= 0; 0 = ONNX Runtime picks
    inter_op_num_threads: int  # >= 0; 0 = ONNX Runtime picks
    graph_optimization_level: int  # 0 disable, 1 basic, 2 extended, 99 all
    execution_mode: int  # 0 sequential, 1 parallel
    def __init__(self) -> None: ...

# (name, ONNX Runtime's type string as onnxruntime.NodeArg.type spells it: "tensor(float)", ...;
# "seq", "map", "opaque", "sparse_tensor" or "optional" for what is not a tensor, dims with -1
# where the model leaves a dimension open)
OnnxTensorInfo: TypeAlias = tuple[str, str, tuple[int, ...]]

class OnnxRuntimeSession:
    """An ONNX Runtime session the core made, until an engine takes it."""

    @property
    def inputs(self) -> list[OnnxTensorInfo]: ...
    @property
    def outputs(self) -> list[OnnxTensorInfo]: ...
    @property
    def version(self) -> str:
        """ONNX Runtime's version."""

def onnxruntime_session(library: str, options: OnnxRuntimeSessionOptions) -> OnnxRuntimeSession:
    """Make a session over options.model_path with the library at `library` (loaded as
    onnxruntime_library does), the GIL released meanwhile. ValueError for options out of range,
    RuntimeError naming the ONNX Runtime call that failed otherwise ("CreateSession:
    NO_SUCHFILE: ...")."""

class OnnxRuntimeEngine(Engine):
    """ONNX Runtime run by the core with no GIL: inputs wrapped without a copy, outputs written
    into the engine's buffers (fixed shapes) or handed on as ONNX Runtime allocated them."""

    @property
    def executions(self) -> int:
        """Batches executed."""
    @property
    def preallocated_outputs(self) -> int:
        """Outputs ONNX Runtime wrote into buffers the engine allocated."""
    @property
    def runtime_allocated_outputs(self) -> int:
        """Outputs ONNX Runtime allocated and the engine handed on."""
    @property
    def version(self) -> str: ...

def onnxruntime_engine(
    session: OnnxRuntimeSession,
    input_names: Sequence[str],
    output_names: Sequence[str],
    batching: bool,
    preallocate_outputs: bool = True,
) -> OnnxRuntimeEngine:
    """An engine running `session`, which it takes (one session per instance). input_names: every
    model input, in the scheduler's input order; output_names: the outputs served, in the
    scheduler's output order; batching: the model batches (max_batch_size > 0).
    preallocate_outputs=False lets ONNX Runtime allocate every output. ValueError for a name the
    model does not have, a missing input, a non-tensor or a type with no v2 datatype;
    NotImplementedError for a string tensor."""
