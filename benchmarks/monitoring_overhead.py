"""What monitoring costs: `digits` with its [monitoring] table (every batch measured:
sample_every = 1, per-pixel histograms against the reference, label classes, top probability)
against the same model without the table.

    python benchmarks/monitoring_overhead.py [--concurrency 16 64] [--repeats 5] \
        [--duration 5] [--warmup 1.5] [--perf-analyzer PATH | --loadgen] [--sequential 2000]

Starts two `pyserver serve` processes, one on the bundled repository's digits (monitoring on) and
one on a copy of digits whose config.toml has no [monitoring] table (off), and loads them in turn,
alternating which goes first at each repeat so that drift on a shared machine falls on both. The
client is Triton's perf_analyzer when /opt/perf_analyzer/bin/perf_analyzer exists (real held-out
digits as --input-data), else the project's closed-loop client (benchmarks/loadgen.py). Each
run is measured at the server over `--duration` seconds after `--warmup`: the requests it
served (its statistics' success count) give the throughput, its CPU time (utime + stime from
/proc/PID/stat) divided by them the CPU per request. Then the monitor's own time per batch:
requests of 1, 8 and 64 rows sent one at a time, the servers' own compute_output per batch (the
scatter, plus the measurement when on), on against off: a figure that machine noise hardly
touches, unlike throughput on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import model_stats, new_loop, run_load  # noqa: E402
from server_process import ROOT, free_port, start_server, stop_server  # noqa: E402

PERF_ANALYZER = "/opt/perf_analyzer/bin/perf_analyzer"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (every thread), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def counters(url: str) -> tuple[int, int, int]:
    """digits' requests served, batches and rows."""
    stats = model_stats(url, "digits")
    return (int(stats["inference_stats"]["success"]["count"]), int(stats["execution_count"]),
            int(stats["inference_count"]))


def repository_without_monitoring(folder: Path) -> Path:
    """A repository holding digits with its [monitoring] table (and the comment above it)
    removed."""
    shutil.copytree(ROOT / "engines" / "digits", folder / "digits")
    config = folder / "digits" / "config.toml"
    lines = config.read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if line.strip() == "[monitoring]")
    while cut > 0 and (lines[cut - 1].startswith("#") or not lines[cut - 1].strip()):
        cut -= 1
    config.write_text("\n".join(lines[:cut]) + "\n")
    return folder


