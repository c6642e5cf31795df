"""pyserver's HTTP/1.1 protocol against a fake transport (no sockets): framing, keep-alive and
pipelining order, limits, deadlines, early answers, and what a client that leaves cancels."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from pyserver.errors import Unavailable
from pyserver.http.protocol import HttpLimits, HttpProtocol, HttpServer, Slot, stream
from pyserver.http.router import Router
from pyserver.http.wire import Request, Response, json_response


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.paused = False

    def write(self, data: Any) -> None:
        assert not self.closed, "write after close"
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def responses(self) -> list[tuple[int, dict[str, str], bytes]]:
        """The responses written so far, parsed."""
        out, data = [], bytes(self.written)
        while data:
            head, _, rest = data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            status = int(lines[0].split()[1])
            headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
            if status == 100:
                data = rest
                continue
            length = int(headers["content-length"])
            out.append((status, headers, rest[:length]))
            data = rest[length:]
        return out


class Held:
    """A stream handler whose answers the test releases by hand."""

    def __init__(self) -> None:
        self.slots: list[Slot] = []
        self.aborted: list[Slot] = []
        self.cancelled: list[Slot] = []
        self.refuse = False
        self.bodies: dict[int, bytes] = {}

    def begin(self, slot: Slot, match_info: dict[str, str], headers: dict[str, str]) -> object:
        if self.refuse:
            raise Unavailable("the queue is full")
        return match_info["name"]

    def finish(self, slot: Slot, state: object, body: bytes, headers: dict[str, str]) -> None:
        self.slots.append(slot)
        slot.cancel = lambda: self.cancelled.append(slot)
        self.bodies[id(slot)] = body

    def abort(self, slot: Slot, state: object) -> None:
        self.aborted.append(slot)

    def release(self, index: int) -> None:
        slot = self.slots[index]
        slot.answer(Response(200, b"done:" + self.bodies[id(slot)], b"text/plain"))


async def echo(request: Request) -> Response:
    return json_response({"path": request.path, "body": request.body.decode(),
                          "match": request.match_info})


@pytest.fixture
def setup():  # type: ignore[no-untyped-def]
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    held = Held()
    router = Router([("GET", "/echo", echo), ("POST", "/echo", echo),
                     ("POST", "/held/{name}", stream(held))])
    limits = HttpLimits(max_request_size=100, header_timeout=0.2, body_timeout=0.3,
                        keepalive_timeout=0.5, max_header_count=5, max_header_bytes=300,
                        max_pipelined=4)
    server = HttpServer(router, limits)

    def connect() -> tuple[HttpProtocol, FakeTransport]:
        async def make() -> HttpProtocol:
            return server()
        protocol = loop.run_until_complete(make())
        transport = FakeTransport()
        protocol.connection_made(transport)
        return protocol, transport

    def run(seconds: float = 0.01) -> None:
        loop.run_until_complete(asyncio.sleep(seconds))

    yield connect, run, held, server
    loop.run_until_complete(server.close(0))
    loop.close()
    asyncio.set_event_loop(None)


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            .encode() + body)


def test_keep_alive_and_task_handlers(setup) -> None:  # type: ignore[no-untyped-def]
    connect, run, _, _ = setup
    protocol, transport = connect()
    protocol.data_received(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    run()
    protocol.data_received(post("/echo", b"abc"))
    run()
    (s1, h1, b1), (s2, _, b2) = transport.responses()
    assert (s1, json.loads(b1)["path"]) == (200, "/echo")
    assert (s2, json.loads(b2)["body"]) == (200, "abc")
    assert h1["content-type"] == "application/json"
    assert not transport.closed


def test_pipelined_answers_leave_in_order(setup) -> None:  # type: ignore[no-untyped-def]
    connect, run, held, _ = setup
    protocol, transport = connect()
    protocol.data_received(post("/held/a", b"1") + post("/held/b", b"2") + post("/held/c", b"3"))
    assert len(held.slots) == 3
    held.release(2)
    held.release(1)
    assert transport.responses() == []  # the first is still not answered
    held.release(0)
    assert [b for _, _, b in transport.responses()] == [b"done:1", b"done:2", b"done:3"]


def test_too_many_pipelined_pauses_reading(setup) -> None:  # type: ignore[no-untyped-def]
    connect, _, held, _ = setup
    protocol, transport = connect()
    protocol.data_received(b"".join(post(f"/held/{i}", b"x") for i in range(4)))
    assert transport.paused
    for i in range(4):
        held.release(i)
    assert not transport.paused


def test_unknown_path_wrong_method_and_http_errors(setup) -> None:  # type: ignore[no-untyped-def]
    connect, run, _, _ = setup
    protocol, transport = connect()
    protocol.data_received(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    protocol.data_received(b"DELETE /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    (s1, _, b1), (s2, h2, b2) = transport.responses()
    assert s1 == 404 and json.loads(b1)["error"] == "no such endpoint: GET /nope"
    assert s2 == 405 and h2["allow"] == "GET, HEAD, POST"
    assert json.loads(b2)["error"] == "method DELETE is not allowed on /echo"


def test_malformed_request_gets_400_and_close(setup) -> None:  # type: ignore[no-untyped-def]
    connect, _, _, _ = setup
    protocol, transport = connect()
    protocol.data_received(b"GET /echo HTTP/1.1\r\nHost x\r\n\r\n")
    ((status, headers, body),) = transport.responses()
    assert status == 400 and "malformed HTTP request" in json.loads(body)["error"]
    assert headers["connection"] == "close" and transport.closed


def test_a_broken_chunked_body_is_answered(setup) -> None:  # type: ignore[no-untyped-def]
    connect, _, held, _ = setup
    protocol, transport = connect()
    protocol.data_received(b"POST /held/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"3\r\nabc\r\nzz\r\n")
    ((status, _, body),) = transport.responses()
    assert status == 400 and "malformed HTTP request" in json.loads(body)["error"]
    assert transport.closed
    assert len(held.aborted) == 1  # its admission was given back


def test_header_limits(setup) -> None:  # type: ignore[no-untyped-def]
    connect, _, _, _ = setup
    protocol, transport = connect()
    headers = "".join(f"X-{i}: y\r\n" for i in range(6))
    protocol.data_received(f"GET /echo HTTP/1.1\r\n{headers}\r\n".encode())
    ((status, _, body),) = transport.responses()
    assert status == 431 and "more than 5 headers" in json.loads(body)["error"]
    protocol, transport = connect()
    protocol.data_received(b"GET /echo HTTP/1.1\r\nX-Big: " + b"y" * 400 + b"\r\n\r\n")
    ((status, _, body),) = transport.responses()
    assert status == 431 and "larger than 300 bytes" in json.loads(body)["error"]


def test_an_oversized_body_is_refused_before_it_is_read(setup) -> None:  # type: ignore[no-untyped-def]
    connect, _, held, _ = setup
    protocol, transport = connect()
    protocol.data_received(post("/held/a", b"x" * 150)[:80])  # headers and a little body
    ((status, headers, body),) = transport.responses()
    assert status == 413 and "limit of 100 bytes (150 bytes)" in json.loads(body)["error"]
    assert headers["connection"] == "close"
    assert not transport.closed  # the client may still be sending: read it, drop it
    protocol.data_received(b"x" * 150)
    assert transport.closed and held.slots == []


def test_a_chunked_body_over_the_limit(setup) -> None:  # type: ignore[no-untyped-def]
    connect, _, held, _ = setup
    protocol, transport = connect()
    chunk = b"50\r\n" + b"x" * 80 + b"\r\n"
    protocol.data_received(b"POST /held/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           + chunk + chunk + b"0\r\n\r\n")
    ((status, _, _),) = transport.responses()
    assert status == 413 and transport.closed and held.slots == [] and len(held.aborted) == 1


def test_an_early_refusal_skips_the_body_and_keeps_the_connection(setup) -> None:  # type: ignore[no-untyped-def]
    connect, _, held, _ = setup
    protocol, transport = connect()
    held.refuse = True
    protocol.data_received(post("/held/a", b"12345"))
    held.refuse = False
    protocol.data_received(post("/held/b", b"67"))
    held.release(0)
    (s1, _, b1), (s2, _, b2) = transport.responses()
    assert s1 == 503 and json.loads(b1)["error"] == "the queue is full"
    assert (s2, b2) == (200, b"done:67")
    assert not transport.closed


def test_deadlines(setup) -> None:  # type: ignore[no-untyped-def]
    connect, run, held, _ = setup
    slow_headers, t1 = connect()
    slow_headers.data_received(b"GET /echo HTTP/1.1\r\nHost: x\r\n")  # headers never finish
    slow_body, t2 = connect()
    slow_body.data_received(post("/held/a", b"0123456789")[:-5])  # half of the body
    idle, t3 = connect()
    busy, t4 = connect()
    busy.data_received(post("/held/b", b"x"))  # the server is working on it: no deadline
    started = time.monotonic()
    while not (t1.closed and t2.closed and t3.closed) and time.monotonic() - started < 3:
        slow_body.data_received(b"")  # no progress
        run(0.05)
    ((s1, _, b1),) = t1.responses()
    assert s1 == 408 and "headers did not arrive within 0.2 s" in json.loads(b1)["error"]
    ((s2, _, b2),) = t2.responses()
    assert s2 == 408 and "body did not arrive within 0.3 s" in json.loads(b2)["error"]
    assert t3.closed and t3.responses() == []  # idle keep-alive: closed without a word
    assert not t4.closed
    assert len(held.aborted) == 1  # the stalled body's admission was given back
    held.release(0)
    assert t4.responses()[0][0] == 200


def test_a_client_that_leaves_cancels_its_requests(setup) -> None:  # type: ignore[no-untyped-def]
    connect, run, held, _ = setup
    protocol, transport = connect()
    protocol.data_received(post("/held/a", b"1") + post("/held/b", b"2"))
    protocol.connection_lost(None)
    assert held.cancelled == held.slots and len(held.cancelled) == 2
    held.release(0)  # an answer arriving later goes nowhere
    assert transport.responses() == []


def test_http_1_0_closes_after_the_answer(setup) -> None:  # type: ignore[no-untyped-def]
    connect, run, _, _ = setup
    protocol, transport = connect()
    protocol.data_received(b"GET /echo HTTP/1.0\r\n\r\n")
    run()
    ((status, headers, _),) = transport.responses()
    assert status == 200 and headers["connection"] == "close" and transport.closed
