"""Reload under load: `digits` at concurrency 16, steady, then reloaded every 2 s.

    python benchmarks/reload_under_load.py [--duration 20] [--concurrency 16] [--interval 2]

Starts `pyserver serve --model-control-mode explicit` on a copy of the bundled digits model,
measures a steady window, then a window of the same length during which a reloader rewrites the
model file (so its fingerprint changes and the version is really rebuilt) and calls the
repository API's load every `--interval` seconds. Prints infer/s, p50 and p99 for both windows,
the failed requests (which must be 0) and the reloads' own durations.

The load is the project's closed-loop client (benchmarks/loadgen.py), which sees every request's
status; with perf_analyzer installed (../shared/tools/install-perf-analyzer), `--perf-analyzer`
runs the same two windows with it as well (perf_analyzer stops with an error on the first failed
request, so a clean run means none failed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from loadgen import build_request, new_loop, run_load
from server_process import ROOT, free_port, start_server, stop_server


def reload(base_url: str, model_file: Path) -> float:
    """Rewrite the model file (new modification time: a changed version) and load the model
    again; return how long the load call took."""
    data = model_file.read_bytes()
    tmp = model_file.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(model_file)
    request = urllib.request.Request(f"{base_url}/v2/repository/models/digits/load",
                                     data=b"{}", method="POST")
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as r:
        if r.status != 200:
            raise RuntimeError(f"load answered {r.status}")
    return time.perf_counter() - started


class Reloader(threading.Thread):
    def __init__(self, base_url: str, model_file: Path, interval: float) -> None:
        super().__init__(daemon=True)
        self.base_url, self.model_file, self.interval = base_url, model_file, interval
        self.stop = threading.Event()
        self.durations: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.durations.append(reload(self.base_url, self.model_file))
            except Exception as exc:  # reported, never hidden
                self.errors.append(repr(exc))


def perf_analyzer_window(binary: str, port: int, concurrency: int, seconds: float) -> str:
    data = Path(tempfile.mkdtemp()) / "digits.json"
    data.write_text(json.dumps({"data": [{"pixels": [1.0] * 64}]}))
    result = subprocess.run(
        [binary, "-m", "digits", "-u", f"127.0.0.1:{port}", "-i", "http",
         "--concurrency-range", f"{concurrency}:{concurrency}",
         "-p", str(int(seconds * 1000 / 3)), "--input-data", str(data)],
        capture_output=True, text=True, timeout=seconds * 20 + 60)
    lines = [line.strip() for line in result.stdout.splitlines()
             if "Throughput" in line or "p99 latency" in line or "p50 latency" in line]
    status = "ok" if result.returncode == 0 else f"FAILED (exit {result.returncode}): " + \
        (result.stderr or result.stdout)[-300:]
    return f"{status}; " + "; ".join(lines[-3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per window")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between reloads")
    parser.add_argument("--perf-analyzer", nargs="?", const="/opt/perf_analyzer/bin/perf_analyzer",
                        default=None, metavar="PATH", help="also measure with perf_analyzer")
    args = parser.parse_args()

    repo = Path(tempfile.mkdtemp(prefix="pyserver-reload-"))
    shutil.copytree(ROOT / "engines" / "digits", repo / "digits")
    model_file = repo / "digits" / "1" / "model.onnx"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    proc = start_server(port, "--model-control-mode", "explicit", "--load-model", "digits",
                        repository=repo)
    try:
        payload = build_request(base_url, "digits")
        loop = new_loop()
        steady = loop.run_until_complete(run_load(base_url, payload, args.concurrency,
                                                  args.duration))
        reloader = Reloader(base_url, model_file, args.interval)
        reloader.start()
        during = loop.run_until_complete(run_load(base_url, payload, args.concurrency,
                                                  args.duration, warmup=0.2))
        reloader.stop.set()
        reloader.join()
        loop.close()
        print(f"digits, concurrency {args.concurrency}, project client "
              f"(benchmarks/loadgen.py), {args.duration:.0f} s windows")
        print(f"  steady          {steady.line()}")
        print(f"  during reloads  {during.line()}")
        print(f"  reloads: {len(reloader.durations)}, each took median "
              f"{statistics.median(reloader.durations) * 1000:.0f} ms, max "
              f"{max(reloader.durations) * 1000:.0f} ms; reload errors: {len(reloader.errors)}"
              if reloader.durations else "  reloads: none completed")
        for error in reloader.errors:
            print(f"    {error}")
        print(f"  failed requests: {steady.errors + during.errors}")
        if args.perf_analyzer:
            print("perf_analyzer:")
            print(f"  steady          {perf_analyzer_window(args.perf_analyzer, port, args.concurrency, args.duration)}")
            reloader = Reloader(base_url, model_file, args.interval)
            reloader.start()
            result = perf_analyzer_window(args.perf_analyzer, port, args.concurrency,
                                          args.duration)
            reloader.stop.set()
            reloader.join()
            print(f"  during reloads  {result} ({len(reloader.durations)} reloads, "
                  f"{len(reloader.errors)} reload errors)")
    finally:
        stop_server(proc)
        shutil.rmtree(repo, ignore_errors=True)


if __name__ == "__main__":
    main()
