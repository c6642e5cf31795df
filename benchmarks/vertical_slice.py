"""The figures of the vertical slice, measured in one run on this machine:

- identity, concurrency 1: p50 latency;  identity, concurrency 16: infer/s
- digits, concurrency 64: infer/s and average batch size (from /stats), beside the in-process
  ONNX Runtime ceiling at that batch size
- the server's resident memory after warm-up and after 100,000 more requests

It starts `pyserver serve` on the bundled repository as a subprocess on a free port, runs the
closed-loop client (benchmarks/loadgen.py) against it, and prints a table with medians of the
repeats.

    python benchmarks/vertical_slice.py [--repeats 3] [--duration 5] [--requests 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ceiling import ceiling
from loadgen import build_request, model_stats, new_loop, run_load, run_requests
from server_process import free_port, start_server, stop_server

ROOT = Path(__file__).resolve().parent.parent


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=100_000)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(port)
    try:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            identity = build_request(url, "identity")
            digits = build_request(url, "digits")
            runner.run(run_load(url, identity, 16, 3.0, 1.0))  # warm-up
            runner.run(run_load(url, digits, 64, 2.0, 1.0))
            rss_warm = rss_mib(proc.pid)

            rows: dict[str, list[float]] = {k: [] for k in
                                            ("id1_p50", "id1_p99", "id16_rate", "id16_p50", "id16_p99",
                                             "dg64_rate", "dg64_p50", "dg64_p99", "dg64_batch")}
            for _ in range(args.repeats):
                r = runner.run(run_load(url, identity, 1, args.duration, 0.5))
                rows["id1_p50"].append(r.percentile(50))
                rows["id1_p99"].append(r.percentile(99))
                r = runner.run(run_load(url, identity, 16, args.duration, 0.5))
                rows["id16_rate"].append(r.rate)
                rows["id16_p50"].append(r.percentile(50))
                rows["id16_p99"].append(r.percentile(99))
                before = model_stats(url, "digits")
                r = runner.run(run_load(url, digits, 64, args.duration, 0.5))
                after = model_stats(url, "digits")
                rows["dg64_rate"].append(r.rate)
                rows["dg64_p50"].append(r.percentile(50))
                rows["dg64_p99"].append(r.percentile(99))
                rows["dg64_batch"].append(
                    (after["inference_count"] - before["inference_count"])
                    / max(1, after["execution_count"] - before["execution_count"])
                )
                if r.errors:
                    raise RuntimeError(f"{r.errors} failed requests")
            seconds = runner.run(run_requests(url, identity, 16, args.requests))
            rss_after = rss_mib(proc.pid)
    finally:
        stop_server(proc)

    med = {k: statistics.median(v) for k, v in rows.items()}
    batch = max(1, round(med["dg64_batch"]))
    ceil = ceiling(str(ROOT / "engines" / "digits" / "1" / "model.onnx"), batch, 2.0)
    ceil_max = ceiling(str(ROOT / "engines" / "digits" / "1" / "model.onnx"), 128, 2.0)
    print(f"\nmedians of {args.repeats} runs of {args.duration:.0f} s each "
          f"(server and client on this {os.cpu_count()}-core machine)")
    print(f"identity  c=1   p50 {med['id1_p50']:7.0f} us   p99 {med['id1_p99']:7.0f} us")
    print(f"identity  c=16  {med['id16_rate']:7.0f} infer/s   p50 {med['id16_p50']:6.0f} us   "
          f"p99 {med['id16_p99']:6.0f} us")
    print(f"digits    c=64  {med['dg64_rate']:7.0f} infer/s   p50 {med['dg64_p50']:6.0f} us   "
          f"p99 {med['dg64_p99']:6.0f} us   average batch {med['dg64_batch']:.1f}")
    print(f"digits    in-process ONNX Runtime ceiling: {ceil:8.0f} infer/s at batch {batch}, "
          f"{ceil_max:8.0f} at batch 128 (one thread)")
    print(f"          server / ceiling at batch {batch}: {med['dg64_rate'] / ceil:.2f}")
    print(f"RSS after warm-up {rss_warm:.1f} MiB; after {args.requests} more requests "
          f"({seconds:.1f} s) {rss_after:.1f} MiB ({(rss_after / rss_warm - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
