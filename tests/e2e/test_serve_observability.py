"""`pyserver serve` with a metrics port and JSON logs, as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ENGINES, ROOT
from tests.e2e.test_serve import free_port

pytestmark = pytest.mark.e2e


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_metrics_port_and_json_logs() -> None:
    port, metrics_port = free_port(), free_port()
    script = Path(sys.executable).with_name("pyserver")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pyserver"]
    proc = subprocess.Popen(
        [*command, "serve", "--model-repository", str(ENGINES), "--http-address", "127.0.0.1",
         "--http-port", str(port), "--metrics-port", str(metrics_port), "--log-format", "json",
         "--allow-grpc", "false"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while fetch_ready(port) != 200:
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        body = json.dumps({"id": "e2e-1", "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [0] * 16}]}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/identity/infer",
                                         data=body, method="POST")
        with urllib.request.urlopen(request, timeout=5) as r:
            assert r.status == 200
        status, text = fetch(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        assert b'nv_inference_request_success{model="identity",version="1"} 1\n' in text
        assert fetch(f"http://127.0.0.1:{port}/metrics")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()
    logged = [line for line in out.decode().splitlines() if not line.startswith("pyserver: ready")]
    records = [json.loads(line) for line in logged]  # every line one JSON object
    assert any(r["message"] == "model identity version 1: READY" for r in records)
    assert any(f":{metrics_port}/metrics" in r["message"] for r in records)
    # the default level logs nothing per request
    assert not any("e2e-1" in line or "/infer" in line for line in logged)


def fetch_ready(port: int) -> int:
    try:
        return fetch(f"http://127.0.0.1:{port}/v2/health/ready")[0]
    except OSError:
        return 0
