"""Bad requests over real HTTP: the right status, a message naming what was wrong, and no harm
to the server or to other requests."""

from __future__ import annotations

import asyncio
import http.client
import json
import struct
import time

import aiohttp
import numpy as np
import pytest

from tests.conftest import RunningServer


def request(server: RunningServer, method: str, path: str, body: bytes = b"",
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def error_of(status_body: tuple[int, dict[str, str], bytes]) -> tuple[int, str]:
    status, headers, body = status_body
    assert headers.get("Content-Type", "").startswith("application/json"), headers
    return status, json.loads(body)["error"]


def binary_body(tensors: list[dict], tail: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": tensors}).encode()
    return header + tail, {"Inference-Header-Content-Length": str(len(header))}


def test_unknown_model_and_version(server: RunningServer) -> None:
    status, message = error_of(request(server, "GET", "/v2/models/nope"))
    assert status == 404 and "nope" in message
    status, message = error_of(request(server, "POST", "/v2/models/nope/infer", b"{}"))
    assert status == 404 and "nope" in message
    status, message = error_of(request(server, "GET", "/v2/models/identity/versions/7"))
    assert status == 404 and "7" in message
    status, message = error_of(request(server, "GET", "/v2/models/nope/ready"))
    assert status == 404


def test_unknown_path_and_wrong_method(server: RunningServer) -> None:
    status, message = error_of(request(server, "GET", "/v3/whatever"))
    assert status == 404 and "/v3/whatever" in message
    status, message = error_of(request(server, "GET", "/v2/models/identity/infer"))
    assert status == 405 and "GET" in message


@pytest.mark.parametrize(
    ("body", "headers", "fragment"),
    [
        (b"{not json", {}, "JSON"),
        (b'{"inputs": []}', {}, "INPUT0"),
        (b'{"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": [0]}]}', {}, "datatype"),
        (b'{"inputs": [{"name": "INPUT0", "shape": [1, 15], "datatype": "FP32", "data": [0]}]}', {}, "shape"),
        (b'{"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [1, 2]}]}', {}, "16"),
        (b'{"inputs": [{"name": "INPUT0", "shape": [1000, 16], "datatype": "FP32", "data": [0]}]}', {}, "256"),
        (b'{"inputs": [{"name": "BOGUS", "shape": [1, 16], "datatype": "FP32", "data": [0]}]}', {}, "BOGUS"),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "x1"}, "Inference-Header-Content-Length"),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}, "999"),
    ],
    ids=["json", "missing", "datatype", "shape", "count", "batch", "unknown", "hlen-parse", "hlen-range"],
)
def test_malformed_infer_gets_400_naming_the_problem(
    server: RunningServer, body: bytes, headers: dict[str, str], fragment: str
) -> None:
    status, message = error_of(request(server, "POST", "/v2/models/identity/infer", body, headers))
    assert status == 400
    assert fragment in message, message


def test_binary_size_mismatches(server: RunningServer) -> None:
    tensor = {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
              "parameters": {"binary_data_size": 64}}
    body, headers = binary_body([tensor], b"\0" * 60)  # tail too short
    status, message = error_of(request(server, "POST", "/v2/models/identity/infer", body, headers))
    assert status == 400 and "64" in message
    body, headers = binary_body([tensor], b"\0" * 68)  # tail too long
    status, message = error_of(request(server, "POST", "/v2/models/identity/infer", body, headers))
    assert status == 400
    tensor = dict(tensor, parameters={"binary_data_size": 60})  # size disagrees with shape
    body, headers = binary_body([tensor], b"\0" * 60)
    status, message = error_of(request(server, "POST", "/v2/models/identity/infer", body, headers))
    assert status == 400 and "60" in message


def test_bad_bytes_framing(server: RunningServer) -> None:
    tail = struct.pack("<I", 50) + b"short"  # says 50 bytes, carries 5
    tensor = {"name": "INPUT0", "shape": [1, 1], "datatype": "BYTES",
              "parameters": {"binary_data_size": len(tail)}}
    body, headers = binary_body([tensor], tail)
    status, message = error_of(request(server, "POST", "/v2/models/identity_bytes/infer", body, headers))
    assert status == 400 and "INPUT0" in message


