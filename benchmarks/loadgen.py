"""Closed-loop load generator: N keep-alive connections, each sending one binary KServe v2 request
and waiting for its answer before sending the next. Prints infer/s and latency percentiles.

It speaks HTTP/1.1 over raw asyncio transports (uvloop when installed) with the request bytes built
once, so the client spends as little of the shared CPU as a Python client can.

    python benchmarks/loadgen.py --url http://127.0.0.1:8000 --model identity --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import time
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np

DTYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "INT32": np.int32,
          "INT64": np.int64, "UINT8": np.uint8, "INT8": np.int8, "BOOL": np.bool_}


def model_metadata(base_url: str, model: str) -> dict:
    with urllib.request.urlopen(f"{base_url}/v2/models/{model}", timeout=10) as r:
        return json.loads(r.read())


def model_stats(base_url: str, model: str) -> dict:
    with urllib.request.urlopen(f"{base_url}/v2/models/{model}/stats", timeout=10) as r:
        return json.loads(r.read())["model_stats"][0]


def build_request(base_url: str, model: str, batch: int = 1, seed: int = 0) -> bytes:
    """One binary-tensor infer request (HTTP bytes) with random data for every input, the shapes
    taken from the model's metadata (variable dims become 1), binary outputs asked for."""
    meta = model_metadata(base_url, model)
    rng = np.random.default_rng(seed)
    inputs, tails = [], []
    for spec in meta["inputs"]:
        shape = [batch] + [d if d > 0 else 1 for d in spec["shape"][1:]]
        if spec["datatype"] == "BYTES":
            n = int(np.prod(shape))
            raw = b"".join(len(b"hello").to_bytes(4, "little") + b"hello" for _ in range(n))
        else:
            raw = (rng.random(shape) * 16).astype(DTYPES[spec["datatype"]]).tobytes()
        inputs.append({"name": spec["name"], "shape": shape, "datatype": spec["datatype"],
                       "parameters": {"binary_data_size": len(raw)}})
        tails.append(raw)
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    body = header + b"".join(tails)
    host = urlparse(base_url).netloc
    head = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Length: {len(body)}\r\nInference-Header-Content-Length: {len(header)}\r\n\r\n"
    ).encode()
    return head + body


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    requests: int
    errors: int
    latencies_us: list[float] = field(repr=False)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        return float(np.percentile(self.latencies_us, p)) if self.latencies_us else float("nan")

    def line(self) -> str:
        return (f"c={self.concurrency:<4d} {self.rate:10.0f} req/s   p50 {self.percentile(50):8.0f} us"
                f"   p99 {self.percentile(99):8.0f} us   errors {self.errors}")


