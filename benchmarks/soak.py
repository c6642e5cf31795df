"""A soak: the server at saturation for a long time, with everything a real deployment sees.

    python benchmarks/soak.py [--minutes 10] [--concurrency 32] [--url URL --pid PID]

Without --url it starts `pyserver serve` on the bundled models. Load (asyncio, raw keep-alive
connections, closed loop):
- a mix of models (identity, identity_bytes, add_sub, digits), binary and JSON bodies;
- a trickle of malformed requests (bad JSON, wrong shapes, truncated binary, bad compression):
  each must be a 4xx, never a 5xx;
- clients that disconnect mid-request (half a body, or before the answer);
- a Prometheus scrape of /metrics every few seconds.

Every 5 s it samples the server's RSS, open file descriptors and threads from /proc. At the end
it prints requests and failures by kind, and the slope of RSS, fds and threads after the warm-up
(the first 20% of the run), with the verdict: no unexpected failure, RSS growth under 5% after
warm-up, fds and threads flat.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gzip
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_process import free_port, start_server, stop_server  # noqa: E402


@dataclass
class Tally:
    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    unexpected: list[str] = field(default_factory=list)

    def record(self, kind: str, status: int, expected: set[int], detail: str = "") -> None:
        self.by_kind[f"{kind} {status}"] += 1
        if status not in expected:
            if len(self.unexpected) < 50:
                self.unexpected.append(f"{kind}: {status} {detail[:200]}")
            self.by_kind["UNEXPECTED"] += 1


def _binary(model: str, tensors: list[tuple[str, str, list[int], bytes]]) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": [
        {"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(raw)}}
        for n, d, s, raw in tensors], "parameters": {"binary_data_output": True}}).encode()
    return header + b"".join(t[3] for t in tensors), {
        "Inference-Header-Content-Length": str(len(header))}


def _json(tensors: list[tuple[str, str, list[int], list[object]]]) -> tuple[bytes, dict[str, str]]:
    return json.dumps({"inputs": [{"name": n, "datatype": d, "shape": s, "data": data}
                                  for n, d, s, data in tensors]}).encode(), {}


def good_requests(rng: random.Random) -> list[tuple[str, bytes, dict[str, str]]]:
    x = np.arange(16, dtype=np.float32)
    pixels = (np.arange(64) % 17).astype(np.float32)
    text = b"soak"
    framed = len(text).to_bytes(4, "little") + text
    return [
        ("identity", *_binary("identity", [("INPUT0", "FP32", [1, 16], x.tobytes())])),
        ("identity", *_json([("INPUT0", "FP32", [1, 16], x.tolist())])),
        ("identity_bytes", *_binary("identity_bytes", [("INPUT0", "BYTES", [1, 1], framed)])),
        ("add_sub", *_binary("add_sub", [("INPUT0", "FP32", [1, 16], x.tobytes()),
                                         ("INPUT1", "FP32", [1, 16], x.tobytes())])),
        ("digits", *_binary("digits", [("pixels", "FP32", [1, 64], pixels.tobytes())])),
        ("digits", *_json([("pixels", "FP32", [1, 64], pixels.tolist())])),
    ]


def bad_requests() -> list[tuple[str, bytes, dict[str, str], set[int]]]:
    x = np.zeros(16, np.float32).tobytes()
    body, headers = _binary("identity", [("INPUT0", "FP32", [1, 16], x)])
    return [
        ("identity", b"{not json", {}, {400}),
        ("identity", *_json([("INPUT0", "FP32", [1, 15], [0] * 15)]), {400}),
        ("identity", body[:-7], headers, {400}),
        ("identity", b"\x1f\x8b garbage", {"Content-Encoding": "gzip"}, {400}),
        ("identity", gzip.compress(b"{}"), {"Content-Encoding": "br"}, {501}),
        ("nope", b"{}", {}, {404}),
        ("identity_bytes", b'{"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 1], '
         b'"data": ' + b"[" * 600 + b'"x"' + b"]" * 600 + b"}]}", {}, {400}),  # nested 600 deep
        ("digits", *_json([("pixels", "FP32", [1, 64], [1e39] * 64)]), {400}),
    ]


def http_request(host: str, model: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST /v2/models/{model}/infer HTTP/1.1", f"Host: {host}",
             f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(int(line.split(":", 1)[1]) for line in lines[1:]
                  if line.lower().startswith("content-length:"))
    return status, await reader.readexactly(length)


async def worker(host: str, port: int, end: float, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    goods = good_requests(rng)
    bads = bad_requests()
    reader = writer = None
    while time.monotonic() < end:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            roll = rng.random()
            if roll < 0.01:  # a client that leaves: half a body, or before the answer
                model, body, headers = rng.choice(goods)
                data = http_request(f"{host}:{port}", model, body, headers)
                writer.write(data[: len(data) // 2] if rng.random() < 0.5 else data)
                await writer.drain()
                writer.close()
                reader = writer = None
                tally.by_kind["disconnect"] += 1
                continue
            if roll < 0.05:
                model, body, headers, expected = rng.choice(bads)
                kind = "malformed"
            else:
                model, body, headers = rng.choice(goods)
                expected, kind = {200}, "good"
            assert reader is not None
            writer.write(http_request(f"{host}:{port}", model, body, headers))
            status, answer = await read_response(reader)
            tally.record(kind, status, expected, answer.decode("latin-1"))
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            tally.record("connection", 0, set(), repr(exc))
            reader = writer = None


async def scraper(url: str, end: float, tally: Tally, every: float) -> None:
    parsed = urlparse(url)
    while time.monotonic() < end:
        reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
        writer.write(f"GET /metrics HTTP/1.1\r\nHost: {parsed.netloc}\r\nConnection: close\r\n\r\n"
                     .encode())
        status, _ = await read_response(reader)
        writer.close()
        tally.record("scrape", status, {200})
        await asyncio.sleep(every)


def sample(pid: int) -> tuple[float, int, int]:
    """(RSS in MiB, open fds, threads) of the server."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
    threads = next(int(line.split()[1]) for line in status if line.startswith("Threads:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd")), threads


