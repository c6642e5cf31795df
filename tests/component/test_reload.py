"""Reload without a gap, unload that finishes what it accepted, loads off the event loop, and
nothing left behind after many load/unload cycles."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pyserver.dataplane import ControlMode
from tests.conftest import ENGINES, RunningServer

SLOW_IDENTITY = """backend = "identity"
max_batch_size = 0
[[input]]
name = "INPUT0"
data_type = "TYPE_FP32"
dims = [4]
[parameters]
execute_delay_us = {delay}
"""


def write_onnx(path: Path, op: str, constant: float) -> None:
    """y = x <op> constant, FP32 [-1, 4] -> [-1, 4]."""
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "c"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor("c", TensorProto.FLOAT, [1], [constant])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)  # whole files only: a scan never sees half of one


def post(running: RunningServer, path: str, body: object) -> int:
    request = urllib.request.Request(running.http + path, data=json.dumps(body).encode(),
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def infer_body(x: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()


def test_reload_under_load_fails_no_request(tmp_path: Path, serve_repository) -> None:  # type: ignore[no-untyped-def]
    """64 clients for 20 s while the model is reloaded 20 times, alternating two model files:
    no request fails, and every answer is exactly one of the two models' outputs."""
    repo = tmp_path / "models"
    model_file = repo / "m" / "1" / "model.onnx"
    (repo / "m").mkdir(parents=True)
    (repo / "m" / "config.toml").write_text(
        'backend = "onnxruntime"\nmax_batch_size = 16\n[dynamic_batching]\n'
        "max_queue_delay_microseconds = 100\n")
    write_onnx(model_file, "Add", 1.0)
    running = serve_repository(repo, model_control_mode=ControlMode.EXPLICIT, load_models=("m",))
    url = running.http + "/v2/models/m/infer"
    stop = time.monotonic() + 20.0
    outcomes = {"plus": 0, "times": 0}
    failures: list[str] = []

    async def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < stop:
                x = rng.integers(1, 100, (1, 4)).astype(np.float32)
                try:
                    async with session.post(url, data=infer_body(x)) as r:
                        text = await r.text()
                        if r.status != 200:
                            failures.append(f"{r.status}: {text}")
                            continue
                except aiohttp.ClientError as exc:
                    failures.append(repr(exc))
                    continue
                y = np.array(json.loads(text)["outputs"][0]["data"], np.float32).reshape(1, 4)
                if np.array_equal(y, x + 1):
                    outcomes["plus"] += 1
                elif np.array_equal(y, x * 2):
                    outcomes["times"] += 1
                else:
                    failures.append(f"{x} -> {y}: neither model's answer")

    reloads: list[int] = []

    def reloader() -> None:
        for i in range(20):
            time.sleep(0.8)
            write_onnx(model_file, "Mul" if i % 2 == 0 else "Add", 2.0 if i % 2 == 0 else 1.0)
            reloads.append(post(running, "/v2/repository/models/m/load", {}))

    thread = threading.Thread(target=reloader)
    thread.start()

    async def main() -> None:
        await asyncio.gather(*(client(seed) for seed in range(64)))

    asyncio.run(main())
    thread.join()
    assert reloads == [200] * 20
    assert failures == [], failures[:5]
    assert outcomes["plus"] > 0 and outcomes["times"] > 0, outcomes


def slow_repository(tmp_path: Path, delay_us: int) -> Path:
    repo = tmp_path / "models"
    (repo / "slow" / "1").mkdir(parents=True)
    (repo / "slow" / "config.toml").write_text(SLOW_IDENTITY.format(delay=delay_us))
    shutil.copytree(ENGINES / "identity", repo / "identity")
    return repo


async def _post_json(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, str]:
    async with session.post(url, data=body) as r:
        return r.status, await r.text()


def test_unload_finishes_what_it_accepted(tmp_path: Path, serve_repository) -> None:  # type: ignore[no-untyped-def]
    running = serve_repository(slow_repository(tmp_path, 300_000),
                               model_control_mode=ControlMode.EXPLICIT, load_models=("*",))
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [4], "datatype": "FP32",
                                   "data": [1, 2, 3, 4]}]}).encode()
    url = running.http + "/v2/models/slow/infer"

    async def main() -> tuple[list[tuple[int, str]], tuple[int, str], float]:
        async with aiohttp.ClientSession() as session:
            accepted = [asyncio.create_task(_post_json(session, url, body)) for _ in range(3)]
            await asyncio.sleep(0.1)  # all three queued or running (0.3 s each, one at a time)
            started = time.monotonic()
            unload = asyncio.get_running_loop().run_in_executor(
                None, post, running, "/v2/repository/models/slow/unload", {})
            await asyncio.sleep(0.1)
            late = await _post_json(session, url, body)  # while the unload drains
            assert await unload == 200
            took = time.monotonic() - started
            return await asyncio.gather(*accepted), late, took

    answers, late, took = asyncio.run(main())
    assert [status for status, _ in answers] == [200, 200, 200]
    assert late[0] == 404 and "slow" in late[1]
    assert took > 0.5  # the unload waited for the three 0.3 s requests


