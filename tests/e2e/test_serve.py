"""`pyserver serve` as a subprocess: wait for ready, check held-out digits over HTTP and over gRPC,
stop with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from sklearn.datasets import load_digits

from tests.conftest import ENGINES, ROOT

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(proc: subprocess.Popen[bytes], client: httpclient.InferenceServerClient) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            if client.is_server_ready():
                return
        except Exception:
            pass
        assert time.monotonic() < deadline, "server did not become ready in 120 s"
        time.sleep(0.2)


def test_serve_digits_and_stop_on_sigterm() -> None:
    port, grpc_port = free_port(), free_port()
    # The installed console script, as a user runs it (python -m pyserver where there is none).
    script = Path(sys.executable).with_name("pyserver")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pyserver"]
    proc = subprocess.Popen(
        [*command, "serve", "--model-repository", str(ENGINES),
         "--http-address", "127.0.0.1", "--http-port", str(port), "--grpc-port", str(grpc_port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    grpc_client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    try:
        wait_ready(proc, client)

        digits = load_digits()
        pixels = digits.data[-360:].astype(np.float32)
        session = ort.InferenceSession(str(ENGINES / "digits" / "1" / "model.onnx"))
        want_label, want_prob = session.run(None, {"pixels": pixels})
        assert grpc_client.is_server_ready()  # gRPC serves the same data plane
        for front in (httpclient, grpcclient):
            got = []
            for start in range(0, 360, 90):
                inp = front.InferInput("pixels", [90, 64], "FP32")
                inp.set_data_from_numpy(pixels[start : start + 90])
                result = (client if front is httpclient else grpc_client).infer("digits", [inp])
                got.append(result.as_numpy("label"))
                np.testing.assert_allclose(
                    result.as_numpy("probabilities"), want_prob[start : start + 90], rtol=1e-5,
                    atol=1e-7,
                )
            labels = np.concatenate(got)
            np.testing.assert_array_equal(labels, want_label)
            assert (labels[:, 0] == digits.target[-360:]).mean() >= 0.95
        # both front ends count into one set of statistics
        stats = grpc_client.get_inference_statistics("digits").model_stats[0]
        assert stats.inference_count == 720 == client.get_inference_statistics("digits")[
            "model_stats"][0]["inference_count"]
    finally:
        client.close()
        grpc_client.close()
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, out.decode()
