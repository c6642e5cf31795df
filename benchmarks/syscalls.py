"""System calls per request of a running server, counted by strace: the wake-ups (futex,
epoll_wait, eventfd reads and writes) and the socket reads and writes each request costs.

    python benchmarks/syscalls.py --url http://127.0.0.1:8000 --pid PID [--model identity]
        [--requests 20000] [--concurrency 16]

strace -f -c attaches to every thread of the server while the project's client
(benchmarks/loadgen.py) sends exactly `--requests` binary requests; the table is the syscalls per
request, largest first. strace slows the server down a lot: the counts are what to read, not
the time. Run it against two builds (e.g. benchmarks/ab.py's base venv) to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import build_request, new_loop, run_requests  # noqa: E402

_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


def parse_summary(text: str) -> dict[str, int]:
    """strace -c's table: {syscall: calls}."""
    calls = {}
    for line in text.splitlines():
        m = _ROW.match(line)
        if m:
            if m.group(2) != "total":
                calls[m.group(2)] = int(m.group(1))
    return calls


def count(url: str, pid: int, model: str, requests: int, concurrency: int) -> dict[str, int]:
    out = Path(tempfile.mkdtemp()) / "strace.txt"
    payload = build_request(url, model)
    loop = new_loop()
    loop.run_until_complete(run_requests(url, payload, concurrency, 200))  # warm up, untraced
    tracer = subprocess.Popen(["strace", "-f", "-c", "-o", str(out), "-p", str(pid)],
                              stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached to every thread
    loop.run_until_complete(run_requests(url, payload, concurrency, requests))
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=30)
    loop.close()
    return parse_summary(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--model", default="identity")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if os.geteuid() != 0 and not Path("/proc/sys/kernel/yama/ptrace_scope").exists():
        print("strace needs to be allowed to attach to the server", file=sys.stderr)
    calls = count(args.url, args.pid, args.model, args.requests, args.concurrency)
    total = sum(calls.values())
    print(f"{args.model}, concurrency {args.concurrency}, {args.requests} requests: "
          f"{total / args.requests:.2f} syscalls per request")
    for name, n in sorted(calls.items(), key=lambda kv: -kv[1]):
        if n / args.requests >= 0.01:
            print(f"  {name:<16} {n / args.requests:8.2f}")


if __name__ == "__main__":
    asyncio.set_event_loop(None)
    main()
