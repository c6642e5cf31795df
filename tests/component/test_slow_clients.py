"""Slow and stalled clients (the adversity tier): 500 connections that send half a request and
stall do not stop normal clients, and the deadlines close every one of them."""

from __future__ import annotations

import http.client
import json
import resource
import socket
import time

import pytest

from tests.conftest import ENGINES

STALLED = 500
BODY = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                               "data": [1.0] * 16}]}).encode()


def latencies(port: int, count: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            conn.request("POST", "/v2/models/identity/infer", body=BODY)
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            out.append(time.perf_counter() - started)
    finally:
        conn.close()
    return out


def p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99)]


def test_stalled_clients_do_not_stop_normal_ones(serve_repository) -> None:  # type: ignore[no-untyped-def]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * STALLED + 200  # both ends of each connection live in this process
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} open files; this machine allows {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    running = serve_repository(ENGINES, http_header_timeout_secs=2.0,
                               http_body_timeout_secs=2.0, http_keepalive_timeout_secs=30.0)
    latencies(running.port, 100)  # warm up
    baseline = latencies(running.port, 400)
    half_body = (f"POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\n"
                 f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY[: len(BODY) // 2]
    half_headers = b"POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\nContent-Le"
    stalled = []
    opened = time.monotonic()
    for i in range(STALLED):
        s = socket.create_connection(("127.0.0.1", running.port))
        s.sendall(half_body if i % 2 else half_headers)
        stalled.append(s)
    during = latencies(running.port, 400)
    assert time.monotonic() - opened < 2.0, "the load ran past the deadlines: not measured"
    # Normal traffic keeps its latency (2x baseline, with 2 ms of slack for sub-ms noise).
    assert p99(during) <= 2 * p99(baseline) + 0.002, (p99(baseline), p99(during))
    # Every stalled connection is answered 408 and closed by the deadlines.
    answered = closed = 0
    for s in stalled:
        s.settimeout(10)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        closed += 1
        if data.startswith(b"HTTP/1.1 408 "):
            answered += 1
        s.close()
    assert closed == STALLED and answered == STALLED
    assert time.monotonic() - opened < 8.0
    status = http.client.HTTPConnection("127.0.0.1", running.port, timeout=5)
    status.request("GET", "/v2/health/ready")
    assert status.getresponse().status == 200
    status.close()
