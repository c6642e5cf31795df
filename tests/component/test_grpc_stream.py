"""ModelStreamInfer, cancellation and shutdown over real gRPC: tritonclient.grpc's
start_stream/async_stream_infer and aio stream_infer, Triton's own stub where the ids of error
answers matter, and clients that cancel, run out of time or vanish mid-stream."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from pyserver.grpc import messages as pb
from tests.component.test_grpc import IDENTITY_BATCHING
from tests.component.test_scheduling import identity_config, model_of, until, wait_until
from tests.conftest import ENGINES, RunningServer, start_server, stop_server


def identity_inputs(x: np.ndarray) -> list[Any]:
    inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return [inp]


def stream_request(model: str, value: float, request_id: str, width: int = 2) -> Any:
    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, width])
    request.raw_input_contents.append(np.full((1, width), value, np.float32).tobytes())
    return request


def test_stream_of_256_requests_64_at_a_time_batches(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    """tritonclient's stream, 64 requests in flight at a time: every request answered once with
    its id and its own rows; the statistics show fewer executions than inferences. (The sync
    client writes a stream's requests one by one; the 20 ms queue delay lets those that arrive
    together form a batch whatever the machine's speed.)"""
    running = serve_repository(make_repository({"identity": IDENTITY_BATCHING}))
    client = grpcclient.InferenceServerClient(running.grpc_url)
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    try:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        got: dict[str, np.ndarray] = {}
        for r in range(4):
            for i in range(r * 64, (r + 1) * 64):
                client.async_stream_infer("identity", identity_inputs(np.full((1, 16), i, np.float32)),
                                          request_id=str(i))
            for _ in range(64):
                result, error = answers.get(timeout=30)
                assert error is None, error
                got[result.get_response().id] = result.as_numpy("OUTPUT0")
        client.stop_stream()
        stats = client.get_inference_statistics("identity").model_stats[0]
    finally:
        client.close()
    assert sorted(got, key=int) == [str(i) for i in range(256)]
    for key, rows in got.items():
        np.testing.assert_array_equal(rows, np.full((1, 16), int(key), np.float32))
    assert stats.inference_count == 256
    assert stats.execution_count < 256, stats.execution_count


def test_aio_stream_infer(server: RunningServer) -> None:
    async def run() -> dict[str, np.ndarray]:
        client = aioclient.InferenceServerClient(server.grpc_url)
        try:
            async def requests() -> Any:
                for i in range(64):
                    inp = aioclient.InferInput("INPUT0", [1, 16], "FP32")
                    inp.set_data_from_numpy(np.full((1, 16), i, np.float32))
                    yield {"model_name": "identity", "inputs": [inp], "request_id": f"a{i}"}

            got = {}
            async for result, error in client.stream_infer(requests()):
                assert error is None, error
                got[result.get_response().id] = result.as_numpy("OUTPUT0")
                if len(got) == 64:
                    break
            return got
        finally:
            await client.close()

    got = asyncio.run(run())
    assert sorted(got) == sorted(f"a{i}" for i in range(64))
    for key, rows in got.items():
        assert rows[0, 0] == int(key[1:])


def test_requests_on_one_stream_run_concurrently(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    """Four requests sent on one stream form one batch (the batcher waits up to 300 ms for a
    preferred batch of 4): were they run one after another, each would be a batch alone, the
    next one sent only once the one before had waited out the delay."""
    running = serve_repository(make_repository({"batchy": identity_config(
        0, "preferred_batch_size = [4]\nmax_queue_delay_microseconds = 300000\n", max_batch_size=4)}))
    with grpc.insecure_channel(running.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answers = list(stub.ModelStreamInfer(iter([stream_request("batchy", i, str(i)) for i in range(4)])))
    assert sorted(a.infer_response.id for a in answers) == ["0", "1", "2", "3"]
    assert all(a.error_message == "" for a in answers)
    stats = model_of(running, "batchy").stats()
    assert (stats["execution_count"], stats["inference_count"]) == (1, 4)


def test_an_error_is_an_answer_and_the_stream_goes_on(server: RunningServer) -> None:
    requests = [
        stream_request("identity", 1.0, "good-1", width=16),
        stream_request("identity", 2.0, "bad-shape", width=15),
        stream_request("nope", 3.0, "bad-model", width=16),
        stream_request("identity", 4.0, "good-2", width=16),
    ]
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answers = {a.infer_response.id: a for a in stub.ModelStreamInfer(iter(requests))}
    assert set(answers) == {"good-1", "bad-shape", "bad-model", "good-2"}
    assert "INPUT0" in answers["bad-shape"].error_message and "15" in answers["bad-shape"].error_message
    assert answers["bad-model"].error_message == "unknown model 'nope'"
    assert answers["bad-model"].infer_response.model_name == "nope"
    for key, value in (("good-1", 1.0), ("good-2", 4.0)):
        result = grpcclient.InferResult(answers[key].infer_response)
        assert answers[key].error_message == ""
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 16), value, np.float32))