def monitored(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/models/digits/monitoring", timeout=10):
            return True
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise


def held_out(n: int = 100) -> np.ndarray:
    return load_digits().data[-360:][:n].astype(np.float32)


def request_body(rows: int) -> tuple[bytes, int]:
    """A binary infer request of `rows` held-out digits, and its JSON header's length."""
    raw = held_out(rows).tobytes()
    header = json.dumps({"inputs": [{"name": "pixels", "shape": [rows, 64], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + raw, len(header)


def loadgen_payload(url: str) -> bytes:
    """One binary request holding one held-out digit, as loadgen sends it."""
    body, header = request_body(1)
    return (f"POST /v2/models/digits/infer HTTP/1.1\r\nHost: {urlparse(url).netloc}\r\n"
            f"Content-Length: {len(body)}\r\nInference-Header-Content-Length: {header}"
            "\r\n\r\n").encode() + body


class PerfAnalyzer:
    """perf_analyzer loading one server at a fixed concurrency, with real digits as its input
    data, until stopped. Its own measurement is not used: on a shared machine its stability
    test (3 windows within 10%) may never pass, so each run is measured at the server instead
    (requests served and CPU time over a steady window), the same way for both servers."""

    def __init__(self, binary: str, url: str, concurrency: int, data: Path) -> None:
        self._proc = subprocess.Popen(
            [binary, "-m", "digits", "-u", f"127.0.0.1:{urlparse(url).port}", "-i", "http",
             "--concurrency-range", f"{concurrency}:{concurrency}", "-p", "600000",
             "--input-data", str(data)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def check(self) -> None:
        if self._proc.poll() is not None:
            error = self._proc.stderr.read() if self._proc.stderr else ""
            raise RuntimeError(f"perf_analyzer exited {self._proc.returncode}: {error}")

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def compute_output_per_batch(url: str, rows: int, requests: int) -> float:
    """Send `requests` requests of `rows` rows one after the other (each its own batch, nothing
    else running in the server meanwhile); the mean compute_output per batch in us: the scatter,
    plus the monitor's measurement when it is on. One at a time, the worker thread is hardly
    ever preempted inside it, so this wall time is close to its CPU time."""
    body, header = request_body(rows)
    before = model_stats(url, "digits")
    conn = http.client.HTTPConnection("127.0.0.1", urlparse(url).port, timeout=30)
    try:
        for _ in range(requests):
            conn.request("POST", "/v2/models/digits/infer", body=body,
                         headers={"Inference-Header-Content-Length": str(header)})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"infer answered {response.status}")
    finally:
        conn.close()
    after = model_stats(url, "digits")
    ns = (after["inference_stats"]["compute_output"]["ns"]
          - before["inference_stats"]["compute_output"]["ns"])
    return ns / (after["execution_count"] - before["execution_count"]) / 1e3


def sequential(urls: dict[str, str], requests: int) -> list[str]:
    lines = [f"one request at a time ({requests} a run, 3 alternations): compute_output per "
             "batch, medians"]
    for rows in (1, 8, 64):
        timings: dict[str, list[float]] = {"on": [], "off": []}
        for i in range(3):
            for mode in (("on", "off") if i % 2 == 0 else ("off", "on")):
                timings[mode].append(compute_output_per_batch(urls[mode], rows, requests))
        on, off = statistics.median(timings["on"]), statistics.median(timings["off"])
        lines.append(f"  {rows:3d} rows a batch: on {on:6.2f} us, off {off:6.2f} us: the "
                     f"monitor {on - off:5.2f} us a batch, {(on - off) / rows:5.2f} us a row")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--repeats", type=int, default=5, help="alternations (on/off pairs)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured a run")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds before measuring")
    parser.add_argument("--perf-analyzer", default=PERF_ANALYZER, metavar="PATH")
    parser.add_argument("--loadgen", action="store_true",
                        help="use benchmarks/loadgen.py even when perf_analyzer is there")
    parser.add_argument("--sequential", type=int, default=2000, metavar="REQUESTS",
                        help="requests a run of the one-at-a-time timing (0: skip it)")
    args = parser.parse_args()
    use_pa = not args.loadgen and Path(args.perf_analyzer).is_file()

    work = Path(tempfile.mkdtemp(prefix="monitoring-overhead-"))
    data = work / "digits.json"
    data.write_text(json.dumps({"data": [{"pixels": row.tolist()} for row in held_out()]}))
    ports = {"on": free_port(), "off": free_port()}
    procs = {"on": start_server(ports["on"]),
             "off": start_server(ports["off"], repository=repository_without_monitoring(work))}
    urls = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
    results: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
    one_at_a_time: list[str] = []
    try:
        assert monitored(urls["on"]) and not monitored(urls["off"])
        with asyncio.Runner(loop_factory=new_loop) as runner:
            payloads = {k: loadgen_payload(u) for k, u in urls.items()}

            def run(mode: str, concurrency: int) -> tuple[float, float, float]:
                pid, url = procs[mode].pid, urls[mode]
                if use_pa:
                    client = PerfAnalyzer(args.perf_analyzer, url, concurrency, data)
                    try:
                        time.sleep(args.warmup)  # connections up, batches at their size
                        client.check()
                        cpu, before = cpu_seconds(pid), counters(url)
                        started = time.perf_counter()
                        time.sleep(args.duration)
                        client.check()
                        cpu, after = cpu_seconds(pid) - cpu, counters(url)
                        elapsed = time.perf_counter() - started
                    finally:
                        client.stop()
                else:
                    cpu, before = cpu_seconds(pid), counters(url)
                    r = runner.run(run_load(url, payloads[mode], concurrency, args.duration,
                                            args.warmup))
                    if r.errors:
                        raise RuntimeError(f"{r.errors} failed requests, monitoring {mode}")
                    # CPU over the whole run (warmup included), per request served in it.
                    cpu, after = cpu_seconds(pid) - cpu, counters(url)
                    elapsed = r.seconds * (after[0] - before[0]) / max(r.requests, 1)
                requests, batches, rows = (a - b for a, b in zip(after, before))
                rate, cpu_us = requests / elapsed, cpu / requests * 1e6
                print(f"  c={concurrency:<3d} monitoring {mode:3s} {rate:8.0f} infer/s   "
                      f"{cpu_us:6.1f} us CPU/request   {rows / batches:5.1f} rows/batch   "
                      f"({requests} requests in {elapsed:.1f} s)", flush=True)
                return rate, cpu_us, rows / batches

            for concurrency in args.concurrency:
                for mode in ("on", "off"):  # warm both: connections, allocator, caches
                    run(mode, concurrency)
                for i in range(args.repeats):
                    for mode in (("on", "off") if i % 2 == 0 else ("off", "on")):
                        results.setdefault((concurrency, mode), []).append(run(mode, concurrency))
        if args.sequential:
            one_at_a_time = sequential(urls, args.sequential)
    finally:
        for proc in procs.values():
            stop_server(proc)
        shutil.rmtree(work, ignore_errors=True)

    client = f"perf_analyzer ({args.perf_analyzer})" if use_pa else "benchmarks/loadgen.py"
    print(f"\ndigits, {args.repeats} alternations per concurrency, client {client}, "
          f"{os.cpu_count()} cores; medians (min-max)")
    print("| concurrency | monitoring | infer/s | CPU us/request | rows/batch |")
    print("|---|---|---|---|---|")
    for concurrency in args.concurrency:
        for mode in ("on", "off"):
            runs = results[(concurrency, mode)]
            cells = []
            for k, places in ((0, 0), (1, 1), (2, 1)):
                values = [run[k] for run in runs]
                cells.append(f"{statistics.median(values):.{places}f} "
                             f"({min(values):.{places}f}-{max(values):.{places}f})")
            print(f"| {concurrency} | {mode} | " + " | ".join(cells) + " |")
    print()
    for concurrency in args.concurrency:
        on, off = results[(concurrency, "on")], results[(concurrency, "off")]
        rate = statistics.median(r[0] for r in on) / statistics.median(r[0] for r in off)
        cpu = statistics.median(r[1] for r in on) / statistics.median(r[1] for r in off)
        # Each alternation's own ratio too: a pair ran back to back, so it shares the machine.
        paired_rate = statistics.median(a[0] / b[0] for a, b in zip(on, off))
        paired_cpu = statistics.median(a[1] / b[1] for a, b in zip(on, off))
        print(f"c={concurrency}: throughput on/off {rate:.3f} ({(rate - 1) * 100:+.1f}%, target "
              f">= -3%: {'met' if rate >= 0.97 else 'NOT met'}); CPU per request on/off "
              f"{cpu:.3f} ({(cpu - 1) * 100:+.1f}%, target <= +5%: "
              f"{'met' if cpu <= 1.05 else 'NOT met'}); medians of the pairs' ratios: "
              f"{paired_rate:.3f} and {paired_cpu:.3f}")
    if one_at_a_time:
        print()
        print("\n".join(one_at_a_time))


if __name__ == "__main__":
    main()