def read_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_load_unload_cycles_leave_nothing_behind(tmp_path: Path, serve_repository) -> None:  # type: ignore[no-untyped-def]
    """100 load/unload cycles: RSS within 10% of where it started, threads back to baseline."""
    repo = tmp_path / "models"
    for name in ("digits", "identity"):
        shutil.copytree(ENGINES / name, repo / name)
    running = serve_repository(repo, model_control_mode=ControlMode.EXPLICIT)
    pixels = json.dumps({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32",
                                     "data": [1.0] * 64}]}).encode()

    def cycle() -> None:
        for name in ("digits", "identity"):
            assert post(running, f"/v2/repository/models/{name}/load", {}) == 200
        request = urllib.request.Request(running.http + "/v2/models/digits/infer", data=pixels,
                                         method="POST")
        with urllib.request.urlopen(request, timeout=30) as r:
            assert r.status == 200
        for name in ("digits", "identity"):
            assert post(running, f"/v2/repository/models/{name}/unload", {}) == 200

    def pool_threads() -> int:
        """Threads of the load pool and the loop's default executor: they start lazily, up to
        their fixed size, whenever work finds every one busy (that is growth, not a leak)."""
        default = getattr(running.loop, "_default_executor", None)
        pools = [running.server.models._pool, default]  # type: ignore[attr-defined]
        return sum(len(pool._threads) for pool in pools if pool is not None)

    for _ in range(5):  # warm up: load threads, ONNX Runtime's own pools, allocator arenas
        cycle()
    rss, threads, pooled = read_status("VmRSS"), read_status("Threads"), pool_threads()
    for _ in range(100):
        cycle()
    time.sleep(0.2)
    # Every core thread (batchers, instance workers) and session thread is gone again (fewer is
    # possible: a thread of an earlier test in this process may end meanwhile).
    assert read_status("Threads") - (pool_threads() - pooled) <= threads
    grown = read_status("VmRSS") / rss
    assert grown < 1.10, f"RSS grew {grown:.3f}x over 100 cycles"


def test_loads_of_one_model_are_serialized_and_of_two_run_in_parallel(
    tmp_path: Path, serve_repository,  # type: ignore[no-untyped-def]
) -> None:
    """Two models whose load takes ~1 s each (warmup through a slow engine) load side by side;
    two loads of one model run one after the other."""
    repo = tmp_path / "models"
    for name in ("a", "b"):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.toml").write_text(SLOW_IDENTITY.format(delay=250_000) + (
            '[[model_warmup]]\nname = "w"\ncount = 4\n[model_warmup.inputs.INPUT0]\n'
            'data_type = "TYPE_FP32"\ndims = [4]\nzero_data = true\n'))
    running = serve_repository(repo, model_control_mode=ControlMode.EXPLICIT)

    def timed(*names: str) -> float:
        started = time.monotonic()
        threads = [threading.Thread(target=lambda n=n: post(
            running, f"/v2/repository/models/{n}/load",
            {"parameters": {"config": json.dumps({"backend": "identity", "max_batch_size": 0,
                                                  "input": [{"name": "INPUT0",
                                                             "data_type": "TYPE_FP32",
                                                             "dims": [4]}],
                                                  "parameters": {"execute_delay_us": {
                                                      "string_value": "250000"}},
                                                  "model_warmup": [{
                                                      "name": "w", "count": 4, "inputs": {
                                                          "INPUT0": {"data_type": "TYPE_FP32",
                                                                     "dims": [4],
                                                                     "zero_data": True}}}]})}}))
            for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.monotonic() - started

    parallel = timed("a", "b")
    serial = timed("a", "a")
    assert parallel < 1.7, parallel  # two 1 s loads side by side
    assert serial >= 2.0, serial  # one after the other


def test_a_slow_load_does_not_stall_other_models(tmp_path: Path, serve_repository) -> None:  # type: ignore[no-untyped-def]
    """A model whose load takes seconds (a large ONNX graph for ONNX Runtime to optimize) loads
    in a load thread: requests to another model keep their latency meanwhile."""
    repo = tmp_path / "models"
    shutil.copytree(ENGINES / "identity", repo / "identity")
    big = repo / "big"
    (big / "config.toml").parent.mkdir(parents=True)
    (big / "config.toml").write_text('backend = "onnxruntime"\nmax_batch_size = 8\n')
    write_chain(big / "1" / "model.onnx", layers=9000)
    running = serve_repository(repo, model_control_mode=ControlMode.EXPLICIT,
                               load_models=("identity",))
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                                   "data": [0.0] * 16}]}).encode()

    async def latencies(seconds: float) -> list[float]:
        out = []
        async with aiohttp.ClientSession() as session:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                started = time.perf_counter()
                status, _ = await _post_json(session, running.http + "/v2/models/identity/infer",
                                             body)
                assert status == 200
                out.append(time.perf_counter() - started)
                await asyncio.sleep(0.002)
        return out

    baseline = asyncio.run(latencies(1.5))
    loader_took: list[float] = []

    def load() -> None:
        started = time.monotonic()
        assert post(running, "/v2/repository/models/big/load", {}) == 200
        loader_took.append(time.monotonic() - started)

    thread = threading.Thread(target=load)
    thread.start()
    during = asyncio.run(latencies(1.5))
    thread.join()
    assert loader_took[0] > 1.0, "the model was meant to take seconds to load"
    p99 = lambda xs: sorted(xs)[int(len(xs) * 0.99)]  # noqa: E731
    # A load on the event loop would stall it for the whole load (> 1 s).
    assert p99(during) < p99(baseline) + 0.010, (p99(baseline), p99(during))


def write_chain(path: Path, layers: int) -> None:
    """A long chain of small MatMul+Add+Relu layers: cheap to run, slow for ONNX Runtime to
    optimize (about 2 s for 9,000 layers on the project's 2-core machines, native engine)."""
    rng = np.random.default_rng(0)
    nodes, weights, previous = [], [], "x"
    for i in range(layers):
        weights += [numpy_helper.from_array(rng.random((8, 8)).astype(np.float32), f"w{i}"),
                    numpy_helper.from_array(rng.random(8).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [previous, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"])]
        previous = f"r{i}"
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ["N", 8])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
