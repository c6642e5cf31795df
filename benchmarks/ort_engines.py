"""ONNX Runtime's per-batch compute_infer: in-process against the server's Python and native engines.

For each engine (parameters.engine = "python" | "native", alternating, `--repeats` times) a
`pyserver serve` on a copy of the model's folder is measured twice through its HTTP API:

- no load: one connection sends requests of `--batch` rows each, back to back (every batch is one
  request); compute_infer per batch from /v2/models/{m}/stats, measured window only;
- under load: the project's client (loadgen, closed loop) at `--concurrency` connections of one
  row each; compute_infer per batch size the batcher formed, measured window only.

In-process: the same model's InferenceSession.run on the same batch sizes, one thread, back to
back (mean per call). The server's compute_infer spans the engine's whole Execute: for the Python
engine that includes taking the GIL and converting arrays; for the native engine, wrapping the
buffers and running the session.

    python benchmarks/ort_engines.py --model digits --batch 1 16 64 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
from loadgen import build_request, model_stats, new_loop, run_load
from server_process import ROOT, free_port, start_server, stop_server

ENGINES = ("python", "native")


def batch_times(stats: dict) -> dict[int, tuple[int, int]]:
    """batch size -> (batches, compute_infer ns) from a model's /stats."""
    return {b["batch_size"]: (b["compute_infer"]["count"], b["compute_infer"]["ns"])
            for b in stats["batch_stats"]}


