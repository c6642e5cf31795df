"""tritonclient.grpc (and its aio client), unchanged, against a real pyserver on 127.0.0.1:
health, metadata, configuration, statistics, logging, and inference on every bundled model with
raw and with typed contents. Typed contents go through Triton's own stub and messages
(tritonclient.grpc.service_pb2), since InferInput always sends raw contents."""

from __future__ import annotations

import asyncio
import queue
from functools import partial
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from sklearn.datasets import load_digits
from tritonclient.grpc import service_pb2, service_pb2_grpc

from pyserver.grpc import messages as pb
from tests.conftest import ENGINES, RunningServer

BUNDLED = ["identity", "identity_bytes", "add_sub", "digits"]


@pytest.fixture
def client(server: RunningServer):  # type: ignore[no-untyped-def]
    c = grpcclient.InferenceServerClient(server.grpc_url)
    yield c
    c.close()


@pytest.fixture
def stub(server: RunningServer):  # type: ignore[no-untyped-def]
    channel = grpc.insecure_channel(server.grpc_url)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def test_live_ready_and_server_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "pyserver"
    assert {"binary_tensor_data", "model_configuration", "statistics", "logging"} <= set(
        meta["extensions"]
    )


@pytest.mark.parametrize("name", BUNDLED)
def test_model_ready_metadata_and_config_agree_with_http(
    server: RunningServer, client: grpcclient.InferenceServerClient, name: str
) -> None:
    """The same answers as over HTTP (which test_tritonclient checks against Triton's rules)."""
    import tritonclient.http as httpclient

    http = httpclient.InferenceServerClient(server.url)
    try:
        assert client.is_model_ready(name) and client.is_model_ready(name, "1")
        meta = client.get_model_metadata(name)
        tensors = [[{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in ts]
                   for ts in (meta.inputs, meta.outputs)]
        assert {"name": meta.name, "versions": list(meta.versions), "platform": meta.platform,
                "inputs": tensors[0], "outputs": tensors[1]} == http.get_model_metadata(name)
        config = client.get_model_config(name).config
        want = http.get_model_config(name)
        assert (config.name, config.max_batch_size) == (name, want["max_batch_size"])
        assert (config.backend, config.platform) == (want["backend"], want["platform"])
        datatype = pb.ModelConfig.DESCRIPTOR.file.enum_types_by_name["DataType"]
        for tensors, configured in ((config.input, want["input"]), (config.output, want["output"])):
            assert [(t.name, datatype.values_by_number[t.data_type].name, list(t.dims))
                    for t in tensors] == [(t["name"], t["data_type"], t["dims"]) for t in configured]
        kind = pb.ModelConfig.DESCRIPTOR.fields_by_name["instance_group"].message_type
        assert [(g.name, kind.enum_types_by_name["Kind"].values_by_number[g.kind].name, g.count)
                for g in config.instance_group] == [
            (g["name"], g["kind"], g["count"]) for g in want["instance_group"]]
        assert config.default_model_filename == want["default_model_filename"]
    finally:
        http.close()


def test_config_carries_batching_policy(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    repo = make_repository({"q": (
        'backend = "identity"\nmax_batch_size = 8\n'
        '[[input]]\nname = "INPUT0"\ndata_type = "TYPE_INT32"\ndims = [2]\n'
        "[dynamic_batching]\npreferred_batch_size = [4, 8]\nmax_queue_delay_microseconds = 300\n"
        "priority_levels = 2\ndefault_priority_level = 2\n"
        "[dynamic_batching.default_queue_policy]\nmax_queue_size = 5\n"
        'timeout_action = "DELAY"\ndefault_timeout_microseconds = 70\n'
        "[dynamic_batching.priority_queue_policy.1]\nmax_queue_size = 3\n"
        "[parameters]\nexecute_delay_us = 1\n"
    )})
    running = serve_repository(repo)
    c = grpcclient.InferenceServerClient(running.grpc_url)
    try:
        config = c.get_model_config("q").config
    finally:
        c.close()
    batching = config.dynamic_batching
    assert list(batching.preferred_batch_size) == [4, 8]
    assert batching.max_queue_delay_microseconds == 300
    assert (batching.priority_levels, batching.default_priority_level) == (2, 2)
    assert batching.default_queue_policy.max_queue_size == 5
    assert batching.default_queue_policy.default_timeout_microseconds == 70
    assert batching.default_queue_policy.timeout_action == 1  # DELAY
    assert batching.priority_queue_policy[1].max_queue_size == 3
    assert config.parameters["execute_delay_us"].string_value == "1"
    assert config.input[0].data_type == 8  # TYPE_INT32
    assert config.version_policy.WhichOneof("policy_choice") == "latest"


def _infer(client: Any, name: str, arrays: list[np.ndarray], datatypes: list[str],
           outputs: list[str] | None = None, **kwargs: Any) -> Any:
    inputs = []
    for i, (array, datatype) in enumerate(zip(arrays, datatypes)):
        inp = grpcclient.InferInput(f"INPUT{i}", list(array.shape), datatype)
        inp.set_data_from_numpy(array)
        inputs.append(inp)
    requested = [grpcclient.InferRequestedOutput(o) for o in outputs or []]
    return client.infer(name, inputs, outputs=requested or None, **kwargs)


def test_identity_raw(client: grpcclient.InferenceServerClient) -> None:
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    result = _infer(client, "identity", [x], ["FP32"], ["OUTPUT0"], request_id="r-7")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("identity", "1", "r-7")


def test_identity_bytes_raw(client: grpcclient.InferenceServerClient) -> None:
    x = np.array([[b"hello"], [b""], ["h\u00e9llo w\u00f6rld".encode()]], dtype=np.object_)
    result = _infer(client, "identity_bytes", [x], ["BYTES"])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)


def test_add_sub_raw(client: grpcclient.InferenceServerClient) -> None:
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((4, 16)).astype(np.float32) for _ in range(2))
    result = _infer(client, "add_sub", [a, b], ["FP32", "FP32"], ["OUTPUT1", "OUTPUT0"])
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b, rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b, rtol=1e-6)
    assert [o.name for o in result.get_response().outputs] == ["OUTPUT1", "OUTPUT0"]


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    pixels = digits.data[-360:].astype(np.float32)
    session = ort.InferenceSession(str(ENGINES / "digits" / "1" / "model.onnx"))
    label, prob = session.run(["label", "probabilities"], {"pixels": pixels})
    return pixels, label, prob, digits.target[-360:]


