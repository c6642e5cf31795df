"""The in-process ceiling: the same ONNX model called directly through ONNX Runtime, no server.

    python benchmarks/ceiling.py --model engines/digits/1/model.onnx --batch 1 16 64 128
    python benchmarks/ceiling.py --model benchmarks/results/models/mlp/1/model.onnx --batch 37 64

For each batch size it prints the rows per second one thread reaches calling the model back to
back, and the time of one call (one batch): the figure a server's `compute_infer` per batch is
compared with (benchmarks/perf_analyzer_sweep.py does so for the batch sizes the server formed).

Both by the clock (wall) and by this process's CPU time. With one ONNX Runtime thread the two
agree on an idle machine; on a busy one the thread is descheduled part of the time and the wall
figures understate what the model does on a core of its own, which the CPU figures still give.

Back to back is the flattering case: a server's worker thread sleeps between batches. With
`--gap-us G [G ...]` each call also runs after the thread has slept G microseconds, and the
calls alone are timed (mean and median per call, wall clock), as a server's compute_infer is:

    python benchmarks/ceiling.py --batch 16 --gap-us 0 200 500 2000
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort


@dataclass(frozen=True)
class BatchTiming:
    batch: int
    calls: int
    seconds: float  # wall
    cpu_seconds: float  # this process's CPU time over the same calls

    @property
    def us_per_batch(self) -> float:
        return self.seconds / self.calls * 1e6

    @property
    def rows_per_s(self) -> float:
        return self.calls * self.batch / self.seconds

    @property
    def cpu_us_per_batch(self) -> float:
        return self.cpu_seconds / self.calls * 1e6

    @property
    def cpu_rows_per_s(self) -> float:
        return self.calls * self.batch / self.cpu_seconds if self.cpu_seconds > 0 else 0.0


def session_for(path: str, intra_op_threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    # one inter-op thread too: the server's engine runs the graph sequentially on its instance
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def _feed(session: ort.InferenceSession, batch: int) -> dict[str, np.ndarray]:
    feed = {}
    for node in session.get_inputs():
        shape = [batch] + [d if isinstance(d, int) else 1 for d in node.shape[1:]]
        feed[node.name] = (np.random.default_rng(0).random(shape) * 16).astype(np.float32)
    return feed


def time_batches(session: ort.InferenceSession, batch: int, seconds: float = 2.0,
                 warmup_calls: int = 20) -> BatchTiming:
    """Call the model back to back with `batch` rows for about `seconds`, after a warm-up."""
    feed = _feed(session, batch)
    for _ in range(warmup_calls):
        session.run(None, feed)
    calls = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while True:
        session.run(None, feed)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return BatchTiming(batch, calls, elapsed, time.process_time() - cpu_start)


def spaced_calls(session: ort.InferenceSession, batch: int, gap_s: float,
                 calls: int = 3000, warmup_calls: int = 100) -> np.ndarray:
    """Wall time (s) of each of `calls` calls with `batch` rows, each after sleeping `gap_s`
    (none when 0): what one call costs a thread that was idle before it."""
    feed = _feed(session, batch)
    times = np.empty(calls + warmup_calls)
    for n in range(calls + warmup_calls):
        if gap_s > 0:
            time.sleep(gap_s)
        started = time.perf_counter()
        session.run(None, feed)
        times[n] = time.perf_counter() - started
    return times[warmup_calls:]


def batch_timings(path: str, batches: list[int], seconds: float = 1.0,
                  intra_op_threads: int = 1) -> list[BatchTiming]:
    """One session, each batch size timed in turn (the sweep's in-process reference)."""
    session = session_for(path, intra_op_threads)
    return [time_batches(session, b, seconds) for b in batches]


def ceiling(path: str, batch: int, seconds: float = 2.0, intra_op_threads: int = 1) -> float:
    """Rows per second when one thread calls the model back to back with `batch` rows."""
    return time_batches(session_for(path, intra_op_threads), batch, seconds).rows_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="engines/digits/1/model.onnx")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64, 128])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--gap-us", type=float, nargs="+",
                        help="time single calls, each after this much sleep (0: back to back)")
    args = parser.parse_args()
    if args.gap_us:
        session = session_for(args.model, args.threads)
        for batch in args.batch:
            for gap in args.gap_us:
                us = spaced_calls(session, batch, gap / 1e6) * 1e6
                print(f"in-process batch {batch:4d}, after {gap:6.0f} us asleep: "
                      f"mean {us.mean():7.1f} us, median {np.median(us):7.1f} us per call")
        return
    for t in batch_timings(args.model, args.batch, args.seconds, args.threads):
        print(f"in-process batch {t.batch:4d}: {t.rows_per_s:10.0f} infer/s "
              f"{t.us_per_batch:10.1f} us/batch (by CPU time: {t.cpu_rows_per_s:10.0f} infer/s "
              f"{t.cpu_us_per_batch:10.1f} us/batch)")


if __name__ == "__main__":
    main()