def test_tritonclient_stream_sees_errors_through_its_callback(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    try:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        client.async_stream_infer("identity", identity_inputs(np.zeros((1, 3), np.float32)))
        _, error = answers.get(timeout=30)
        assert error is not None and "INPUT0" in error.message()
        client.async_stream_infer("identity", identity_inputs(np.ones((1, 16), np.float32)))
        result, error = answers.get(timeout=30)
        assert error is None and result.as_numpy("OUTPUT0").sum() == 16
        client.stop_stream()
    finally:
        client.close()


def test_a_cancelled_call_leaves_the_queue_and_never_runs(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    running = serve_repository(make_repository({"slow": identity_config(300_000, "")}))
    slow = model_of(running, "slow")

    async def run() -> None:
        client = aioclient.InferenceServerClient(running.grpc_url)
        try:
            async def infer(value: float) -> Any:
                inp = aioclient.InferInput("INPUT0", [1, 2], "FP32")
                inp.set_data_from_numpy(np.full((1, 2), value, np.float32))
                return await client.infer("slow", [inp])

            start = asyncio.get_running_loop().create_task
            first = start(infer(1.0))
            await until(lambda: slow.engines[0].executions == 1, "the first request runs")
            queued = start(infer(2.0))
            await until(lambda: slow.stats()["pending"] == 2, "the second request is queued")
            queued.cancel()  # the client cancels its call
            await until(lambda: slow.stats()["pending"] == 1, "it left the queue")
            np.testing.assert_array_equal((await first).as_numpy("OUTPUT0"), [[1.0, 1.0]])
        finally:
            await client.close()

    asyncio.run(run())
    wait_until(lambda: slow.stats()["pending"] == 0, "the queue drained")
    stats = slow.stats()
    assert stats["fail_by_reason"]["CANCELED"] == 1
    assert stats["success"]["count"] == 1 and slow.engines[0].rows == 1  # it never ran


def test_a_client_that_vanishes_mid_stream_leaves_the_others_unharmed(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    running = serve_repository(make_repository({"slow": identity_config(200_000, "")}))
    slow = model_of(running, "slow")
    # The leaver: a stream whose requests keep coming until its channel is closed under it.
    leaver = grpc.insecure_channel(running.grpc_url)
    sent = threading.Event()

    def requests() -> Iterator[Any]:
        for i in range(3):
            yield stream_request("slow", float(i), f"leaver-{i}")
        sent.set()
        threading.Event().wait(30)  # the stream stays open, the client says nothing more

    answers = service_pb2_grpc.GRPCInferenceServiceStub(leaver).ModelStreamInfer(requests())
    sent.wait(10)
    wait_until(lambda: slow.engines[0].executions == 1 and slow.stats()["pending"] == 3,
               "one request runs and two are queued")
    leaver.close()  # gone, without a goodbye
    with pytest.raises(grpc.RpcError):
        list(answers)
    wait_until(lambda: slow.stats()["pending"] == 0, "its queued requests left and the running one ended")

    # The others: unary and streamed calls, on the same model and on another, all answered.
    client = grpcclient.InferenceServerClient(running.grpc_url)
    try:
        for value in (7.0, 8.0):
            result = client.infer("slow", identity_inputs(np.full((1, 2), value, np.float32)))
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), [[value, value]])
    finally:
        client.close()
    with grpc.insecure_channel(running.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        streamed = list(stub.ModelStreamInfer(iter([stream_request("slow", 9.0, "other")])))
        assert [a.infer_response.id for a in streamed] == ["other"] and not streamed[0].error_message
    stats = slow.stats()
    assert stats["fail_by_reason"]["CANCELED"] == 2  # the leaver's queued two, never run
    assert slow.engines[0].rows == stats["success"]["count"] == 4


def test_shutdown_answers_what_it_took_and_reports_not_serving() -> None:
    running, thread = start_server(ENGINES)
    stopping = None
    try:
        channel = grpc.insecure_channel(running.grpc_url)
        watch = channel.unary_stream(
            "/grpc.health.v1.Health/Watch",
            request_serializer=pb.HealthCheckRequest.SerializeToString,
            response_deserializer=pb.HealthCheckResponse.FromString,
        )
        statuses = watch(pb.HealthCheckRequest())
        assert next(statuses).status == pb.HealthCheckResponse.SERVING
        # an open stream with one answered request, idle when the server stops
        release = threading.Event()

        def requests() -> Iterator[Any]:
            yield stream_request("identity", 1.0, "before", width=16)
            release.wait(30)

        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answers = stub.ModelStreamInfer(requests())
        assert next(answers).infer_response.id == "before"
        stopping = asyncio.run_coroutine_threadsafe(running.server.stop(), running.loop)  # type: ignore[attr-defined]
        assert next(statuses).status == pb.HealthCheckResponse.NOT_SERVING
        assert list(statuses) == []  # Watch ends
        assert list(answers) == []  # the stream closes cleanly, without waiting for the client
        stopping.result(timeout=30)
        release.set()
        channel.close()
    finally:
        if stopping is None:
            stop_server(running, thread)
        else:
            running.loop.call_soon_threadsafe(running.loop.stop)
            thread.join(timeout=30)
            running.loop.close()