def test_digits_raw_matches_in_process_onnxruntime(client: grpcclient.InferenceServerClient) -> None:
    pixels, want_label, want_prob, target = _digits()
    for start in range(0, 360, 120):
        inp = grpcclient.InferInput("pixels", [120, 64], "FP32")
        inp.set_data_from_numpy(pixels[start : start + 120])
        result = client.infer("digits", [inp])
        np.testing.assert_array_equal(result.as_numpy("label"), want_label[start : start + 120])
        np.testing.assert_allclose(result.as_numpy("probabilities"), want_prob[start : start + 120],
                                   rtol=1e-5, atol=1e-7)
    assert (want_label[:, 0] == target).mean() >= 0.95


def _typed(stub: Any, model: str, tensors: list[tuple[str, str, list[int], str, list[Any]]]) -> Any:
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, datatype, shape, field, values in tensors:
        t = request.inputs.add(name=name, datatype=datatype, shape=shape)
        getattr(t.contents, field).extend(values)
    return grpcclient.InferResult(stub.ModelInfer(request))


def test_typed_contents_on_every_bundled_model(stub: Any) -> None:
    x = np.arange(32, dtype=np.float32).reshape(2, 16)
    result = _typed(stub, "identity", [("INPUT0", "FP32", [2, 16], "fp32_contents", x.ravel().tolist())])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)

    words = [b"caf\xc3\xa9", b"", b"x" * 300]
    result = _typed(stub, "identity_bytes", [("INPUT0", "BYTES", [3, 1], "bytes_contents", words)])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0").ravel(), np.array(words, dtype=object))

    a, b = np.full(16, 3.0, np.float32), np.arange(16, dtype=np.float32)
    result = _typed(stub, "add_sub", [("INPUT0", "FP32", [1, 16], "fp32_contents", a.tolist()),
                                      ("INPUT1", "FP32", [1, 16], "fp32_contents", b.tolist())])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0")[0], a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1")[0], a - b)

    pixels, want_label, want_prob, _ = _digits()
    result = _typed(stub, "digits", [("pixels", "FP32", [10, 64], "fp32_contents", pixels[:10].ravel().tolist())])
    np.testing.assert_array_equal(result.as_numpy("label"), want_label[:10])
    np.testing.assert_allclose(result.as_numpy("probabilities"), want_prob[:10], rtol=1e-5, atol=1e-7)


