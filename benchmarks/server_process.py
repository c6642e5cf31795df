"""`pyserver serve` as a subprocess on a free port, for the benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, *flags: str, repository: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the server on `repository` (the bundled engines/ by default) and wait until it is
    ready; extra command-line flags go through. gRPC stays off unless a flag names it (two
    servers would otherwise both want port 8001)."""
    if not any(flag.startswith("--grpc") or flag == "--allow-grpc" for flag in flags):
        flags = (*flags, "--allow-grpc", "false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyserver", "serve", "--model-repository",
         str(repository or ROOT / "engines"), "--host", "127.0.0.1", "--http-port", str(port),
         "--log-level", "warning", *flags],
        cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