def window(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> dict[int, tuple[int, float]]:
    """batch size -> (batches, mean compute_infer us) between two /stats readings."""
    out = {}
    for size, (count, ns) in after.items():
        c0, n0 = before.get(size, (0, 0))
        if count > c0:
            out[size] = (count - c0, (ns - n0) / (count - c0) / 1000)
    return out


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """utime + stime of a process (or of one of its threads), from /proc."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def in_process_us(model_file: Path, batch: int, threads: int, seconds: float) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_file), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {}
    for node in session.get_inputs():
        shape = [batch] + [d if isinstance(d, int) else 1 for d in node.shape[1:]]
        feed[node.name] = (rng.random(shape) * 16).astype(np.float32)
    for _ in range(50):
        session.run(None, feed)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, feed)
        calls += 1
    return (time.perf_counter() - start) / calls * 1e6


def repository(model: str, engine: str, into: Path, queue_delay_us: int | None) -> Path:
    folder = into / engine / model
    shutil.copytree(ROOT / "engines" / model, folder)
    config = folder / "config.toml"
    text = config.read_text()
    if queue_delay_us is not None:
        text = re.sub(r"max_queue_delay_microseconds = \d+",
                      f"max_queue_delay_microseconds = {queue_delay_us}", text)
    if "[parameters]" not in text:
        text += "\n[parameters]\n"
    config.write_text(text.replace("[parameters]\n", f'[parameters]\nengine = "{engine}"\n', 1))
    return folder.parent


def measure(model: str, engine: str, repo: Path, batches: list[int], concurrency: int,
            duration: float) -> tuple[dict[int, float], dict[int, tuple[int, float]], float,
                                      tuple[float, float]]:
    """(no-load compute_infer per batch size, under-load (batches, compute_infer) per batch
    size, under-load infer/s, server CPU us per request under load: the whole process and its
    main thread, the event loop)."""
    port = free_port()
    proc = start_server(port, repository=repo)
    url = f"http://127.0.0.1:{port}"
    try:
        idle: dict[int, float] = {}
        with asyncio.Runner(loop_factory=new_loop) as runner:
            for b in batches:
                payload = build_request(url, model, b)
                runner.run(run_load(url, payload, 1, 0.5, 0.5))  # warm up this batch size
                before = batch_times(model_stats(url, model))
                runner.run(run_load(url, payload, 1, duration, 0.0))
                idle[b] = window(before, batch_times(model_stats(url, model)))[b][1]
            payload = build_request(url, model, 1)
            runner.run(run_load(url, payload, concurrency, 1.0, 0.0))  # warm up
            before = batch_times(model_stats(url, model))
            cpu, loop_cpu = cpu_seconds(proc.pid), cpu_seconds(proc.pid, proc.pid)
            result = runner.run(run_load(url, payload, concurrency, duration, 0.0))
            cpu = cpu_seconds(proc.pid) - cpu
            loop_cpu = cpu_seconds(proc.pid, proc.pid) - loop_cpu
            loaded = window(before, batch_times(model_stats(url, model)))
        per_request = 1e6 / max(result.requests, 1)
        return idle, loaded, result.rate, (cpu * per_request, loop_cpu * per_request)
    finally:
        stop_server(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per window")
    parser.add_argument("--repeats", type=int, default=3, help="alternations of the engines")
    parser.add_argument("--threads", type=int, default=1, help="in-process intra-op threads")
    parser.add_argument("--top", type=int, default=6, help="batch sizes shown under load")
    parser.add_argument("--max-queue-delay-us", type=int, default=None,
                        help="override the model's dynamic_batching.max_queue_delay_microseconds")
    args = parser.parse_args()

    model_file = ROOT / "engines" / args.model / "1" / "model.onnx"
    idle: dict[str, dict[int, list[float]]] = {e: defaultdict(list) for e in ENGINES}
    loaded: dict[str, dict[int, list[tuple[int, float]]]] = {e: defaultdict(list) for e in ENGINES}
    rates: dict[str, list[float]] = {e: [] for e in ENGINES}
    cpu: dict[str, list[float]] = {e: [] for e in ENGINES}
    loop_cpu: dict[str, list[float]] = {e: [] for e in ENGINES}
    rows: dict[str, list[float]] = {e: [] for e in ENGINES}
    with tempfile.TemporaryDirectory() as tmp:
        repos = {e: repository(args.model, e, Path(tmp), args.max_queue_delay_us)
                 for e in ENGINES}
        for r in range(args.repeats):
            for engine in ENGINES if r % 2 == 0 else reversed(ENGINES):
                no_load, under_load, rate, (cpu_us, loop_us) = measure(args.model, engine, repos[engine], args.batch,
                                             args.concurrency, args.duration)
                for b, us in no_load.items():
                    idle[engine][b].append(us)
                for b, value in under_load.items():
                    loaded[engine][b].append(value)
                rates[engine].append(rate)
                cpu[engine].append(cpu_us)
                loop_cpu[engine].append(loop_us)
                mean_batch = (sum(b * c for b, (c, _) in under_load.items())
                              / sum(c for c, _ in under_load.values()))
                rows[engine].append(mean_batch)
                print(f"  run {r + 1} {engine}: {rate:.0f} infer/s at c={args.concurrency}, "
                      f"server CPU {cpu_us:.0f} us/request ({loop_us:.0f} on the event loop), "
                      f"mean batch {mean_batch:.1f} rows",
                      flush=True)

    def median(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    print(f"\nno load: compute_infer per batch, us (median of {args.repeats} runs)")
    print(f"{'batch':>6} {'in-process':>11} {'python engine':>14} {'native engine':>14}")
    for b in args.batch:
        ref = in_process_us(model_file, b, args.threads, 2.0)
        print(f"{b:6d} {ref:11.1f} {median(idle['python'][b]):14.1f} "
              f"{median(idle['native'][b]):14.1f}")

    print(f"\nunder load (c={args.concurrency}, 1 row per request): compute_infer per batch, us "
          f"(median of runs; batches counted over all runs)")
    print(f"{'batch':>6} {'in-process':>11} {'python engine':>14} {'(batches)':>10} "
          f"{'native engine':>14} {'(batches)':>10}")
    counts = {b: sum(c for e in ENGINES for c, _ in loaded[e][b]) for e in ENGINES for b in loaded[e]}
    for b in sorted(sorted(counts, key=counts.__getitem__, reverse=True)[: args.top]):
        ref = in_process_us(model_file, b, args.threads, 1.0)
        cells = []
        for e in ENGINES:
            cells.append(f"{median([us for _, us in loaded[e][b]]):14.1f} "
                         f"{sum(c for c, _ in loaded[e][b]):10d}")
        print(f"{b:6d} {ref:11.1f} {cells[0]} {cells[1]}")
    print(f"\nat c={args.concurrency} (medians of {args.repeats}):")
    for e in ENGINES:
        print(f"  {e:6s} engine: {median(rates[e]):7.0f} infer/s, server CPU "
              f"{median(cpu[e]):5.0f} us/request ({median(loop_cpu[e]):.0f} on the event loop), "
              f"mean batch {median(rows[e]):5.1f} rows")


if __name__ == "__main__":
    main()