def response_size(buffer: bytearray) -> tuple[int, bool] | None:
    """For a buffer that starts with an HTTP/1.1 response: its whole size (head and
    Content-Length body) and whether it is a 200, or None while the head is incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    start = head.find(b"\r\ncontent-length:") + 17
    stop = head.find(b"\r\n", start)
    length = int(head[start : stop if stop >= 0 else len(head)])
    return end + 4 + length, head.startswith(b"http/1.1 200")


class _Connection(asyncio.Protocol):
    def __init__(self, payload: bytes, state: _State) -> None:
        self.payload = payload
        self.state = state
        self.buffer = bytearray()
        self.need = -1
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        self.sent_at = time.perf_counter()
        assert self.transport is not None
        self.transport.write(self.payload)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.need < 0:
                parsed = response_size(self.buffer)
                if parsed is None:
                    return
                self.need, self.ok = parsed
            if len(self.buffer) < self.need:
                return
            del self.buffer[: self.need]
            self.need = -1
            self.state.record(time.perf_counter() - self.sent_at, self.ok)
            if self.state.running:
                self.send()
            else:
                assert self.transport is not None
                self.transport.close()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _State:
    def __init__(self) -> None:
        self.running = True
        self.measuring = False
        self.count = 0
        self.errors = 0
        self.latencies: list[float] = []

    def record(self, seconds: float, ok: bool) -> None:
        if not self.measuring:
            return
        self.count += 1
        if not ok:
            self.errors += 1
        self.latencies.append(seconds * 1e6)


async def run_load(base_url: str, payload: bytes, concurrency: int, duration: float,
                   warmup: float = 1.0) -> LoadResult:
    url = urlparse(base_url)
    state = _State()
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(concurrency):
        _, proto = await loop.create_connection(lambda: _Connection(payload, state), url.hostname, url.port)
        conns.append(proto)
    await asyncio.sleep(warmup)
    state.measuring = True
    start = time.perf_counter()
    await asyncio.sleep(duration)
    state.measuring = False
    elapsed = time.perf_counter() - start
    state.running = False
    await asyncio.wait_for(asyncio.gather(*(c.closed for c in conns)), timeout=30)
    return LoadResult(concurrency, elapsed, state.count, state.errors, state.latencies)


async def run_requests(base_url: str, payload: bytes, concurrency: int, total: int) -> float:
    """Send `total` requests at the given concurrency as fast as they are answered; returns s."""
    url = urlparse(base_url)
    state = _State()
    state.measuring = True
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    conns = []
    for _ in range(concurrency):
        _, proto = await loop.create_connection(lambda: _Connection(payload, state), url.hostname, url.port)
        conns.append(proto)
    while state.count < total:
        await asyncio.sleep(0.05)
    state.running = False
    await asyncio.wait_for(asyncio.gather(*(c.closed for c in conns)), timeout=30)
    if state.errors:
        raise RuntimeError(f"{state.errors} requests failed")
    return time.perf_counter() - start


class _OpenLoopConnection(asyncio.Protocol):
    """One keep-alive connection of the open-loop pool: sends a request when handed one, and
    hands itself back to the pool when the answer is in."""

    def __init__(self, payload: bytes, pool: _Pool) -> None:
        self.payload = payload
        self.pool = pool
        self.buffer = bytearray()
        self.need = -1
        self.ok = False
        self.arrival = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, arrival: float) -> None:
        self.arrival = arrival
        assert self.transport is not None
        self.transport.write(self.payload)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            parsed = response_size(self.buffer)
            if parsed is None:
                return
            self.need, self.ok = parsed
        if len(self.buffer) < self.need:
            return
        del self.buffer[: self.need]
        self.need = -1
        self.pool.done(self, time.perf_counter() - self.arrival, self.ok)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.lost(self)
        if not self.closed.done():
            self.closed.set_result(None)


class _Pool:
    """Arrivals waiting for a connection, idle connections, and the recorded latencies."""

    def __init__(self) -> None:
        self.idle: list[_OpenLoopConnection] = []
        self.waiting: collections.deque[float] = collections.deque()
        self.busy: set[_OpenLoopConnection] = set()
        self.state = _State()

    def dispatch(self, arrival: float) -> None:
        if self.idle:
            conn = self.idle.pop()
            self.busy.add(conn)
            conn.send(arrival)
        else:
            self.waiting.append(arrival)

    def done(self, conn: _OpenLoopConnection, seconds: float, ok: bool) -> None:
        self.state.record(seconds, ok)
        if self.waiting:
            conn.send(self.waiting.popleft())
        else:
            self.busy.discard(conn)
            self.idle.append(conn)

    def lost(self, conn: _OpenLoopConnection) -> None:
        if conn in self.busy:  # the server hung up on a request: count it, and fail it
            self.busy.discard(conn)
            self.state.record(time.perf_counter() - conn.arrival, False)
        if conn in self.idle:
            self.idle.remove(conn)


async def run_poisson(base_url: str, payload: bytes, rate: float, duration: float,
                      warmup: float = 1.0, connections: int = 64, seed: int = 0) -> LoadResult:
    """Open loop: requests arrive as a Poisson process of `rate` per second whatever the server
    answers, for `warmup` then `duration` seconds; returns what the measured window saw.

    Requests go out over a pool of `connections` keep-alive connections; an arrival that finds
    them all busy waits in the client and its latency counts from its arrival (so a server that
    falls behind shows it in its latencies rather than hiding it, the coordinated-omission trap).
    Arrivals of the window still waiting for a connection at its end count as errors. LoadResult.concurrency holds `connections`; the achieved rate is LoadResult.rate.
    """
    url = urlparse(base_url)
    loop = asyncio.get_running_loop()
    pool = _Pool()
    conns = []
    for _ in range(connections):
        _, proto = await loop.create_connection(
            lambda: _OpenLoopConnection(payload, pool), url.hostname, url.port)
        conns.append(proto)
        pool.idle.append(proto)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    measure_from, measure_to = start + warmup, start + warmup + duration
    arrival = start + float(rng.exponential(1.0 / rate))
    while arrival < measure_to:
        now = time.perf_counter()
        if not pool.state.measuring and now >= measure_from:
            pool.state.measuring = True
        while arrival <= now and arrival < measure_to:
            # Latency counts from now, when the client got to this arrival, not from its
            # scheduled time: the loop's timers wake up to a millisecond late, which is the
            # client's lag, not the server's. The schedule stays absolute, so lag never adds up.
            pool.dispatch(now)
            arrival += float(rng.exponential(1.0 / rate))
        await asyncio.sleep(max(0.0, min(arrival, measure_to) - time.perf_counter()))
    pool.state.measuring = False
    elapsed = time.perf_counter() - measure_from
    # Arrivals still waiting were offered in the window but never sent: count them as errors.
    pool.state.errors += len(pool.waiting)
    pool.waiting.clear()
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    await asyncio.wait_for(asyncio.gather(*(c.closed for c in conns)), timeout=30)
    return LoadResult(connections, elapsed, pool.state.count, pool.state.errors,
                      pool.state.latencies)


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default="identity")
    parser.add_argument("--batch", type=int, default=1, help="rows per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    payload = build_request(args.url, args.model, args.batch)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        for c in args.concurrency:
            results = [runner.run(run_load(args.url, payload, c, args.duration, args.warmup))
                       for _ in range(args.repeats)]
            for r in results:
                print(f"  {args.model} {r.line()}")
            print(f"{args.model} c={c} median: {statistics.median(r.rate for r in results):.0f} req/s, "
                  f"p50 {statistics.median(r.percentile(50) for r in results):.0f} us, "
                  f"p99 {statistics.median(r.percentile(99) for r in results):.0f} us")


if __name__ == "__main__":
    main()
