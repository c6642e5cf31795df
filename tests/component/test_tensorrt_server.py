"""A TensorRT model through a real server on a CPU machine: the fake CUDA driver (host memory
standing in for device memory) under the real core, and the fake `tensorrt` (tests/fakes) whose
execute_async_v3 computes output = input + 1 through the addresses the core gave it. Requests go
over HTTP; every answer must be its own input plus one, and each instance must have run on its
own context, with its own optimization profile, on the stream the core made for it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningServer
from tests.fakes.trt import load_fake_tensorrt

REQUESTS = 16

CONFIG = """backend = "tensorrt"
max_batch_size = 2
[dynamic_batching]
[[instance_group]]
kind = "KIND_GPU"
count = 2
"""


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = load_fake_tensorrt(monkeypatch)
    module.EXECUTE_DELAY_S = 0.02  # long enough that concurrent batches find other instances
    return module


@pytest.fixture
def running(fake_cuda: Any, trt: ModuleType, make_repository: Any, serve_repository: Any
            ) -> RunningServer:
    repo: Path = make_repository({"add": CONFIG})
    profile = [[1, 4], [2, 4], [2, 4]]
    (repo / "add" / "1" / "model.plan").write_bytes(trt.plan(
        [{"name": "x", "mode": "INPUT", "dtype": "FLOAT", "shape": [-1, 4]},
         {"name": "y", "mode": "OUTPUT", "dtype": "FLOAT", "shape": [-1, 4]}],
        [{"x": profile}, {"x": profile}],
    ))
    server: RunningServer = serve_repository(repo)
    return server


async def infer_all(url: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async def one(i: int) -> dict[str, Any]:
            body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                "data": [i, i + 0.5, -i, 10 * i]}]}
            async with session.post(url, data=json.dumps(body)) as response:
                assert response.status == 200, await response.text()
                answer: dict[str, Any] = await response.json()
                return answer

        return await asyncio.gather(*(one(i) for i in range(REQUESTS)))


def test_answers_are_input_plus_one_from_per_instance_contexts(
    running: RunningServer, trt: ModuleType, fake_cuda: Any
) -> None:
    model = running.server.models.get("add")  # type: ignore[attr-defined]
    assert [e.gpu for e in model.engines] == [0, 0, 1, 1]
    answers = asyncio.run(infer_all(f"{running.http}/v2/models/add/infer"))
    for i, answer in enumerate(answers):
        (output,) = answer["outputs"]
        assert output["name"] == "y" and output["shape"] == [1, 4]
        assert output["data"] == [i + 1, i + 1.5, -i + 1, 10 * i + 1]

    # Each context belongs to one GPU's engine and holds its own profile there.
    engine_of = dict((c, e) for e, c in trt.calls("ICudaEngine.create_execution_context"))
    assert len(engine_of) == 4 and len(set(engine_of.values())) == 2
    profile_of: dict[int, int] = {}
    stream_of: dict[int, int] = {}
    for context, profile, stream in trt.calls("IExecutionContext.set_optimization_profile_async"):
        assert context not in profile_of, "a context sets its profile once"
        profile_of[context] = profile
        stream_of[context] = stream
    assert len({(engine_of[c], p) for c, p in profile_of.items()}) == len(profile_of)

    # Every batch ran on its context's profile, on the stream the core made for that instance.
    streams = {e.stream for e in model.engines}
    assert 0 not in streams and len(streams) == 4
    executions = trt.EXECUTIONS
    assert sum(e["shapes"]["x"][0] for e in executions) == REQUESTS
    for execution in executions:
        context = execution["context"]
        assert execution["profile"] == profile_of[context]
        assert execution["stream"] == stream_of[context] and execution["stream"] in streams
    assert len({e["context"] for e in executions}) >= 2  # concurrent batches, several instances
    counters = fake_cuda.counters()
    assert counters["htod"] >= len(executions) and counters["dtoh"] >= len(executions)


def test_unload_frees_device_memory_streams_and_contexts(
    fake_cuda: Any, trt: ModuleType, make_repository: Any, serve_repository: Any
) -> None:
    """Load and unload a GPU model 20 times (through the fake driver): after each unload every
    device allocation, stream, event and context reference it made is given back."""
    from pyserver.dataplane import ControlMode

    repo: Path = make_repository({"add": CONFIG})
    profile = [[1, 4], [2, 4], [2, 4]]
    (repo / "add" / "1" / "model.plan").write_bytes(trt.plan(
        [{"name": "x", "mode": "INPUT", "dtype": "FLOAT", "shape": [-1, 4]},
         {"name": "y", "mode": "OUTPUT", "dtype": "FLOAT", "shape": [-1, 4]}],
        [{"x": profile}, {"x": profile}],
    ))
    running: RunningServer = serve_repository(repo, model_control_mode=ControlMode.EXPLICIT)

    async def cycle() -> None:
        async with aiohttp.ClientSession() as session:
            load = f"{running.http}/v2/repository/models/add/load"
            async with session.post(load, data=b"{}") as response:
                assert response.status == 200, await response.text()
        await infer_all(f"{running.http}/v2/models/add/infer")
        async with aiohttp.ClientSession() as session:
            unload = f"{running.http}/v2/repository/models/add/unload"
            async with session.post(unload, data=b"{}") as response:
                assert response.status == 200, await response.text()

    copies = 0
    for _ in range(20):
        asyncio.run(cycle())
        c = fake_cuda.counters()
        assert c["htod"] > copies and c["mem_alloc"] > 0  # this cycle ran on the "GPU"
        copies = c["htod"]
        assert c["device_bytes"] == 0, c
        assert c["mem_alloc"] == c["mem_free"], c
        assert c["stream_create"] == c["stream_destroy"], c
        assert c["event_create"] == c["event_destroy"], c
