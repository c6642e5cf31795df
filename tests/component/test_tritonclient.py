"""tritonclient.http, unchanged, against a real pyserver on 127.0.0.1."""

from __future__ import annotations

import asyncio

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from sklearn.datasets import load_digits

from pyserver.config import load_config
from tests.conftest import ENGINES, RunningServer

BUNDLED = ["identity", "identity_bytes", "add_sub", "digits"]


@pytest.fixture
def client(server: RunningServer):  # type: ignore[no-untyped-def]
    c = httpclient.InferenceServerClient(server.url)
    yield c
    c.close()


def test_health_and_server_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "pyserver"
    assert {"binary_tensor_data", "model_configuration", "statistics"} <= set(meta["extensions"])


@pytest.mark.parametrize("name", BUNDLED)
def test_model_ready_metadata_and_config(client: httpclient.InferenceServerClient, name: str) -> None:
    assert client.is_model_ready(name)
    assert client.is_model_ready(name, "1")
    meta = client.get_model_metadata(name)
    config = client.get_model_config(name)
    assert meta["name"] == config["name"] == name
    assert meta["versions"] == ["1"]
    assert config["max_batch_size"] == load_config(ENGINES / name).max_batch_size
    for tensors, configured in ((meta["inputs"], config["input"]), (meta["outputs"], config["output"])):
        assert [t["name"] for t in tensors] == [t["name"] for t in configured]
        for t, c in zip(tensors, configured):
            assert t["shape"] == [-1, *c["dims"]]  # the batch dimension first, as Triton
            assert c["data_type"] == ("TYPE_STRING" if t["datatype"] == "BYTES" else "TYPE_" + t["datatype"])


def test_digits_metadata_filled_from_onnx(client: httpclient.InferenceServerClient) -> None:
    meta = client.get_model_metadata("digits")
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1, 1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
    ]


def _infer(client, name, arrays, datatypes, binary, outputs=None):  # type: ignore[no-untyped-def]
    inputs = []
    for i, (array, datatype) in enumerate(zip(arrays, datatypes)):
        inp = httpclient.InferInput(f"INPUT{i}", list(array.shape), datatype)
        inp.set_data_from_numpy(array, binary_data=binary)
        inputs.append(inp)
    requested = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in outputs or []]
    return client.infer(name, inputs, outputs=requested or None)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_identity(client: httpclient.InferenceServerClient, binary: bool) -> None:
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    result = _infer(client, "identity", [x], ["FP32"], binary, ["OUTPUT0"])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_identity_bytes(client: httpclient.InferenceServerClient, binary: bool) -> None:
    x = np.array([[b"hello"], [b""], ["h\u00e9llo w\u00f6rld".encode()]], dtype=np.object_)
    result = _infer(client, "identity_bytes", [x], ["BYTES"], binary, ["OUTPUT0"])
    # tritonclient hands JSON BYTES back as the strings the JSON carried
    want = x if binary else np.vectorize(bytes.decode, otypes=[object])(x)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), want)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_add_sub(client: httpclient.InferenceServerClient, binary: bool) -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 16)).astype(np.float32)
    b = rng.standard_normal((4, 16)).astype(np.float32)
    result = _infer(client, "add_sub", [a, b], ["FP32", "FP32"], binary, ["OUTPUT0", "OUTPUT1"])
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b, rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b, rtol=1e-6)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_digits_matches_in_process_onnxruntime(
    client: httpclient.InferenceServerClient, binary: bool
) -> None:
    digits = load_digits()
    pixels = digits.data[-360:].astype(np.float32)
    session = ort.InferenceSession(str(ENGINES / "digits" / "1" / "model.onnx"))
    want_label, want_prob = session.run(["label", "probabilities"], {"pixels": pixels})
    for start in range(0, 360, 120):
        chunk = pixels[start : start + 120]
        inp = httpclient.InferInput("pixels", list(chunk.shape), "FP32")
        inp.set_data_from_numpy(chunk, binary_data=binary)
        result = client.infer("digits", [inp])  # no outputs named: all of them
        np.testing.assert_array_equal(result.as_numpy("label"), want_label[start : start + 120])
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), want_prob[start : start + 120], rtol=1e-5, atol=1e-7
        )
    accuracy = float((want_label[:, 0] == digits.target[-360:]).mean())
    assert accuracy >= 0.95


