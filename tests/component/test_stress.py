"""Stress: 10,000 requests of mixed shapes, priorities and timeouts from many concurrent clients,
some of whom hang up. The model runs at most ~4,000 rows/s (two instances, batches of 4 taking
2 ms), below what the clients offer, so queues fill and time out. Every request is answered exactly once (success, timeout, rejection or
cancellation), no answer carries another request's data, and the queue is empty at the end."""

from __future__ import annotations

import asyncio
import json
import random
import struct
from collections import Counter
from typing import Any

import aiohttp

from tests.component.test_scheduling import model_of, serve, wait_until

REQUESTS = 10_000
CLIENTS = 48
HANG_UP_EVERY = 20  # one request in 20 comes from a client that leaves without its answer

CONFIG = """
backend = "identity"
max_batch_size = 4

[[input]]
name = "INPUT0"
data_type = "TYPE_FP32"
dims = [-1]

[[instance_group]]
kind = "KIND_CPU"
count = 2

[parameters]
execute_delay_us = 2000

[dynamic_batching]
max_queue_delay_microseconds = 200
priority_levels = 3
default_priority_level = 2

[dynamic_batching.default_queue_policy]
max_queue_size = 12
allow_timeout_override = true

[dynamic_batching.priority_queue_policy.1]
timeout_action = "DELAY"
default_timeout_microseconds = 1000

[dynamic_batching.priority_queue_policy.3]
max_queue_size = 4
default_timeout_microseconds = 3000
"""


def make_request(index: int, rng: random.Random) -> tuple[bytes, bytes, dict[str, str]]:
    """(binary body, the input's bytes, headers): the input holds values unique to `index`."""
    width = rng.choice((2, 3, 5))
    values = struct.pack(f"<{width}f", *(index + k / 8 for k in range(width)))
    parameters: dict[str, Any] = {"priority": rng.randrange(4)}  # 0 = the default level
    if rng.random() < 0.3:
        parameters["timeout"] = rng.randrange(500, 5000)
    header = json.dumps({
        "id": str(index),
        "inputs": [{"name": "INPUT0", "shape": [1, width], "datatype": "FP32",
                    "parameters": {"binary_data_size": len(values)}}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
        "parameters": parameters,
    }).encode()
    return header + values, values, {"Inference-Header-Content-Length": str(len(header))}


def test_ten_thousand_mixed_requests(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    running = serve(make_repository, serve_repository, {"mixed": CONFIG})
    model = model_of(running, "mixed")
    url = f"{running.http}/v2/models/mixed/infer"
    outcomes: Counter[str] = Counter()
    hang_ups = 0

    async def hang_up(payload: bytes, headers: dict[str, str], linger: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write((f"POST /v2/models/mixed/infer HTTP/1.1\r\nHost: x\r\n{extra}"
                      f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload)
        await writer.drain()
        await asyncio.sleep(linger)
        writer.transport.abort()  # gone without reading the answer

    async def client(session: aiohttp.ClientSession, indices: list[int]) -> None:
        nonlocal hang_ups
        rng = random.Random(indices[0])
        for index in indices:
            payload, values, headers = make_request(index, rng)
            if index % HANG_UP_EVERY == 0:
                hang_ups += 1
                await hang_up(payload, headers, rng.random() * 0.002)
                continue
            async with session.post(url, data=payload, headers=headers) as response:
                answer = await response.read()
                if response.status == 200:
                    length = int(response.headers["Inference-Header-Content-Length"])
                    header = json.loads(answer[:length])
                    # Its own id, its own shape, its own values: nobody else's rows.
                    assert header["id"] == str(index)
                    assert header["outputs"][0]["shape"] == [1, len(values) // 4]
                    assert answer[length:] == values
                    outcomes["ok"] += 1
                else:
                    assert response.status == 503, answer
                    error = json.loads(answer)["error"]
                    if "timed out in the queue" in error:
                        outcomes["timeout"] += 1
                    else:
                        assert "queue" in error and "full" in error, error
                        outcomes["full"] += 1

    async def run() -> None:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            shares = [list(range(c, REQUESTS, CLIENTS)) for c in range(CLIENTS)]
            await asyncio.gather(*(client(session, share) for share in shares))

    asyncio.run(run())
    answered = sum(outcomes.values())
    assert answered + hang_ups == REQUESTS
    # Every outcome happened, so the test exercised what it claims to.
    assert outcomes["ok"] > REQUESTS // 2 and outcomes["full"] > 0 and outcomes["timeout"] > 0

    wait_until(lambda: model.stats()["pending"] == 0, "the queue drains")
    stats = model.stats()
    reasons = stats["fail_by_reason"]
    assert model._scheduler.queued() == 0
    assert reasons["BACKEND"] == 0 and reasons["OTHER"] == 0
    # The server answered each request it read exactly once. Those that got an answer are
    # counted as what they got; the departed ones each add one success (it ran before the
    # hang-up was seen), one cancellation, or one rejection — and never more than one.
    departed_seen = (stats["success"]["count"] - outcomes["ok"]) + reasons["CANCELED"] + (
        reasons["REJECTED"] - outcomes["full"] - outcomes["timeout"])
    assert stats["success"]["count"] >= outcomes["ok"]
    assert reasons["REJECTED"] >= outcomes["full"] + outcomes["timeout"]
    assert 0 <= departed_seen <= hang_ups
    assert reasons["CANCELED"] > 0  # some hang-ups were seen while their request was queued
    assert stats["success"]["count"] + stats["fail"]["count"] == answered + departed_seen
    # Nothing that was cancelled or rejected ran: the engines saw exactly the successes.
    assert sum(engine.rows for engine in model.engines) == stats["success"]["count"]
    # And the completion router ends up holding nothing: every core completion was drained.
    router = running.server._router  # type: ignore[attr-defined]
    wait_until(lambda: not router._waiting, "every completion is drained")