async def sampler(pid: int, end: float, samples: list[tuple[float, float, int, int]]) -> None:
    start = time.monotonic()
    while time.monotonic() < end:
        samples.append((time.monotonic() - start, *sample(pid)))
        await asyncio.sleep(5)


def slope_per_minute(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    return float(np.polyfit(xs, ys, 1)[0]) * 60


async def soak(url: str, pid: int, seconds: float, concurrency: int) -> int:
    parsed = urlparse(url)
    end = time.monotonic() + seconds
    tally = Tally()
    samples: list[tuple[float, float, int, int]] = []
    await asyncio.gather(
        *(worker(parsed.hostname or "127.0.0.1", parsed.port or 80, end, tally, seed)
          for seed in range(concurrency)),
        scraper(url, end, tally, 3.0), sampler(pid, end, samples))
    total = sum(v for k, v in tally.by_kind.items() if k != "UNEXPECTED")
    print(f"soak: {seconds / 60:.1f} min, concurrency {concurrency}, {total} requests "
          f"({total / seconds:.0f}/s)")
    for kind, count in sorted(tally.by_kind.items()):
        print(f"  {kind:24s} {count}")
    for line in tally.unexpected[:10]:
        print(f"  unexpected: {line}")
    warm = [s for s in samples if s[0] >= seconds * 0.2]
    t = [s[0] for s in warm]
    rss, fds, threads = ([s[i] for s in warm] for i in (1, 2, 3))
    growth = (rss[-1] - rss[0]) / rss[0] * 100 if rss else 0.0
    print(f"after warm-up ({len(warm)} samples): RSS {rss[0]:.1f} -> {rss[-1]:.1f} MiB "
          f"({growth:+.1f}%, slope {slope_per_minute(t, rss):+.2f} MiB/min); fds "
          f"{min(fds)}..{max(fds)} (slope {slope_per_minute(t, fds):+.2f}/min); threads "
          f"{min(threads)}..{max(threads)} (slope {slope_per_minute(t, threads):+.2f}/min)"
          if warm else "no samples after warm-up")
    ok = (not tally.by_kind["UNEXPECTED"] and warm and growth < 5 and max(fds) - min(fds) <= 4
          and max(threads) == min(threads))
    print("verdict:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--pid", type=int, help="the running server's process id")
    args = parser.parse_args()
    proc = None
    if args.url is None:
        port = free_port()
        proc = start_server(port)
        url, pid = f"http://127.0.0.1:{port}", proc.pid
    else:
        if args.pid is None:
            parser.error("--url needs --pid (the server's process, for RSS, fds and threads)")
        url, pid = args.url, args.pid
    try:
        code = asyncio.run(soak(url, pid, args.minutes * 60, args.concurrency))
    finally:
        if proc is not None:
            stop_server(proc)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
