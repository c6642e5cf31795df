"""/metrics over real HTTP: Triton's counters read exactly what was sent, agree with /stats, and
the histograms count every request; the metrics port and --allow-metrics false."""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ENGINES, RunningServer

IDENTITY = (ENGINES / "identity" / "config.toml").read_text()


def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def binary_infer(port: int, model: str, rows: int) -> int:
    raw = np.arange(rows * 16, dtype=np.float32).tobytes()
    header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [rows, 16], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return post(port, f"/v2/models/{model}/infer", header + raw,
                {"Inference-Header-Content-Length": str(len(header))})


def json_infer(port: int, model: str, shape: list[int]) -> int:
    count = int(np.prod(shape))
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": shape, "datatype": "FP32",
                                   "data": list(range(count))}]}).encode()
    return post(port, f"/v2/models/{model}/infer", body)


def scrape(port: int) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    """The exposition text, and every sample by (name, labels)."""
    status, headers, body = get(port, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return text, samples


def labels(model: str, **extra: str) -> frozenset[tuple[str, str]]:
    return frozenset({"model": model, "version": "1", **extra}.items())


@pytest.fixture
def fresh(make_repository, serve_repository) -> RunningServer:  # type: ignore[no-untyped-def]
    """A server of its own, so counts start at zero."""
    repo: Path = make_repository({"identity": IDENTITY, "other": IDENTITY})
    return serve_repository(repo)  # type: ignore[no-any-return]


def test_counters_read_exactly_what_was_sent(fresh: RunningServer) -> None:
    port = fresh.port
    rows = [1, 2, 3, 1, 5, 1, 4]
    for i, n in enumerate(rows):  # N = 7 successes, binary and JSON
        status = binary_infer(port, "identity", n) if i % 2 else json_infer(port, "identity", [n, 16])
        assert status == 200
    for _ in range(3):  # M = 3 failures: a shape the model does not take
        assert json_infer(port, "identity", [1, 15]) == 400
    assert json_infer(port, "nope", [1, 16]) == 404  # counts for no model
    assert json_infer(port, "identity/versions/9", [1, 16]) == 404

    text, samples = scrape(port)
    stats = json.loads(get(port, "/v2/models/identity/stats")[2])["model_stats"][0]

    # Triton's names, exactly as Triton writes them: no _total suffix, whole numbers.
    assert "# TYPE nv_inference_request_success counter\n" in text
    assert 'nv_inference_request_success{model="identity",version="1"} 7\n' in text
    assert 'nv_inference_request_failure{model="identity",reason="OTHER",version="1"} 3\n' in text
    assert "_total{" not in text.split("# HELP process_")[0]

    # (the parser reads a counter's samples as name_total)
    assert samples[("nv_inference_request_success_total", labels("identity"))] == 7
    for reason, want in (("REJECTED", 0), ("CANCELED", 0), ("BACKEND", 0), ("OTHER", 3)):
        key = ("nv_inference_request_failure_total", labels("identity", reason=reason))
        assert samples[key] == want, reason
        assert samples[("nv_inference_request_failure_total", labels("other", reason=reason))] == 0
    assert samples[("nv_inference_request_success_total", labels("other"))] == 0
    assert not any(dict(lab).get("model") == "nope" for _, lab in samples)

    # agree with /stats
    assert samples[("nv_inference_count_total", labels("identity"))] == sum(rows)
    assert samples[("nv_inference_count_total", labels("identity"))] == stats["inference_count"]
    assert samples[("nv_inference_exec_count_total", labels("identity"))] == stats["execution_count"]
    inference = stats["inference_stats"]
    assert inference["success"]["count"] == 7 and inference["fail"]["count"] == 3
    for name, key in (("request", "success"), ("queue", "queue"),
                      ("compute_input", "compute_input"), ("compute_infer", "compute_infer"),
                      ("compute_output", "compute_output")):
        metric = f"nv_inference_{name}_duration_us_total"
        assert samples[(metric, labels("identity"))] == inference[key]["ns"] // 1000, name
    assert samples[("nv_inference_pending_request_count", labels("identity"))] == 0

    # histograms: one observation per answered request / per executed request / per batch
    def hist(name: str) -> tuple[float, float, float]:
        count = samples[(f"{name}_count", labels("identity"))]
        inf = samples[(f"{name}_bucket", labels("identity", le="+Inf"))]
        return count, inf, samples[(f"{name}_sum", labels("identity"))]

    count, inf, _ = hist("pyserver_request_duration_seconds")
    assert count == inf == 7 + 3
    count, inf, _ = hist("pyserver_queue_duration_seconds")
    assert count == inf == 7
    count, inf, _ = hist("pyserver_compute_duration_seconds")
    assert count == inf == stats["execution_count"]
    count, inf, total = hist("pyserver_batch_size")
    assert count == stats["execution_count"] and total == sum(rows)  # one request per batch here
    assert samples[("pyserver_batch_size_bucket", labels("identity", le="1.0"))] == 3
    assert samples[("pyserver_batch_size_bucket", labels("identity", le="4.0"))] == 6
    # cumulative buckets never decrease
    buckets = sorted(
        (float(dict(lab)["le"]), v) for (n, lab), v in samples.items()
        if n == "pyserver_request_duration_seconds_bucket" and dict(lab)["model"] == "identity"
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert buckets[0][0] == pytest.approx(25e-6)  # sub-millisecond buckets...
    assert buckets[-2][0] == pytest.approx(30.0)  # ...up to second-long GPU batches


def test_process_gauges_and_open_connections(fresh: RunningServer) -> None:
    _, samples = scrape(fresh.port)
    assert samples[("process_resident_memory_bytes", frozenset())] > 10 * 2**20
    assert ("process_cpu_seconds_total", frozenset()) in samples
    # GPU gauges only where NVML is: never on this test machine's fake-free path
    assert not any(name.startswith("nv_gpu_") for name, _ in samples) or _has_nvml()

    held = [socket.create_connection(("127.0.0.1", fresh.port)) for _ in range(3)]
    try:
        deadline = time.monotonic() + 10
        while True:
            _, samples = scrape(fresh.port)
            seen = samples[("pyserver_http_open_connections", frozenset())]
            if seen >= 4 or time.monotonic() > deadline:  # the three held and the scrape's own
                break
            time.sleep(0.05)
        assert seen == 4
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 10
    while samples[("pyserver_http_open_connections", frozenset())] > 1:
        assert time.monotonic() < deadline, "closed connections still counted"
        time.sleep(0.05)
        _, samples = scrape(fresh.port)


def _has_nvml() -> bool:
    try:
        import pynvml  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


def test_metrics_port_serves_metrics_only(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    running = serve_repository(make_repository({"identity": IDENTITY}), metrics_port=0)
    metrics_port = running.server.metrics_port
    assert metrics_port is not None and metrics_port != running.port
    assert binary_infer(running.port, "identity", 2) == 200
    _, samples = scrape(metrics_port)
    assert samples[("nv_inference_count_total", labels("identity"))] == 2
    _, samples = scrape(running.port)  # the HTTP port answers too
    assert samples[("nv_inference_count_total", labels("identity"))] == 2
    status, _, body = get(metrics_port, "/v2/health/ready")
    assert status == 404 and "error" in json.loads(body)


def test_allow_metrics_false(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    running = serve_repository(
        make_repository({"identity": IDENTITY}), allow_metrics=False, metrics_port=0
    )
    status, _, body = get(running.port, "/metrics")
    assert status == 404 and "/metrics" in json.loads(body)["error"]
    assert running.server.metrics_port is None  # nothing listens for metrics
    assert binary_infer(running.port, "identity", 1) == 200


def test_stats_are_complete(fresh: RunningServer) -> None:
    """Triton's statistics extension, every field: what perf_analyzer reads around its windows."""
    before_ms = int(time.time() * 1000)
    for n in (1, 2, 1, 3):
        assert binary_infer(fresh.port, "identity", n) == 200
    assert json_infer(fresh.port, "identity", [1, 15]) == 400
    everything = json.loads(get(fresh.port, "/v2/models/stats")[2])["model_stats"]
    assert sorted(s["name"] for s in everything) == ["identity", "other"]
    by_version = json.loads(get(fresh.port, "/v2/models/identity/versions/1/stats")[2])
    stats = by_version["model_stats"][0]
    assert set(stats) == {"name", "version", "last_inference", "inference_count",
                          "execution_count", "inference_stats", "response_stats",
                          "batch_stats", "memory_usage", "instances"}
    assert stats["name"] == "identity" and stats["version"] == "1"
    assert before_ms - 1000 <= stats["last_inference"] <= int(time.time() * 1000) + 1000
    assert stats["inference_count"] == 7 and stats["execution_count"] == 4
    inference = stats["inference_stats"]
    assert set(inference) == {"success", "fail", "queue", "compute_input", "compute_infer",
                              "compute_output", "cache_hit", "cache_miss"}
    assert inference["success"]["count"] == 4 and inference["fail"]["count"] == 1
    assert inference["queue"]["count"] == 4 and inference["compute_infer"]["count"] == 4
    assert inference["success"]["ns"] >= inference["queue"]["ns"] > 0
    assert inference["cache_hit"] == {"count": 0, "ns": 0}
    batches = {b["batch_size"]: b for b in stats["batch_stats"]}
    assert sorted(batches) == [1, 2, 3]
    assert [batches[n]["compute_infer"]["count"] for n in (1, 2, 3)] == [2, 1, 1]
    for b in batches.values():
        assert set(b) == {"batch_size", "compute_input", "compute_infer", "compute_output"}
    # Neither engine here reports its memory; Triton answers [] for such models too.
    assert stats["memory_usage"] == [] and stats["response_stats"] == {}
    # pyserver's own field: where each instance runs
    assert stats["instances"] == [
        {"index": 0, "kind": "KIND_CPU", "gpu": None, "gpu_uuid": None}]


def test_rejected_and_canceled_failures_and_the_queue_gauge(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    """Over HTTP: a full queue counts REJECTED, a client gone from the queue CANCELED, and the
    pending gauge counts requests waiting, not the one executing (as Triton's does)."""
    slow = (IDENTITY.split("[dynamic_batching]")[0]
            + "[parameters]\nexecute_delay_us = 400000\n"
            + "[dynamic_batching]\n[dynamic_batching.default_queue_policy]\nmax_queue_size = 2\n")
    slow = slow.replace("max_batch_size = 256", "max_batch_size = 1")
    running = serve_repository(make_repository({"slow": slow}))
    model = running.server.models.get("slow")
    port = running.port
    raw = np.zeros(16, dtype=np.float32).tobytes()
    header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    request = (f"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\n"
               f"Inference-Header-Content-Length: {len(header)}\r\n"
               f"Content-Length: {len(header) + len(raw)}\r\n\r\n").encode() + header + raw

    def wait(predicate, what):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 10
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting until {what}"
            time.sleep(0.002)

    clients = []
    for n in range(3):  # one executes, two wait
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        clients.append(s)
        wait(lambda n=n: model.stats()["pending"] == n + 1, "it is taken")
    wait(lambda: model.engines[0].executions == 1, "the first executes")
    _, samples = scrape(port)
    assert samples[("nv_inference_pending_request_count", labels("slow"))] == 2
    assert binary_infer(port, "slow", 1) == 503  # the queue holds two: refused at once
    clients[2].close()  # the last one waiting hangs up
    wait(lambda: model.stats()["fail_by_reason"]["CANCELED"] == 1, "it is cancelled")
    for s in clients[:2]:
        s.settimeout(10)
        assert s.recv(64).startswith(b"HTTP/1.1 200")
        s.close()
    wait(lambda: model.stats()["pending"] == 0, "the queue is empty")
    _, samples = scrape(port)
    for reason, want in (("REJECTED", 1), ("CANCELED", 1), ("BACKEND", 0), ("OTHER", 0)):
        key = ("nv_inference_request_failure_total", labels("slow", reason=reason))
        assert samples[key] == want, reason
    assert samples[("nv_inference_request_success_total", labels("slow"))] == 2
    assert samples[("nv_inference_pending_request_count", labels("slow"))] == 0
