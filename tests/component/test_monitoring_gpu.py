"""Monitoring a GPU model on a CPU machine: the fake CUDA driver (host memory standing in for the
device) under the real core and the fake `tensorrt` (output = input + 1). The monitor reads the
batch's inputs where they were gathered (pinned host memory, before the copy to the device) and
its outputs where they came back (pinned host memory, after the copy): its counts are exact, and
the driver saw exactly one copy each way per batch, the same bytes as without monitoring."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import numpy as np
import pytest

from pyserver import _core
from tests.conftest import RunningServer
from tests.fakes.trt import load_fake_tensorrt

CONFIG = """backend = "tensorrt"
max_batch_size = 4
[dynamic_batching]
max_queue_delay_microseconds = 2000
[[instance_group]]
kind = "KIND_GPU"
count = 1
gpus = [0]
"""
MONITORING = """
[monitoring]
[[monitoring.input]]
name = "x"
buckets = [0, 10]
per_feature = true
[[monitoring.output]]
name = "y"
buckets = [0, 10]
"""
REQUESTS = 24


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_fake_tensorrt(monkeypatch)


def serve(trt: ModuleType, make_repository: Any, serve_repository: Any, config: str
          ) -> RunningServer:
    repo: Path = make_repository({"add": config})
    profile = [[1, 4], [4, 4], [4, 4]]
    (repo / "add" / "1" / "model.plan").write_bytes(trt.plan(
        [{"name": "x", "mode": "INPUT", "dtype": "FLOAT", "shape": [-1, 4]},
         {"name": "y", "mode": "OUTPUT", "dtype": "FLOAT", "shape": [-1, 4]}],
        [{"x": profile}],
    ))
    server: RunningServer = serve_repository(repo)
    return server


def rows(i: int) -> list[float]:
    return [i, i + 0.5, -i, 10 * i]


async def infer_all(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async def one(i: int) -> None:
            body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                "data": rows(i)}]}
            async with session.post(url, data=json.dumps(body)) as response:
                assert response.status == 200, await response.text()
                answer = await response.json()
                assert answer["outputs"][0]["data"] == [v + 1 for v in rows(i)]

        await asyncio.gather(*(one(i) for i in range(REQUESTS)))


def copies(fake_cuda: Any, trt: ModuleType, server: RunningServer) -> tuple[int, ...]:
    """Run the requests; the driver's copy counters and the batches the model ran."""
    before = fake_cuda.counters()
    asyncio.run(infer_all(f"{server.http}/v2/models/add/infer"))
    after = fake_cuda.counters()
    batches = len(trt.EXECUTIONS)
    assert sum(e["shapes"]["x"][0] for e in trt.EXECUTIONS) == REQUESTS
    return (after["htod"] - before["htod"], after["htod_bytes"] - before["htod_bytes"],
            after["dtoh"] - before["dtoh"], after["dtoh_bytes"] - before["dtoh_bytes"], batches)


def test_gpu_model_statistics_from_the_pinned_buffers(
    fake_cuda: Any, trt: ModuleType, make_repository: Any, serve_repository: Any
) -> None:
    server = serve(trt, make_repository, serve_repository, CONFIG + MONITORING)
    pinned_before = _core.memory_stats()["pinned_allocations"]
    htod, htod_bytes, dtoh, dtoh_bytes, batches = copies(fake_cuda, trt, server)
    # One copy each way per batch, of exactly the batch's bytes: the monitor added none.
    assert (htod, dtoh) == (batches, batches)
    assert htod_bytes == dtoh_bytes == REQUESTS * 4 * 4
    # The batches were gathered into pinned memory (the fake driver's cuMemHostAlloc).
    assert _core.memory_stats()["pinned_allocations"] > pinned_before

    model = server.server.models.get("add")  # type: ignore[attr-defined]
    report = model.monitor.report()
    assert report["batches"]["sampled"] == batches
    sent = np.array([rows(i) for i in range(REQUESTS)], np.float32)
    bounds = np.array([0, 10], np.float32)
    (x,) = report["inputs"]
    expected = [np.bincount(np.searchsorted(bounds, sent[:, f]), minlength=3).tolist()
                for f in range(4)]
    assert x["window"]["features"] == expected
    assert x["total"]["histogram"] == np.sum(expected, axis=0).tolist()
    (y,) = report["outputs"]
    assert y["window"]["values"]["histogram"] == np.bincount(
        np.searchsorted(bounds, (sent + 1).ravel()), minlength=3).tolist()
    assert y["window"]["values"]["mean"] == pytest.approx(float((sent + 1).mean()))


def test_the_same_copies_without_monitoring(
    fake_cuda: Any, trt: ModuleType, make_repository: Any, serve_repository: Any
) -> None:
    server = serve(trt, make_repository, serve_repository, CONFIG)
    htod, htod_bytes, dtoh, dtoh_bytes, batches = copies(fake_cuda, trt, server)
    assert (htod, dtoh) == (batches, batches)
    assert htod_bytes == dtoh_bytes == REQUESTS * 4 * 4
    assert server.server.models.get("add").monitor is None  # type: ignore[attr-defined]
