"""What metrics cost: throughput with metrics on (and /metrics scraped every second, as
Prometheus would, but 15x as often as its default) against metrics off (--allow-metrics false).

Starts two `pyserver serve` processes on the bundled repository, one of each, and loads them in
turn with the closed-loop client (benchmarks/loadgen.py), alternating which goes first in each
repeat so that drift on a shared machine falls on both. Prints each run, the medians and the
ratio on/off.

    python benchmarks/metrics_overhead.py [--model identity] [--concurrency 16] \
        [--duration 3] [--repeats 7]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import build_request, new_loop, run_load  # noqa: E402
from server_process import free_port, start_server, stop_server  # noqa: E402

# A separate process, as Prometheus is: a scraping thread inside the client would take the
# client's GIL and slow the load it is measuring.
_SCRAPER = """
import sys, time, urllib.request
url, interval = sys.argv[1], float(sys.argv[2])
count = 0
try:
    while True:
        time.sleep(interval)
        with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
            r.read()
        count += 1
except KeyboardInterrupt:
    print(count, flush=True)
"""


class Scraper:
    """GET /metrics every `interval` seconds from another process, until stopped."""

    def __init__(self, url: str, interval: float = 1.0) -> None:
        self._proc = subprocess.Popen([sys.executable, "-c", _SCRAPER, url, str(interval)],
                                      stdout=subprocess.PIPE, text=True)

    def stop(self) -> int:
        """Stop; the number of scrapes that worked."""
        self._proc.send_signal(signal.SIGINT)
        out, _ = self._proc.communicate(timeout=30)
        return int(out.strip() or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="identity")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--scrape-interval", type=float, default=1.0,
                        help="seconds between scrapes of the metrics-on server (0: none)")
    args = parser.parse_args()

    ports = {"on": free_port(), "off": free_port()}
    procs = {"on": start_server(ports["on"]),
             "off": start_server(ports["off"], "--allow-metrics", "false")}
    urls = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
    rates: dict[str, list[float]] = {"on": [], "off": []}
    scrapes = 0
    try:
        try:
            urllib.request.urlopen(f"{urls['off']}/metrics", timeout=5)
            raise RuntimeError("metrics are on in the server started with --allow-metrics false")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
        with asyncio.Runner(loop_factory=new_loop) as runner:
            payloads = {k: build_request(u, args.model) for k, u in urls.items()}
            for k in ("on", "off"):  # warm both
                runner.run(run_load(urls[k], payloads[k], args.concurrency, 1.0, 0.5))
            for i in range(args.repeats):
                for k in (("on", "off") if i % 2 == 0 else ("off", "on")):
                    scraper = (Scraper(urls[k], args.scrape_interval)
                               if k == "on" and args.scrape_interval > 0 else None)
                    r = runner.run(run_load(urls[k], payloads[k], args.concurrency,
                                            args.duration, args.warmup))
                    if scraper is not None:
                        scrapes += scraper.stop()
                    if r.errors:
                        raise RuntimeError(f"{r.errors} failed requests with metrics {k}")
                    rates[k].append(r.rate)
                    print(f"  repeat {i + 1} metrics {k:3s} {r.line()}", flush=True)
    finally:
        for proc in procs.values():
            stop_server(proc)

    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    print(f"\n{args.model} c={args.concurrency}, {args.repeats} interleaved repeats of "
          f"{args.duration:g} s on this {os.cpu_count()}-core machine ({scrapes} scrapes while on)")
    print(f"metrics on  (scraped every {args.scrape_interval:g} s): median {on:8.0f} infer/s   "
          f"(min {min(rates['on']):.0f}, max {max(rates['on']):.0f})")
    print(f"metrics off (--allow-metrics false): median {off:8.0f} infer/s   "
          f"(min {min(rates['off']):.0f}, max {max(rates['off']):.0f})")
    print(f"on / off: {on / off:.3f}  ({(on / off - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
