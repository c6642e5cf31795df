"""The load tools run as users run them, briefly, against a test server: the locustfile headless
with no failures, and the sweep on a short setting producing its JSON and plots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, RunningServer

pytestmark = pytest.mark.e2e


def _tool(name: str) -> list[str]:
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.exists() else [sys.executable, "-m", name]


def test_locustfile_runs_headless_without_failures(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "locust"
    proc = subprocess.run(
        [*_tool("locust"), "-f", str(ROOT / "benchmarks" / "locustfile.py"), "--headless",
         "-u", "4", "-r", "4", "-t", "3s", "--host", server.http, "--model", "identity",
         "--binary-ratio", "0.5", "--json-file", str(out), "--only-summary", "--loglevel", "WARNING"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYSERVER_BATCH": "2"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stats = {s["name"]: s for s in json.loads(out.with_suffix(".json").read_text())}
    binary = stats["/v2/models/identity/infer [binary]"]
    as_json = stats["/v2/models/identity/infer [json]"]
    assert binary["num_requests"] > 20 and as_json["num_requests"] > 20
    assert sum(s["num_failures"] for s in stats.values()) == 0
    assert "batch 2" in proc.stdout  # the environment variable reached the options


def test_locustfile_counts_errors_as_failures(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "locust"
    proc = subprocess.run(
        [*_tool("locust"), "-f", str(ROOT / "benchmarks" / "locustfile.py"), "--headless",
         "-u", "1", "-r", "1", "-t", "2s", "--host", server.http, "--model", "identity",
         "--shape", "15", "--json-file", str(out), "--only-summary", "--loglevel", "WARNING"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    stats = {s["name"]: s for s in json.loads(out.with_suffix(".json").read_text())}
    binary = stats["/v2/models/identity/infer [binary]"]
    assert binary["num_requests"] > 0 and binary["num_failures"] == binary["num_requests"]
    assert proc.returncode == 1  # locust's exit code when requests failed


def test_sweep_writes_results_and_plots(server: RunningServer, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sweep.py"), "--url", server.http,
         "--model", "identity", "--concurrency", "1", "4", "--rate", "200", "--duration", "0.5",
         "--warmup", "0.2", "--warmup-first", "0", "--repeats", "2", "--label", "test",
         "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "sweep_identity.json").read_text())
    assert result["model"] == "identity" and result["label"] == "test"
    assert [r["concurrency"] for r in result["closed_loop"]] == [1, 4]
    assert [r["rate"] for r in result["open_loop"]] == [200]
    for row in result["closed_loop"] + result["open_loop"]:
        assert len(row["runs"]) == 2
        m = row["median"]
        assert m["errors"] == 0 and m["requests"] > 0 and m["throughput"] > 0
        assert 0 < m["p50_us"] <= m["p90_us"] <= m["p99_us"]
        assert row["average_batch"] >= 1  # from /stats, which pyserver answers
    # an open loop at 200/s achieves about that rate (Poisson noise over half a second)
    assert 100 < result["open_loop"][0]["median"]["throughput"] < 300
    for name in ("throughput_vs_p99.png", "latency_by_load.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "c=4" in proc.stdout and "rate=200/s" in proc.stdout

    # a second series drawn beside the first (another server, the same client)
    again = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sweep.py"), "--url", server.http,
         "--model", "identity", "--concurrency", "2", "--duration", "0.3", "--warmup", "0.1",
         "--warmup-first", "0", "--repeats", "1", "--output-dir", str(tmp_path / "b"),
         "--compare", str(tmp_path / "sweep_identity.json")],
        capture_output=True, text=True, timeout=120,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert (tmp_path / "b" / "throughput_vs_p99.png").exists()
