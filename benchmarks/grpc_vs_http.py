"""gRPC (unary and streaming) against HTTP on one server, measured by Triton's perf_analyzer in
the same run.

Starts one `pyserver serve` with both front ends on the bundled repository, then for each model
and concurrency runs `perf_analyzer -i http`, `-i grpc` and `-i grpc --streaming` in turn
(rotating which goes first in each repeat, so that drift on a shared machine falls on all), and
prints the medians: throughput, p99 latency and the server's CPU time per request (utime + stime
of the server process over the run, from /proc, divided by the requests it answered in that
run).

    python benchmarks/grpc_vs_http.py [--models identity digits] [--concurrency 1 16 64] \
        [--repeats 3] [--window-ms 2000] [--stability 50] \
        [--perf-analyzer /opt/perf_analyzer/bin/perf_analyzer]

perf_analyzer: ../shared/tools/install-perf-analyzer (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server_process import free_port, start_server, stop_server  # noqa: E402

PERF_ANALYZER = "/opt/perf_analyzer/bin/perf_analyzer"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    rate: float  # inferences per second, as perf_analyzer measured them
    p99_us: float
    cpu_us: float  # server CPU per answered request


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, every thread included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def answered(http_url: str, model: str) -> int:
    with urllib.request.urlopen(f"{http_url}/v2/models/{model}/stats", timeout=10) as r:
        stats = json.loads(r.read())["model_stats"]
    return sum(int(s["inference_stats"]["success"]["count"]) for s in stats)


# how each protocol is asked of perf_analyzer
PROTOCOLS = {"http": ["-i", "http"], "grpc": ["-i", "grpc"],
             "stream": ["-i", "grpc", "--streaming"]}


def perf_analyzer(binary: str, protocol: str, url: str, model: str, concurrency: int,
                  window_ms: int, stability: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.csv"
        command = [binary, "-m", model, "-u", url, *PROTOCOLS[protocol],
                   "--concurrency-range", f"{concurrency}:{concurrency}", "-p", str(window_ms),
                   "--input-data", "zero", "-s", str(stability), "-r", "6", "-f", str(report)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        unstable = "stable measurement" in done.stdout + done.stderr
        if done.returncode != 0 and unstable and stability < 100:
            # A busy shared machine: take the last windows as they are rather than nothing.
            print(f"    (no 3 windows within {stability}%: measured again accepting any)",
                  flush=True)
            return perf_analyzer(binary, protocol, url, model, concurrency, window_ms, 100)
        if done.returncode != 0 or not report.exists():
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
        with report.open() as f:
            row = next(csv.DictReader(f))
    return float(row["Inferences/Second"]), float(row["p99 latency"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["identity", "digits"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window-ms", type=int, default=2000)
    parser.add_argument("--stability", type=int, default=50,
                        help="perf_analyzer's -s: how far (%%) three windows may differ and count "
                        "as stable (a loaded shared machine needs a wide one)")
    parser.add_argument("--perf-analyzer", default=PERF_ANALYZER)
    args = parser.parse_args()

    http_port, grpc_port = free_port(), free_port()
    proc = start_server(http_port, "--grpc-port", str(grpc_port))
    http_url = f"http://127.0.0.1:{http_port}"
    urls = {"http": f"127.0.0.1:{http_port}", "grpc": f"127.0.0.1:{grpc_port}",
            "stream": f"127.0.0.1:{grpc_port}"}
    order = list(urls)
    runs: dict[tuple[str, int, str], list[Run]] = {}
    try:
        for model in args.models:
            for protocol in urls:  # warm both paths
                perf_analyzer(args.perf_analyzer, protocol, urls[protocol], model, 4, 500, 100)
            for concurrency in args.concurrency:
                for i in range(args.repeats):
                    for protocol in order[i % 3:] + order[:i % 3]:
                        cpu, count = cpu_seconds(proc.pid), answered(http_url, model)
                        rate, p99 = perf_analyzer(args.perf_analyzer, protocol, urls[protocol],
                                                  model, concurrency, args.window_ms,
                                                  args.stability)
                        cpu = cpu_seconds(proc.pid) - cpu
                        count = answered(http_url, model) - count
                        run = Run(rate, p99, cpu / max(count, 1) * 1e6)
                        runs.setdefault((model, concurrency, protocol), []).append(run)
                        print(f"  {model:8s} c={concurrency:<3d} {protocol:6s} repeat {i + 1}: "
                              f"{rate:8.0f} infer/s  p99 {p99 / 1000:6.2f} ms  "
                              f"server CPU {run.cpu_us:5.0f} us/request", flush=True)
    finally:
        stop_server(proc)

    def median(model: str, c: int, protocol: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs[(model, c, protocol)])

    print(f"\nmedians of {args.repeats} rotating runs, {args.window_ms} ms windows, "
          f"{os.cpu_count()} cores shared by server and client; stream = gRPC ModelStreamInfer "
          "(perf_analyzer --streaming)\n")
    print("| model | conc. | HTTP infer/s | gRPC infer/s | gRPC / HTTP | stream infer/s "
          "| stream / HTTP | p99 ms HTTP / gRPC / stream | server CPU us/req HTTP / gRPC / stream |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model in args.models:
        for c in args.concurrency:
            h, g, st = (median(model, c, p, "rate") for p in ("http", "grpc", "stream"))
            p99 = " / ".join(f"{median(model, c, p, 'p99_us') / 1000:.2f}" for p in order)
            cpu = " / ".join(f"{median(model, c, p, 'cpu_us'):.0f}" for p in order)
            print(f"| {model} | {c} | {h:.0f} | {g:.0f} | {g / h:.2f} | {st:.0f} | {st / h:.2f} "
                  f"| {p99} | {cpu} |")


if __name__ == "__main__":
    main()