def test_oversized_body_gets_413(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    repo = make_repository({"identity": (
        'backend = "identity"\nmax_batch_size = 8\n'
        '[[input]]\nname = "INPUT0"\ndata_type = "TYPE_FP32"\ndims = [-1]\n'
        '[[output]]\nname = "OUTPUT0"\ndata_type = "TYPE_FP32"\ndims = [-1]\n'
    )})
    running = serve_repository(repo)
    big = 65 * 1024 * 1024
    status, message = error_of(request(running, "POST", "/v2/models/identity/infer", b"\0" * big))
    assert status == 413 and str(64 * 1024 * 1024) in message
    assert request(running, "GET", "/v2/health/live")[0] == 200


def test_unsupported_content_encoding_gets_501(server: RunningServer) -> None:
    status, message = error_of(request(server, "POST", "/v2/models/identity/infer", b"xx",
                                       {"Content-Encoding": "br2"}))
    assert status == 501 and "br2" in message


def test_bad_requests_do_not_disturb_good_ones_in_the_same_batch(server: RunningServer) -> None:
    """Good and bad requests interleaved, 200 in flight: every good one gets exactly its data."""

    async def run() -> None:
        url = f"{server.http}/v2/models/identity/infer"
        async with aiohttp.ClientSession() as session:

            async def good(i: int) -> None:
                x = np.full((1, 16), i, dtype=np.float32)
                header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                                                 "parameters": {"binary_data_size": 64}}],
                                     "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}).encode()
                async with session.post(url, data=header + x.tobytes(),
                                        headers={"Inference-Header-Content-Length": str(len(header))}) as r:
                    assert r.status == 200
                    body = await r.read()
                    n = int(r.headers["Inference-Header-Content-Length"])
                    np.testing.assert_array_equal(np.frombuffer(body[n:], np.float32), x.ravel())

            async def bad(i: int) -> None:
                header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                                                 "parameters": {"binary_data_size": 64}}]}).encode()
                async with session.post(url, data=header + b"\0" * (i % 64),
                                        headers={"Inference-Header-Content-Length": str(len(header))}) as r:
                    assert r.status == 400

            await asyncio.gather(*(good(i) if i % 2 else bad(i) for i in range(200)))

    asyncio.run(run())
    assert request(server, "GET", "/v2/health/ready")[0] == 200