def test_async_infer_with_callbacks(client: grpcclient.InferenceServerClient) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    arrays = [np.full((1, 16), i, np.float32) for i in range(16)]
    for i, x in enumerate(arrays):
        inp = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
        inp.set_data_from_numpy(x)
        client.async_infer("identity", [inp], partial(lambda i, result, error: answers.put((i, result, error)), i),
                           request_id=str(i))
    got = {}
    for _ in arrays:
        i, result, error = answers.get(timeout=30)
        assert error is None, error
        assert result.get_response().id == str(i)
        got[i] = result.as_numpy("OUTPUT0")
    for i, x in enumerate(arrays):
        np.testing.assert_array_equal(got[i], x)


IDENTITY_BATCHING = (  # the bundled identity, with a queue delay so that arrivals batch
    'backend = "identity"\nmax_batch_size = 256\n'
    '[[input]]\nname = "INPUT0"\ndata_type = "TYPE_FP32"\ndims = [16]\n'
    '[[output]]\nname = "OUTPUT0"\ndata_type = "TYPE_FP32"\ndims = [16]\n'
    "[dynamic_batching]\nmax_queue_delay_microseconds = 20000\npreferred_batch_size = [64]\n"
)


def test_aio_client_64_in_flight_batches(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    """64 unary calls in flight on `identity` through the aio client: every call gets its own
    rows, and the statistics (over gRPC) show fewer executions than inferences. (A 20 ms queue
    delay lets the calls that arrive together form a batch whatever the machine's speed.)"""
    running = serve_repository(make_repository({"identity": IDENTITY_BATCHING}))

    async def run() -> tuple[list[np.ndarray], list[np.ndarray], Any]:
        client = aioclient.InferenceServerClient(running.grpc_url)
        try:
            async def one(x: np.ndarray) -> np.ndarray:
                inp = aioclient.InferInput("INPUT0", [1, 16], "FP32")
                inp.set_data_from_numpy(x)
                return (await client.infer("identity", [inp])).as_numpy("OUTPUT0")

            arrays = [np.full((1, 16), i, dtype=np.float32) for i in range(64 * 4)]
            outs: list[np.ndarray] = []
            for r in range(4):
                outs += await asyncio.gather(*(one(x) for x in arrays[r * 64 : (r + 1) * 64]))
            stats = await client.get_inference_statistics("identity")
            return arrays, outs, stats.model_stats[0]
        finally:
            await client.close()

    arrays, outs, stats = asyncio.run(run())
    for x, y in zip(arrays, outs, strict=True):
        np.testing.assert_array_equal(x, y)
    assert stats.inference_count == 256
    assert stats.execution_count < 256, stats.execution_count


def test_statistics_agree_with_http(server: RunningServer, client: grpcclient.InferenceServerClient) -> None:
    import tritonclient.http as httpclient

    _infer(client, "add_sub", [np.ones((2, 16), np.float32)] * 2, ["FP32", "FP32"])
    http = httpclient.InferenceServerClient(server.url)
    try:
        over_http = http.get_inference_statistics("add_sub")["model_stats"][0]
    finally:
        http.close()
    stats = client.get_inference_statistics("add_sub").model_stats[0]
    assert (stats.name, stats.version) == ("add_sub", "1")
    assert stats.inference_count == over_http["inference_count"] >= 2
    assert stats.execution_count == over_http["execution_count"]
    assert stats.inference_stats.success.count == over_http["inference_stats"]["success"]["count"]
    assert stats.inference_stats.queue.ns == over_http["inference_stats"]["queue"]["ns"]
    assert [b.batch_size for b in stats.batch_stats] == [b["batch_size"] for b in over_http["batch_stats"]]
    every = client.get_inference_statistics().model_stats
    assert {s.name for s in every} >= set(BUNDLED)


def test_log_settings(client: grpcclient.InferenceServerClient) -> None:
    settings = client.get_log_settings(as_json=True)["settings"]
    assert settings["log_verbose_level"] == {"uint32_param": 0}
    assert settings["log_format"] == {"string_param": "text"}
    try:
        changed = client.update_log_settings({"log_verbose_level": 1, "log_info": False}, as_json=True)
        assert changed["settings"]["log_verbose_level"] == {"uint32_param": 1}
        assert changed["settings"]["log_info"] == {"bool_param": False}
    finally:
        client.update_log_settings({"log_verbose_level": 0, "log_info": True})
    with pytest.raises(grpcclient.InferenceServerException) as info:
        client.update_log_settings({"log_format": "xml"})
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "log_format" in info.value.message()
    assert client.get_log_settings(as_json=True)["settings"]["log_format"] == {"string_param": "text"}


def test_health_service(server: RunningServer) -> None:
    channel = grpc.insecure_channel(server.grpc_url)
    try:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=pb.HealthCheckRequest.SerializeToString,
            response_deserializer=pb.HealthCheckResponse.FromString,
        )
        watch = channel.unary_stream(
            "/grpc.health.v1.Health/Watch",
            request_serializer=pb.HealthCheckRequest.SerializeToString,
            response_deserializer=pb.HealthCheckResponse.FromString,
        )
        serving = pb.HealthCheckResponse.SERVING
        assert check(pb.HealthCheckRequest()).status == serving
        assert check(pb.HealthCheckRequest(service="inference.GRPCInferenceService")).status == serving
        with pytest.raises(grpc.RpcError) as info:
            check(pb.HealthCheckRequest(service="nope"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        stream = watch(pb.HealthCheckRequest())
        assert next(stream).status == serving
        stream.cancel()
        unknown = list(watch(pb.HealthCheckRequest(service="nope")))
        assert [r.status for r in unknown] == [pb.HealthCheckResponse.SERVICE_UNKNOWN]
    finally:
        channel.close()


def test_gzip_compressed_calls(client: grpcclient.InferenceServerClient) -> None:
    x = np.random.default_rng(3).standard_normal((64, 16)).astype(np.float32)
    result = _infer(client, "identity", [x], ["FP32"], compression_algorithm="gzip")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)
    result = _infer(client, "identity", [x], ["FP32"], compression_algorithm="deflate")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)


