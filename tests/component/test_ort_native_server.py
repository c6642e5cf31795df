"""ONNX Runtime models over real HTTP on the native engine: the bundled models run on it, and a
model served by the native engine and the same model on the Python engine (parameters.engine =
"python") answer clients alike, failures included."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from onnx import TensorProto, helper

from pyserver import _core
from tests.conftest import ENGINES, RunningServer

DIGITS = ENGINES / "digits" / "1" / "model.onnx"
CONFIG = ('backend = "onnxruntime"\nmax_batch_size = 64\n[dynamic_batching]\n'
          'max_queue_delay_microseconds = 2000\n[parameters]\nintra_op_num_threads = 1\n')


def engines_of(running: RunningServer, name: str) -> list[_core.Engine]:
    return list(running.server.models.get(name).engines)  # type: ignore[attr-defined]


def test_bundled_onnx_models_run_on_the_native_engine(server: RunningServer) -> None:
    for name in ("digits", "add_sub"):
        engines = engines_of(server, name)
        assert engines and all(isinstance(e, _core.OnnxRuntimeEngine) for e in engines)
    (engine,) = engines_of(server, "digits")
    before = engine.executions
    client = httpclient.InferenceServerClient(server.url)
    try:
        pixels = np.full((3, 64), 8, np.float32)
        inp = httpclient.InferInput("pixels", [3, 64], "FP32")
        inp.set_data_from_numpy(pixels, binary_data=True)
        result = client.infer("digits", [inp])
    finally:
        client.close()
    session = ort.InferenceSession(str(DIGITS), providers=["CPUExecutionProvider"])
    want_label, want_prob = session.run(["label", "probabilities"], {"pixels": pixels})
    np.testing.assert_array_equal(result.as_numpy("label"), want_label)
    np.testing.assert_allclose(result.as_numpy("probabilities"), want_prob, rtol=1e-5)
    assert engine.executions == before + 1


@pytest.fixture
def both(make_repository, serve_repository, caplog: pytest.LogCaptureFixture) -> RunningServer:  # type: ignore[no-untyped-def]
    """digits twice: on the native engine (the default) and on the Python engine."""
    caplog.set_level(logging.INFO, logger="pyserver.backends.onnxruntime")
    repo: Path = make_repository(
        {"native": CONFIG, "python": CONFIG + 'engine = "python"\n'},
        copy_from={"native": "digits", "python": "digits"},
    )
    return serve_repository(repo)  # type: ignore[no-any-return]


def test_both_engines_answer_concurrent_clients_alike(
    both: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    lines = [r.getMessage() for r in caplog.get_records("setup")  # the server loaded in the fixture
             if r.name == "pyserver.backends.onnxruntime"]
    assert any(line.startswith("model native version 1: native ONNX Runtime engine") for line in lines)
    assert "model python version 1: Python ONNX Runtime engine: parameters.engine = python" in lines
    assert isinstance(engines_of(both, "native")[0], _core.OnnxRuntimeEngine)
    assert not isinstance(engines_of(both, "python")[0], _core.OnnxRuntimeEngine)

    rng = np.random.default_rng(11)
    requests = [(rng.random((int(rng.integers(1, 9)), 64)) * 16).astype(np.float32)
                for _ in range(96)]

    async def run(model: str) -> list[tuple[np.ndarray, np.ndarray]]:
        client = aioclient.InferenceServerClient(both.url, conn_limit=32)
        try:
            async def one(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                inp = aioclient.InferInput("pixels", list(pixels.shape), "FP32")
                inp.set_data_from_numpy(pixels, binary_data=True)
                result = await client.infer(model, [inp])
                return result.as_numpy("label"), result.as_numpy("probabilities")

            return list(await asyncio.gather(*(one(p) for p in requests)))
        finally:
            await client.close()

    native, python = asyncio.run(run("native")), asyncio.run(run("python"))
    session = ort.InferenceSession(str(DIGITS), providers=["CPUExecutionProvider"])
    for pixels, (n_label, n_prob), (p_label, p_prob) in zip(requests, native, python, strict=True):
        want_label, want_prob = session.run(["label", "probabilities"], {"pixels": pixels})
        assert n_label.dtype == p_label.dtype == np.int64
        np.testing.assert_array_equal(n_label, want_label)
        np.testing.assert_array_equal(p_label, want_label)
        # rows batched with other requests' rows: the same numbers up to the GEMM's blocking
        np.testing.assert_allclose(n_prob, want_prob, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(p_prob, want_prob, rtol=1e-5, atol=1e-7)
    for model in ("native", "python"):
        with urllib.request.urlopen(f"{both.http}/v2/models/{model}/stats") as r:
            stats = json.loads(r.read())["model_stats"][0]
        assert stats["inference_count"] == sum(p.shape[0] for p in requests)
        assert sum(b["compute_infer"]["count"] for b in stats["batch_stats"]) == stats["execution_count"]


def test_a_failing_batch_looks_the_same_from_both_engines(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    """Gather with the client's indices: out of range fails in ONNX Runtime at run time."""
    data = helper.make_tensor("data", TensorProto.FLOAT, [5], [0.5, 1.5, 2.5, 3.5, 4.5])
    graph = helper.make_graph(
        [helper.make_node("Gather", ["data", "i"], ["v"])], "gather",
        [helper.make_tensor_value_info("i", TensorProto.INT64, ["N", 2])],
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, ["N", 2])], [data],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    config = 'backend = "onnxruntime"\nmax_batch_size = 8\n[parameters]\n'
    repo = make_repository({"native": config, "python": config + 'engine = "python"\n'})
    for name in ("native", "python"):
        onnx.save(model, str(repo / name / "1" / "model.onnx"))
    running = serve_repository(repo)

    def infer(name: str, indices: list[list[int]]) -> tuple[int, dict[str, object]]:
        body = json.dumps({"inputs": [{"name": "i", "shape": [len(indices), 2], "datatype": "INT64",
                                       "data": indices}]}).encode()
        request = urllib.request.Request(f"{running.http}/v2/models/{name}/infer", data=body,
                                         method="POST")
        try:
            with urllib.request.urlopen(request) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    answers = {name: infer(name, [[0, 9]]) for name in ("native", "python")}
    assert answers["native"][0] == answers["python"][0] >= 500
    for _, body in answers.values():
        assert "indices" in str(body["error"])
    assert "Run: INVALID_ARGUMENT" in str(answers["native"][1]["error"])
    for name in ("native", "python"):  # the instance carries on
        status, body = infer(name, [[4, 0]])
        assert status == 200
        assert body["outputs"][0]["data"] == [4.5, 0.5]  # type: ignore[index]