def test_a_model_that_fails_to_load_leaves_the_others_serving(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    repo = make_repository(
        {
            "broken": 'backend = "onnxruntime"\nmax_batch_size = "lots"\n',
            "identity": 'backend = "identity"\nmax_batch_size = 4\n'
                        '[[input]]\nname = "INPUT0"\ndata_type = "TYPE_INT32"\ndims = [2]\n',
        }
    )
    running = serve_repository(repo)
    assert request(running, "GET", "/v2/models/identity/ready")[0] == 200
    status, message = error_of(request(running, "GET", "/v2/models/broken"))
    assert status == 404
    assert "config.toml" in message and "max_batch_size" in message


def test_a_model_the_core_refuses_fails_alone(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    """A load error that is not a config error (here the ONNX file is garbage) fails that model
    alone: the server starts and serves the others."""
    repo = make_repository(
        {
            "garbage": 'backend = "onnxruntime"\nmax_batch_size = 4\n',
            "identity": 'backend = "identity"\nmax_batch_size = 4\n'
                        '[[input]]\nname = "INPUT0"\ndata_type = "TYPE_INT32"\ndims = [2]\n',
        }
    )
    (repo / "garbage" / "1" / "model.onnx").write_bytes(b"this is not an onnx file")
    running = serve_repository(repo)
    assert request(running, "GET", "/v2/models/identity/ready")[0] == 200
    status, message = error_of(request(running, "GET", "/v2/models/garbage"))
    assert status == 404 and "model.onnx" in message


def test_text_that_is_not_utf8_fails_alone_on_an_onnx_string_model(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    """ONNX Runtime takes strings as text: a non-UTF-8 element gets 400 for its own request,
    and the good requests sent beside it all get their data."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["TEXT"], ["ECHO"])], "echo",
        [helper.make_tensor_value_info("TEXT", TensorProto.STRING, ["N", 1])],
        [helper.make_tensor_value_info("ECHO", TensorProto.STRING, ["N", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    repo = make_repository({"echo": 'backend = "onnxruntime"\nmax_batch_size = 16\n'
                                    '[dynamic_batching]\nmax_queue_delay_microseconds = 2000\n'})
    onnx.save(model, str(repo / "echo" / "1" / "model.onnx"))
    running = serve_repository(repo)

    def body(text: bytes) -> tuple[bytes, dict[str, str]]:
        tail = struct.pack("<I", len(text)) + text
        tensor = {"name": "TEXT", "shape": [1, 1], "datatype": "BYTES",
                  "parameters": {"binary_data_size": len(tail)}}
        return binary_body([tensor], tail)

    async def run() -> None:
        url = f"{running.http}/v2/models/echo/infer"
        async with aiohttp.ClientSession() as session:

            async def send(i: int) -> None:
                text = f"caf\u00e9 {i}".encode() if i % 3 else b"\xff\xfe bad"
                data, headers = body(text)
                async with session.post(url, data=data, headers=headers) as r:
                    answer = await r.json()
                    if i % 3:
                        assert r.status == 200, answer
                        assert answer["outputs"][0]["data"] == [text.decode()]
                    else:
                        assert r.status == 400
                        assert "TEXT" in answer["error"] and "UTF-8" in answer["error"]

            await asyncio.gather(*(send(i) for i in range(60)))

    asyncio.run(run())


def test_clients_that_hang_up_do_not_hurt_the_server(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    """A body cut short mid-stream, and clients that leave while their request is queued or
    executing: the server answers everyone still there, and its queue drains."""
    import socket

    repo = make_repository({"slow": (
        'backend = "identity"\nmax_batch_size = 4\n'
        '[[input]]\nname = "INPUT0"\ndata_type = "TYPE_FP32"\ndims = [2]\n'
        "[dynamic_batching]\nmax_queue_delay_microseconds = 0\n"
        "[parameters]\nexecute_delay_us = 50000\n"
    )})
    running = serve_repository(repo)
    header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 8}}]}).encode()
    body = header + np.array([[1.0, 2.0]], np.float32).tobytes()
    head = (f"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            f"Inference-Header-Content-Length: {len(header)}\r\n\r\n").encode()
    # cut short: headers and half the body, then gone
    with socket.create_connection(("127.0.0.1", running.port)) as s:
        s.sendall(head + body[: len(body) // 2])
    # whole requests whose clients leave before the answer (12 requests, 50 ms per batch of 4)
    for _ in range(12):
        with socket.create_connection(("127.0.0.1", running.port)) as s:
            s.sendall(head + body)
    status, headers, answer = request(running, "POST", "/v2/models/slow/infer", body,
                                      {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200
    assert json.loads(answer)["outputs"][0]["data"] == [1.0, 2.0]
    model = running.server.models.get("slow")
    deadline = time.monotonic() + 10
    while model.stats()["pending"] and time.monotonic() < deadline:
        time.sleep(0.01)
    core = model.stats()
    assert core["pending"] == 0
    stats = json.loads(request(running, "GET", "/v2/models/slow/stats")[2])["model_stats"][0]
    # The departed requests that were read either ran before their client's hang-up was seen,
    # or left the queue cancelled; nothing else failed. (How many of the 12 aiohttp had read
    # before each hang-up is the kernel's business: up to 13 with ours.)
    success = stats["inference_stats"]["success"]["count"]
    failed = stats["inference_stats"]["fail"]["count"]
    assert failed == core["fail_by_reason"]["CANCELED"]
    assert 1 <= success + failed <= 13
    # Cancelled requests never reached the engine.
    assert sum(engine.rows for engine in model.engines) == success
