"""Bad requests over real gRPC (tritonclient.grpc, and Triton's own stub where the client cannot
say it): the status code that means what the HTTP status means, the same message as over HTTP,
and no harm to the server or to other requests. Mirrors test_http_errors.py and the scheduling
errors of test_scheduling.py."""

from __future__ import annotations

import asyncio
import gzip
import struct
import time
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.component.test_http_errors import request as http_request
from tests.component.test_scheduling import identity_config, model_of, until, wait_until
from tests.conftest import RunningServer


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


def failure(call: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
    """(status code name, message) of a tritonclient call that must fail."""
    with pytest.raises(grpcclient.InferenceServerException) as info:
        call(*args, **kwargs)
    return str(info.value.status()).removeprefix("StatusCode."), info.value.message()


def stub_failure(rpc: Any, request: Any) -> tuple[str, str]:
    with pytest.raises(grpc.RpcError) as info:
        rpc(request)
    return info.value.code().name, info.value.details()


def identity_input(shape: list[int], datatype: str = "FP32", data: np.ndarray | None = None) -> Any:
    inp = grpcclient.InferInput("INPUT0", shape, datatype)
    if data is not None:
        inp.set_data_from_numpy(data)
    return inp


def raw_request(model: str, tensors: list[tuple[str, str, list[int]]], raw: list[bytes],
                **fields: Any) -> Any:
    request = service_pb2.ModelInferRequest(model_name=model, raw_input_contents=raw, **fields)
    for name, datatype, shape in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    return request


def http_error(server: RunningServer, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> tuple[int, str]:
    import json

    status, _, answer = http_request(server, "POST" if body else "GET", path, body, headers)
    return status, json.loads(answer)["error"]


def test_unknown_model_and_version_are_not_found_with_the_http_message(
    server: RunningServer, client: grpcclient.InferenceServerClient
) -> None:
    code, message = failure(client.get_model_metadata, "nope")
    assert code == "NOT_FOUND" and (404, message) == http_error(server, "/v2/models/nope")
    code, message = failure(client.get_model_metadata, "identity", "7")
    assert code == "NOT_FOUND" and (404, message) == http_error(server, "/v2/models/identity/versions/7")
    x = np.zeros((1, 16), np.float32)
    assert failure(client.infer, "nope", [identity_input([1, 16], data=x)])[0] == "NOT_FOUND"
    assert failure(client.infer, "identity", [identity_input([1, 16], data=x)], model_version="9")[0] == "NOT_FOUND"
    assert client.is_model_ready("nope") is False  # as Triton: not ready, not an error
    assert failure(client.get_model_config, "nope")[0] == "NOT_FOUND"
    assert failure(client.get_inference_statistics, "nope")[0] == "NOT_FOUND"
    assert failure(client.get_model_metadata, "identity", "x1")[0] == "NOT_FOUND"


# (tensors, raw contents, the HTTP body saying the same, fragment of the message)
F = np.zeros((1, 16), np.float32).tobytes()
MALFORMED = [
    ("missing", [], [], '{"inputs": []}', "INPUT0"),
    ("datatype", [("INPUT0", "INT32", [1, 16])], [F], None, "datatype"),
    ("shape", [("INPUT0", "FP32", [1, 15])], [F[:60]], None, "shape"),
    ("batch", [("INPUT0", "FP32", [1000, 16])], [F * 1000], None, "256"),
    ("unknown", [("BOGUS", "FP32", [1, 16])], [F], None, "BOGUS"),
    ("duplicate", [("INPUT0", "FP32", [1, 16])] * 2, [F, F], None, "more than once"),
    ("size-short", [("INPUT0", "FP32", [1, 16])], [F[:60]], None, "60"),
    ("size-long", [("INPUT0", "FP32", [1, 16])], [F + b"\0" * 4], None, "68"),
    ("raw-left-over", [("INPUT0", "FP32", [1, 16])], [F, F], None, "left over"),
    ("no-data", [("INPUT0", "FP32", [1, 16])], [], None, "neither contents nor raw_input_contents"),
]


@pytest.mark.parametrize(("case", "tensors", "raw", "http_body", "fragment"), MALFORMED,
                         ids=[m[0] for m in MALFORMED])
def test_malformed_infer_is_invalid_argument_naming_the_problem(
    server: RunningServer, stub: Any, case: str, tensors: list[Any], raw: list[bytes],
    http_body: str | None, fragment: str,
) -> None:
    code, message = stub_failure(stub.ModelInfer, raw_request("identity", tensors, raw))
    assert code == "INVALID_ARGUMENT"
    assert fragment in message, message
    if http_body is not None:  # the same rule over HTTP says the same
        assert http_error(server, "/v2/models/identity/infer", http_body.encode()) == (400, message)


def test_tritonclient_malformed_requests(client: grpcclient.InferenceServerClient, stub: Any) -> None:
    x = np.zeros((2, 16), np.float32)
    code, message = failure(client.infer, "identity", [identity_input([2, 16], "FP64", x.astype(np.float64))])
    assert code == "INVALID_ARGUMENT" and "datatype FP64" in message and "FP32" in message
    code, message = failure(client.infer, "identity", [identity_input([2, 16], data=x)],
                            outputs=[grpcclient.InferRequestedOutput("NOPE")])
    assert code == "INVALID_ARGUMENT" and "unknown output 'NOPE'" in message
    request = raw_request("identity", [("INPUT0", "FP32", [1, 16])], [F])
    request.parameters["timeout"].string_param = "soon"  # tritonclient would not send this
    code, message = stub_failure(stub.ModelInfer, request)
    assert (code, message) == (
        "INVALID_ARGUMENT", "request parameter 'timeout' must be a non-negative integer, got \"soon\"")


def test_bad_bytes_framing(stub: Any) -> None:
    tail = struct.pack("<I", 50) + b"short"  # says 50 bytes, carries 5
    code, message = stub_failure(stub.ModelInfer, raw_request("identity_bytes", [("INPUT0", "BYTES", [1, 1])], [tail]))
    assert code == "INVALID_ARGUMENT" and "INPUT0" in message and "50" in message


def test_both_raw_and_typed_contents(stub: Any) -> None:
    request = raw_request("identity", [("INPUT0", "FP32", [1, 16])], [F])
    request.inputs[0].contents.fp32_contents.extend([0.0] * 16)
    code, message = stub_failure(stub.ModelInfer, request)
    assert code == "INVALID_ARGUMENT" and "both contents and raw_input_contents" in message


def test_shared_memory_and_classification_are_unimplemented(stub: Any) -> None:
    request = raw_request("identity", [("INPUT0", "FP32", [1, 16])], [F])
    request.inputs[0].parameters["shared_memory_region"].string_param = "region"
    code, message = stub_failure(stub.ModelInfer, request)
    assert code == "UNIMPLEMENTED" and "shared memory" in message
    request = raw_request("identity", [("INPUT0", "FP32", [1, 16])], [F])
    request.outputs.add(name="OUTPUT0").parameters["classification"].int64_param = 3
    assert stub_failure(stub.ModelInfer, request)[0] == "UNIMPLEMENTED"
    # an RPC pyserver does not serve
    code, _ = stub_failure(stub.SystemSharedMemoryStatus, service_pb2.SystemSharedMemoryStatusRequest())
    assert code == "UNIMPLEMENTED"


def test_repository_rpcs_map_their_parameters(client: grpcclient.InferenceServerClient, stub: Any) -> None:
    """The parameters are checked first; then the data plane answers (the session server runs
    with --model-control-mode none, so load and unload are refused naming the mode)."""
    code, message = failure(client.load_model, "identity")
    assert code == "INVALID_ARGUMENT" and "--model-control-mode none" in message
    code, message = failure(client.unload_model, "identity", unload_dependents=True)
    assert code == "INVALID_ARGUMENT" and "--model-control-mode none" in message
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {"name": "identity", "version": "1", "state": "READY"} in index
    request = service_pb2.RepositoryModelLoadRequest(model_name="identity")
    request.parameters["config"].int64_param = 3
    code, message = stub_failure(stub.RepositoryModelLoad, request)
    assert code == "INVALID_ARGUMENT" and "'config' must be a string_param" in message
    request = service_pb2.RepositoryModelLoadRequest(model_name="identity")
    request.parameters["file:1/model.onnx"].string_param = "not bytes"
    code, message = stub_failure(stub.RepositoryModelLoad, request)
    assert code == "INVALID_ARGUMENT" and "'file:1/model.onnx' must be a bytes_param" in message
    request = service_pb2.RepositoryModelUnloadRequest(model_name="identity")
    request.parameters["version"].string_param = "latest"
    code, message = stub_failure(stub.RepositoryModelUnload, request)
    assert code == "INVALID_ARGUMENT" and "'version' must be a positive version number" in message


def test_a_message_over_the_limit_is_resource_exhausted(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    repo = make_repository({"wide": (
        'backend = "identity"\nmax_batch_size = 8\n'
        '[[input]]\nname = "INPUT0"\ndata_type = "TYPE_FP32"\ndims = [-1]\n'
        '[[output]]\nname = "OUTPUT0"\ndata_type = "TYPE_FP32"\ndims = [-1]\n'
    )})
    limit = 1 << 20
    running = serve_repository(repo, max_request_size=limit)
    c = grpcclient.InferenceServerClient(running.grpc_url)
    try:
        big = np.zeros((1, (limit + 4096) // 4), np.float32)
        code, message = failure(c.infer, "wide", [identity_input(list(big.shape), data=big)])
        assert code == "RESOURCE_EXHAUSTED" and str(limit) in message
        # compressed below the limit, but larger once inflated: refused all the same
        assert len(gzip.compress(big.tobytes())) < limit
        code, _ = failure(c.infer, "wide", [identity_input(list(big.shape), data=big)],
                          compression_algorithm="gzip")
        assert code == "RESOURCE_EXHAUSTED"
        small = np.ones((1, 1000), np.float32)
        result = c.infer("wide", [identity_input([1, 1000], data=small)])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), small)
    finally:
        c.close()


def test_not_ready_is_unavailable(server: RunningServer, client: grpcclient.InferenceServerClient) -> None:
    dataplane = server.server.dataplane  # type: ignore[attr-defined]
    server.loop.call_soon_threadsafe(dataplane.set_ready, False)
    try:
        wait_until(lambda: not client.is_server_ready(), "the server says it is not ready")
        # A model the repository may still be loading: retry later, not "no such model"
        x = np.zeros((1, 16), np.float32)
        code, message = failure(client.infer, "not-loaded-yet", [identity_input([1, 16], data=x)])
        assert code == "UNAVAILABLE" and "still loading" in message
        assert health_status(server) == "NOT_SERVING"
    finally:
        server.loop.call_soon_threadsafe(dataplane.set_ready, True)
        wait_until(client.is_server_ready, "the server is ready again")


def health_status(server: RunningServer) -> str:
    from pyserver.grpc import messages as pb

    with grpc.insecure_channel(server.grpc_url) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=pb.HealthCheckRequest.SerializeToString,
            response_deserializer=pb.HealthCheckResponse.FromString,
        )
        status = check(pb.HealthCheckRequest(), timeout=10).status
    return str(pb.HealthCheckResponse.ServingStatus.Name(status))


async def _aio_infer(client: Any, model: str, value: float, **kwargs: Any) -> Any:
    inp = aioclient.InferInput("INPUT0", [1, 2], "FP32")
    inp.set_data_from_numpy(np.full((1, 2), value, np.float32))
    return await client.infer(model, [inp], **kwargs)


def test_a_full_queue_is_resource_exhausted_at_once(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    running = serve_repository(make_repository({
        "slow": identity_config(300_000, "[dynamic_batching.default_queue_policy]\nmax_queue_size = 2\n"),
    }))
    slow = model_of(running, "slow")

    async def run() -> None:
        client = aioclient.InferenceServerClient(running.grpc_url)
        try:
            start = asyncio.get_running_loop().create_task
            first = start(_aio_infer(client, "slow", 1.0))
            await until(lambda: slow.engines[0].executions == 1, "the first request runs")
            queued = [start(_aio_infer(client, "slow", float(i))) for i in range(2)]
            await until(lambda: slow.stats()["pending"] == 3, "two requests are queued")
            started = time.monotonic()
            with pytest.raises(grpcclient.InferenceServerException) as info:
                await _aio_infer(client, "slow", 9.0)
            assert time.monotonic() - started < 0.2
            assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
            assert "slow" in info.value.message() and "queue is full" in info.value.message()
            for task in [first, *queued]:
                await task
            assert slow.stats()["fail_by_reason"]["REJECTED"] == 1
        finally:
            await client.close()

    asyncio.run(run())


def test_queue_timeout_and_call_deadline_are_deadline_exceeded(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    """The queue policy's timeout and a call deadline shorter than it both end the request
    with DEADLINE_EXCEEDED while it waits; neither request ever runs."""
    running = serve_repository(make_repository({
        "slow": identity_config(400_000, (
            "[dynamic_batching.default_queue_policy]\n"
            "default_timeout_microseconds = 10000000\nallow_timeout_override = true\n")),
    }))
    slow = model_of(running, "slow")

    async def run() -> None:
        client = aioclient.InferenceServerClient(running.grpc_url)
        try:
            start = asyncio.get_running_loop().create_task
            first = start(_aio_infer(client, "slow", 1.0))
            await until(lambda: slow.engines[0].executions == 1, "the first request runs")
            started = time.monotonic()
            with pytest.raises(grpcclient.InferenceServerException) as info:
                await _aio_infer(client, "slow", 2.0, timeout=50_000)  # the request's timeout
            assert time.monotonic() - started < 0.3
            assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
            assert "timed out in the queue" in info.value.message()
            started = time.monotonic()
            with pytest.raises(grpcclient.InferenceServerException) as info:
                await _aio_infer(client, "slow", 3.0, client_timeout=0.1)  # the call's deadline
            assert time.monotonic() - started < 0.35
            assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
            result = await first
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), [[1.0, 1.0]])
            await until(lambda: slow.stats()["pending"] == 0, "the queue is empty")
            assert slow.engines[0].rows == 1  # neither timed-out request ran
            assert slow.stats()["fail"]["count"] == 2
        finally:
            await client.close()

    asyncio.run(run())


def test_bad_requests_do_not_disturb_good_ones_in_the_same_batch(server: RunningServer) -> None:
    async def run() -> None:
        client = aioclient.InferenceServerClient(server.grpc_url)
        try:
            async def good(i: int) -> None:
                x = np.full((1, 16), i, dtype=np.float32)
                inp = aioclient.InferInput("INPUT0", [1, 16], "FP32")
                inp.set_data_from_numpy(x)
                np.testing.assert_array_equal((await client.infer("identity", [inp])).as_numpy("OUTPUT0"), x)

            async def bad(i: int) -> None:
                inp = aioclient.InferInput("INPUT0", [1, 16 + 1 + i % 5], "FP32")
                inp.set_data_from_numpy(np.zeros((1, 17 + i % 5), np.float32))
                with pytest.raises(grpcclient.InferenceServerException) as info:
                    await client.infer("identity", [inp])
                assert info.value.status() == "StatusCode.INVALID_ARGUMENT"

            await asyncio.gather(*(good(i) if i % 2 else bad(i) for i in range(200)))
        finally:
            await client.close()

    asyncio.run(run())
    c = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        assert c.is_server_ready()
    finally:
        c.close()


def test_repository_rpcs_load_and_unload(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    """Explicit mode through tritonclient.grpc: index, load (plain, with config and files, one
    version), unload, and a load that fails with its reason."""
    import json
    import shutil

    from pyserver.dataplane import ControlMode
    from tests.conftest import ENGINES

    repo = make_repository({"identity": (ENGINES / "identity" / "config.toml").read_text()})
    shutil.copytree(repo / "identity" / "1", repo / "identity" / "2")
    running = serve_repository(repo, model_control_mode=ControlMode.EXPLICIT)
    c = grpcclient.InferenceServerClient(running.grpc_url)
    try:
        assert c.get_model_repository_index(as_json=True)["models"] == [{"name": "identity"}]
        c.load_model("identity")
        assert c.is_model_ready("identity", "2") and not c.is_model_ready("identity", "1")
        channel = grpc.insecure_channel(running.grpc_url)
        rpc = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.RepositoryModelLoadRequest(model_name="identity")
        request.parameters["version"].string_param = "1"
        rpc.RepositoryModelLoad(request)
        assert c.is_model_ready("identity", "1") and c.is_model_ready("identity", "2")
        x = np.ones((1, 16), np.float32)
        for version in ("1", "2"):  # answered requests are no longer counted as accepted...
            c.infer("identity", [identity_input([1, 16], data=x)], model_version=version)
        started = time.monotonic()
        c.unload_model("identity")
        assert time.monotonic() - started < 5  # ...so the unload does not wait for them
        assert not c.is_model_ready("identity")
        onnx_bytes = (ENGINES / "digits" / "1" / "model.onnx").read_bytes()
        c.load_model("uploaded", config=json.dumps({"backend": "onnxruntime", "max_batch_size": 4}),
                     files={"file:1/model.onnx": onnx_bytes})
        assert c.is_model_ready("uploaded")
        code, message = failure(c.load_model, "uploaded",
                                config=json.dumps({"backend": "onnxruntime", "max_batch_size": 4}),
                                files={"file:1/model.onnx": b"not onnx"})
        assert code == "INVALID_ARGUMENT" and "onnxruntime could not load it" in message
        assert c.is_model_ready("uploaded")  # the failed reload left the old one serving
        channel.close()
    finally:
        c.close()