def test_binary_data_output_parameter(server: RunningServer) -> None:
    # JSON inputs, binary outputs asked for at the request level (binary_data_output).
    client = httpclient.InferenceServerClient(server.url)
    try:
        x = np.arange(32, dtype=np.float32).reshape(2, 16)
        inp = httpclient.InferInput("INPUT0", [2, 16], "FP32")
        inp.set_data_from_numpy(x, binary_data=False)
        result = client.infer("identity", [inp], parameters=None,
                              request_compression_algorithm=None,
                              outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)
        assert result.get_output("OUTPUT0")["parameters"]["binary_data_size"] == x.nbytes
    finally:
        client.close()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_and_response(server: RunningServer, algorithm: str) -> None:
    client = httpclient.InferenceServerClient(server.url)
    try:
        x = np.random.default_rng(2).standard_normal((64, 16)).astype(np.float32)
        inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        result = client.infer(
            "identity", [inp],
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)
    finally:
        client.close()


def test_async_infer_64_in_flight_batches(server: RunningServer) -> None:
    """64 requests in flight on `identity` (aio client, asyncio.gather): every request gets its
    own rows back, and /stats shows fewer executions than inferences."""

    async def run() -> tuple[list[np.ndarray], list[np.ndarray], dict, dict]:
        client = aioclient.InferenceServerClient(server.url, conn_limit=64)
        try:
            async def one(x: np.ndarray) -> np.ndarray:
                inp = aioclient.InferInput("INPUT0", [1, 16], "FP32")
                inp.set_data_from_numpy(x)
                result = await client.infer("identity", [inp])
                return result.as_numpy("OUTPUT0")

            # First round: opens the 64 connections, so that the measured rounds arrive as bursts.
            warm = [np.zeros((1, 16), np.float32)] * 64
            await asyncio.gather(*(one(x) for x in warm))
            before = await client.get_inference_statistics("identity")
            arrays = [np.full((1, 16), i, dtype=np.float32) for i in range(64 * 4)]
            outs = []
            for r in range(4):
                outs += await asyncio.gather(*(one(x) for x in arrays[r * 64 : (r + 1) * 64]))
            after = await client.get_inference_statistics("identity")
            return arrays, outs, before, after
        finally:
            await client.close()

    arrays, outs, before, after = asyncio.run(run())
    for x, y in zip(arrays, outs, strict=True):
        np.testing.assert_array_equal(x, y)  # each request got its own rows back
    b, a = before["model_stats"][0], after["model_stats"][0]
    inferences = a["inference_count"] - b["inference_count"]
    executions = a["execution_count"] - b["execution_count"]
    assert inferences == 256
    assert executions < inferences, (executions, inferences)
    assert a["inference_stats"]["success"]["count"] - b["inference_stats"]["success"]["count"] == 256


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_large_tensors_round_trip(make_repository, serve_repository, binary: bool) -> None:  # type: ignore[no-untyped-def]
    """Outputs well past the size below which the gateway joins chunks (64 KiB)."""
    repo = make_repository({"wide": (
        'backend = "identity"\nmax_batch_size = 8\n'
        '[[input]]\nname = "INPUT0"\ndata_type = "TYPE_FP32"\ndims = [-1]\n'
        '[[output]]\nname = "OUTPUT0"\ndata_type = "TYPE_FP32"\ndims = [-1]\n'
    )})
    running = serve_repository(repo)
    client = httpclient.InferenceServerClient(running.url)
    try:
        for width in (40_000, 1_000_000):  # 160 KB and 4 MB per row
            x = np.random.default_rng(width).standard_normal((2, width)).astype(np.float32)
            if not binary and width > 40_000:
                continue  # JSON at 8 MB is a benchmark of the JSON library, not of pyserver
            result = _infer(client, "wide", [x], ["FP32"], binary, ["OUTPUT0"])
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)
    finally:
        client.close()