def test_large_tensors_round_trip(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    repo = make_repository({"wide": (
        'backend = "identity"\nmax_batch_size = 8\n'
        '[[input]]\nname = "INPUT0"\ndata_type = "TYPE_FP32"\ndims = [-1]\n'
        '[[output]]\nname = "OUTPUT0"\ndata_type = "TYPE_FP32"\ndims = [-1]\n'
    )})
    running = serve_repository(repo)
    c = grpcclient.InferenceServerClient(running.grpc_url)
    try:
        for width in (40_000, 2_000_000):  # 160 KB and 8 MB per row
            x = np.random.default_rng(width).standard_normal((2, width)).astype(np.float32)
            np.testing.assert_array_equal(_infer(c, "wide", [x], ["FP32"]).as_numpy("OUTPUT0"), x)
    finally:
        c.close()


def test_without_grpc_nothing_listens(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    repo = make_repository({"identity": 'backend = "identity"\nmax_batch_size = 4\n'
                            '[[input]]\nname = "INPUT0"\ndata_type = "TYPE_INT32"\ndims = [2]\n'})
    running = serve_repository(repo, allow_grpc=False)
    assert running.grpc_port is None and running.server.grpc_address is None


def test_a_taken_grpc_port_is_an_error() -> None:
    """Two servers do not share a port unnoticed (grpc sets SO_REUSEPORT unless told not to,
    and two sockets with it would split the calls between them)."""
    from pyserver.grpc import GrpcFrontEnd

    async def run() -> None:
        first = GrpcFrontEnd(None, "127.0.0.1", 0, 1 << 20)  # type: ignore[arg-type]
        port = await first.start()
        second = GrpcFrontEnd(None, "127.0.0.1", port, 1 << 20)  # type: ignore[arg-type]
        try:
            with pytest.raises(OSError, match=f"gRPC cannot listen on 127.0.0.1:{port}"):
                await second.start()
        finally:
            await second.stop(0)
            await first.stop(0)

    asyncio.run(run())
