"""The scheduler's policies over HTTP: full queues, timeouts, priorities, cancellation, ordering
and concurrent instances, with the C++ identity engine standing in for a model of known cost
(`execute_delay_us`).

Where an order matters the test makes it certain rather than likely: it waits (bounded) until
the server has queued a request before sending the next, reading the model's own counters in
process, and every engine delay is far longer than the tolerance the assertion allows.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningServer

WAIT_S = 10.0


def identity_config(delay_us: int, batching: str, *, max_batch_size: int = 1, count: int = 1) -> str:
    return (
        f'backend = "identity"\nmax_batch_size = {max_batch_size}\n'
        '[[input]]\nname = "INPUT0"\ndata_type = "TYPE_FP32"\ndims = [2]\n'
        f"[[instance_group]]\nkind = \"KIND_CPU\"\ncount = {count}\n"
        f"[parameters]\nexecute_delay_us = {delay_us}\n"
        f"[dynamic_batching]\n{batching}"
    )


def body(value: float, parameters: dict[str, Any] | None = None) -> bytes:
    request: dict[str, Any] = {
        "inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32", "data": [value, value]}]
    }
    if parameters:
        request["parameters"] = parameters
    return json.dumps(request).encode()


def raw_request(model: str, payload: bytes) -> bytes:
    """A whole infer request for a plain socket (a client that can hang up at will)."""
    head = (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    return head + payload


def model_of(running: RunningServer, name: str) -> Any:
    return running.server.models.get(name)  # type: ignore[attr-defined]


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.002)


class Client:
    """Infer requests from one aiohttp session; records when each answer arrived."""

    def __init__(self, session: aiohttp.ClientSession, running: RunningServer, model: str):
        self.session = session
        self.url = f"{running.http}/v2/models/{model}/infer"
        self.done: dict[Any, float] = {}

    async def infer(self, key: Any, value: float, **parameters: Any) -> tuple[int, Any]:
        async with self.session.post(self.url, data=body(value, parameters)) as response:
            answer = await response.json()
            self.done[key] = time.monotonic()
            return response.status, answer


def start(coro: Any) -> asyncio.Task[Any]:
    return asyncio.get_running_loop().create_task(coro)


async def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        await asyncio.sleep(0.002)


def serve(make_repository: Any, serve_repository: Any, models: dict[str, str]) -> RunningServer:
    repo: Path = make_repository(models)
    running: RunningServer = serve_repository(repo)
    return running


def test_a_full_queue_answers_503_at_once(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    running = serve(make_repository, serve_repository, {
        "slow": identity_config(300_000, "[dynamic_batching.default_queue_policy]\nmax_queue_size = 2\n"),
        "levels": identity_config(300_000, (
            "priority_levels = 2\ndefault_priority_level = 2\n"
            "[dynamic_batching.priority_queue_policy.1]\nmax_queue_size = 1\n")),
    })
    slow, levels = model_of(running, "slow"), model_of(running, "levels")

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            client = Client(session, running, "slow")
            running_one = start(client.infer("first", 1.0))
            await until(lambda: slow.engines[0].executions == 1, "the first request runs")
            queued = [start(client.infer(i, float(i))) for i in range(2)]
            await until(lambda: slow.stats()["pending"] == 3, "two requests are queued")
            assert slow.queue_full()
            started = time.monotonic()
            status, answer = await client.infer("over", 9.0)
            # Refused before its body was read, long before the running batch ends.
            assert time.monotonic() - started < 0.2
            assert status == 503
            assert "slow" in answer["error"] and "queue is full" in answer["error"]
            for task in [running_one, *queued]:
                status, answer = await task
                assert status == 200, answer
            stats = slow.stats()
            assert stats["fail_by_reason"]["REJECTED"] == 1
            assert stats["success"]["count"] == 3

            # Per level: level 1 holds one request; level 2 is unbounded, so the gateway lets
            # the request through and the core refuses it, naming the level and its limit.
            client = Client(session, running, "levels")
            occupy = start(client.infer("first", 1.0))
            await until(lambda: levels.engines[0].executions == 1, "the first request runs")
            high = start(client.infer("high", 2.0, priority=1))
            await until(lambda: levels.stats()["pending"] == 2, "one request waits at level 1")
            status, answer = await client.infer("high-over", 3.0, priority=1)
            assert status == 503
            assert answer["error"] == (
                "model 'levels': the queue of priority level 1 is full (1 requests waiting, "
                "max_queue_size 1)")
            status, _ = await client.infer("low", 4.0, priority=2)
            assert status == 200
            for task in (occupy, high):
                assert (await task)[0] == 200

    asyncio.run(run())


def test_a_timed_out_request_fails_alone(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    running = serve(make_repository, serve_repository, {
        "slow": identity_config(300_000, (
            "[dynamic_batching.default_queue_policy]\n"
            "default_timeout_microseconds = 10000000\nallow_timeout_override = true\n")),
    })
    slow = model_of(running, "slow")

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            client = Client(session, running, "slow")
            first = start(client.infer("first", 1.0))
            await until(lambda: slow.engines[0].executions == 1, "the first request runs")
            started = time.monotonic()
            impatient = start(client.infer("impatient", 2.0, timeout=50_000))
            patient = start(client.infer("patient", 3.0))
            status, answer = await impatient
            # It failed when its 50 ms ran out, while the instance was still busy.
            assert time.monotonic() - started < 0.25
            assert status == 503
            assert "timed out in the queue" in answer["error"] and "slow" in answer["error"]
            for task, value in ((first, 1.0), (patient, 3.0)):
                status, answer = await task
                assert status == 200 and answer["outputs"][0]["data"] == [value, value]
            stats = slow.stats()
            assert stats["fail_by_reason"]["REJECTED"] == 1
            assert slow.engines[0].rows == 2  # the timed-out request never ran

    asyncio.run(run())


def test_priority_1_finishes_before_priority_2_queued_earlier(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    running = serve(make_repository, serve_repository, {
        "ranked": identity_config(60_000, "priority_levels = 2\ndefault_priority_level = 2\n"),
    })
    ranked = model_of(running, "ranked")

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            client = Client(session, running, "ranked")
            tasks = [start(client.infer("first", 0.0))]
            await until(lambda: ranked.engines[0].executions == 1, "the first request runs")
            order = [("low", i, 2) for i in range(3)] + [("high", i, 1) for i in range(3)]
            for n, (kind, i, priority) in enumerate(order):
                tasks.append(start(client.infer((kind, i), float(n), priority=priority)))
                await until(lambda n=n: ranked.stats()["pending"] == n + 2, "it is queued")
            for task in tasks:
                assert (await task)[0] == 200
            done = client.done
            last_high = max(done[("high", i)] for i in range(3))
            first_low = min(done[("low", i)] for i in range(3))
            # One request per 60 ms batch: the later, higher-priority requests all ran first.
            assert last_high < first_low
            highs = [done[("high", i)] for i in range(3)]
            lows = [done[("low", i)] for i in range(3)]
            assert highs == sorted(highs) and lows == sorted(lows)  # FIFO within a level

    asyncio.run(run())


def test_cancelled_requests_are_not_executed(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    running = serve(make_repository, serve_repository, {
        "slow": identity_config(200_000, ""),
    })
    slow = model_of(running, "slow")
    request = raw_request("slow", body(5.0))

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            client = Client(session, running, "slow")
            first = start(client.infer("first", 1.0))
            await until(lambda: slow.engines[0].executions == 1, "the first request runs")
            # Three clients queue a request each, then hang up while it waits.
            sockets = []
            for n in range(3):
                s = socket.create_connection(("127.0.0.1", running.port))
                s.sendall(request)
                sockets.append(s)
                await until(lambda n=n: slow.stats()["pending"] == n + 2, "it is queued")
            for s in sockets:
                s.close()
            await until(lambda: slow.stats()["fail_by_reason"]["CANCELED"] == 3,
                        "the three requests are cancelled")
            assert (await first)[0] == 200
            status, answer = await client.infer("after", 7.0)
            assert status == 200 and answer["outputs"][0]["data"] == [7.0, 7.0]

    asyncio.run(run())
    # Two requests ran; the engine saw exactly those, and /stats says the same.
    assert slow.engines[0].executions == 2
    async def stats() -> Any:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{running.http}/v2/models/slow/stats") as response:
                return (await response.json())["model_stats"][0]
    triton = asyncio.run(stats())
    assert triton["execution_count"] == 2
    assert triton["inference_stats"]["success"]["count"] == 2
    assert triton["inference_stats"]["fail"]["count"] == 3
    assert slow.stats()["pending"] == 0


def test_a_client_gone_while_its_batch_runs_leaves_the_batch_mate_answered(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    # A batch of two forms at once (preferred size 2) and runs for 300 ms.
    running = serve(make_repository, serve_repository, {
        "pair": identity_config(300_000, "preferred_batch_size = [2]\n"
                                         "max_queue_delay_microseconds = 5000000\n",
                                max_batch_size=2),
    })
    pair = model_of(running, "pair")
    request = raw_request("pair", body(3.0))

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            client = Client(session, running, "pair")
            gone = socket.create_connection(("127.0.0.1", running.port))
            gone.sendall(request)
            await until(lambda: pair.stats()["pending"] == 1, "the first request is queued")
            mate = start(client.infer("mate", 8.0))
            await until(lambda: pair.engines[0].executions == 1, "the batch of two runs")
            gone.close()  # while its batch executes: the batch finishes, its answer is dropped
            status, answer = await mate
            assert status == 200 and answer["outputs"][0]["data"] == [8.0, 8.0]
            status, answer = await client.infer("after", 9.0)
            assert status == 200 and answer["outputs"][0]["data"] == [9.0, 9.0]

    asyncio.run(run())
    assert pair.engines[0].rows == 3  # the dropped request ran: it was not cancelled
    stats = pair.stats()
    assert stats["fail_by_reason"]["CANCELED"] == 0 and stats["pending"] == 0
    assert sorted(pair._scheduler.batch_sizes()) == [1, 2]


@pytest.mark.parametrize("preserve", [True, False], ids=["preserve_ordering", "control"])
def test_preserve_ordering_under_64_concurrent_requests(make_repository, serve_repository, preserve) -> None:  # type: ignore[no-untyped-def]
    """64 requests in flight at once, half of them priority 1, arriving in a known order; the
    priorities make execution order differ from arrival order. With preserve_ordering every
    answer leaves in arrival order; without it (the control) later high-priority requests are
    answered whole batches earlier."""
    batch_s = 0.03
    running = serve(make_repository, serve_repository, {
        "ordered": identity_config(int(batch_s * 1e6), (
            f"preserve_ordering = {'true' if preserve else 'false'}\n"
            "priority_levels = 2\ndefault_priority_level = 2\n"), max_batch_size=4),
    })
    ordered = model_of(running, "ordered")

    async def run() -> dict[Any, float]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            client = Client(session, running, "ordered")
            tasks = []
            for n in range(64):
                priority = 1 if n % 2 else 2
                tasks.append(start(client.infer(n, float(n), priority=priority)))
                # Arrival order is certain: the next request goes once this one is counted.
                await until(lambda n=n: ordered.stats()["pending"] + ordered.stats()["success"]["count"] >= n + 1,
                            "it reached the queue")
            for n, task in enumerate(tasks):
                status, answer = await task
                assert status == 200 and answer["outputs"][0]["data"] == [float(n)] * 2
            return client.done

    done = asyncio.run(run())
    # The largest amount by which an earlier arrival was answered after a later one.
    inversion = max(done[i] - done[j] for i in range(64) for j in range(i + 1, 64))
    if preserve:
        assert inversion < batch_s / 2, f"answers left out of arrival order by {inversion:.3f}s"
    else:
        assert inversion > batch_s, "the control should see priorities reorder the answers"


def test_two_instances_run_batches_at_the_same_time(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    # Long enough batches that a busy 2-core machine's scheduling noise (connecting, waking
    # the workers) cannot be mistaken for, or hide, the overlap.
    delay_s = 1.0
    running = serve(make_repository, serve_repository, {
        "pair": identity_config(int(delay_s * 1e6), "", count=2),
    })
    pair = model_of(running, "pair")
    assert len(pair.engines) == 2

    async def run() -> float:
        async with aiohttp.ClientSession() as session:
            client = Client(session, running, "pair")
            started = time.monotonic()
            results = await asyncio.gather(*(client.infer(i, float(i)) for i in range(2)))
            assert [status for status, _ in results] == [200, 200]
            return time.monotonic() - started

    elapsed = asyncio.run(run())
    # One batch on each instance; run one after the other they would take 2 x 1 s.
    assert [engine.executions for engine in pair.engines] == [1, 1]
    assert elapsed < 2 * delay_s * 0.8, f"two batches took {elapsed:.3f}s: not concurrent"
