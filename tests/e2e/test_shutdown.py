"""SIGTERM with requests in flight: readiness off at once, new requests 503, every accepted
request answered, exit 0; or, past --exit-timeout-secs, the rest answered 503 and exit 1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.e2e.test_serve import free_port

pytestmark = pytest.mark.e2e

SLOW = """backend = "identity"
max_batch_size = 0
[[input]]
name = "INPUT0"
data_type = "TYPE_FP32"
dims = [4]
[parameters]
execute_delay_us = {delay}
"""
BODY = json.dumps({"inputs": [{"name": "INPUT0", "shape": [4], "datatype": "FP32",
                               "data": [1, 2, 3, 4]}]}).encode()


def call(url: str, body: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def start(tmp_path: Path, delay_us: int, *flags: str) -> tuple[subprocess.Popen[bytes], str]:
    (tmp_path / "slow" / "1").mkdir(parents=True)
    (tmp_path / "slow" / "config.toml").write_text(SLOW.format(delay=delay_us))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyserver", "serve", "--model-repository", str(tmp_path),
         "--http-address", "127.0.0.1", "--http-port", str(port), *flags],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            if call(url + "/v2/health/ready")[0] == 200:
                return proc, url
        except OSError:
            pass
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)


def in_flight(url: str, count: int) -> tuple[list[threading.Thread], list[tuple[int, str]]]:
    answers: list[tuple[int, str]] = []
    threads = [threading.Thread(target=lambda: answers.append(
        call(url + "/v2/models/slow/infer", BODY))) for _ in range(count)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # accepted: queued behind each other (0.4 s each, one instance)
    return threads, answers


def test_sigterm_answers_every_accepted_request(tmp_path: Path) -> None:
    proc, url = start(tmp_path, 400_000)
    threads, answers = in_flight(url, 3)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    assert call(url + "/v2/health/ready")[0] == 400  # not ready at once
    status, text = call(url + "/v2/models/slow/infer", BODY)
    assert status == 503 and "server is shutting down" in text
    for t in threads:
        t.join(30)
    out, _ = proc.communicate(timeout=30)
    assert [status for status, _ in answers] == [200, 200, 200], answers
    assert proc.returncode == 0, out.decode()


def test_past_the_exit_timeout_the_rest_get_503(tmp_path: Path) -> None:
    proc, url = start(tmp_path, 1_500_000, "--exit-timeout-secs", "0.5")
    threads, answers = in_flight(url, 3)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    out, _ = proc.communicate(timeout=30)
    assert time.monotonic() - started < 10
    statuses = sorted(status for status, _ in answers)
    # the one running finishes; the queued ones are refused when the timeout passes
    assert statuses == [200, 503, 503], answers
    assert all("shutting down" in text for status, text in answers if status == 503), answers
    assert proc.returncode == 1, out.decode()
    assert b"still in flight after --exit-timeout-secs" in out
