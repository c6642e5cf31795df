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


# --- perf_analyzer: the measure of issue 11 (benchmarks/perf_analyzer_sweep.py, ab.py) ---------

sys.path.insert(0, str(ROOT / "benchmarks"))
import ab  # noqa: E402
import pa_report  # noqa: E402
import perf_analyzer_sweep as pas  # noqa: E402
from server_process import free_port, start_server, stop_server  # noqa: E402

# perf_analyzer 2.60's -f report for one concurrency level, as written against pyserver
PA_CSV = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
    "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,"
    "p50 latency,p90 latency,p95 latency,p99 latency\n"
    "16,6419.38,21,2388,74,1,0,0,0,2320,2826,3293,6250\n"
)


def test_perf_analyzer_csv_is_read_into_named_figures() -> None:
    row = pas.parse_csv(PA_CSV)
    assert row["concurrency"] == 16 and row["throughput"] == pytest.approx(6419.38)
    assert (row["p50_us"], row["p90_us"], row["p95_us"], row["p99_us"]) == (2320, 2826, 3293, 6250)
    assert row["network_us"] == 2388 and row["server_queue_us"] == 74
    assert row["server_compute_infer_us"] == 0


@pytest.mark.parametrize("text", [PA_CSV.splitlines()[0] + "\n", "Concurrency,Client Send\n1,2\n",
                                  PA_CSV + PA_CSV.splitlines()[1] + "\n"])
def test_perf_analyzer_csv_without_exactly_one_full_row_is_refused(text: str) -> None:
    with pytest.raises(pas.PerfAnalyzerError):
        pas.parse_csv(text)


def test_proc_stat_gives_utime_plus_stime_even_with_a_strange_command_name() -> None:
    # fields: 1 pid, 2 (comm), 3 state, ... 14 utime, 15 stime, 16 cutime (children: not counted)
    fields = ["S", *map(str, range(4, 14)), "1234", "56", "999999", "7"]
    line = "4242 (py ser) (ver)) " + " ".join(fields) + " 20 0 9 0\n"
    assert pas.parse_proc_stat(line) == 1234 + 56


def test_cpu_ticks_follow_the_process_cpu_time() -> None:
    """The /proc reading agrees with the kernel's other account of this process (os.times)."""
    hz = os.sysconf("SC_CLK_TCK")
    t0, ticks0 = os.times(), pas.cpu_ticks(os.getpid())
    while os.times().user - t0.user < 0.3:
        sum(i * i for i in range(10_000))
    t1, ticks1 = os.times(), pas.cpu_ticks(os.getpid())
    expected = (t1.user + t1.system - t0.user - t0.system) * hz
    assert ticks1 - ticks0 >= 0.3 * hz
    assert abs((ticks1 - ticks0) - expected) <= 3


PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 51234 1 0
   1: 0100007F:1F40 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 51299 1 0
   2: 00000000:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 51240 1 0
"""


def test_listening_sockets_are_found_by_port() -> None:
    # 0x1F40 = 8000 (one listening socket and one connection), 0x1F41 = 8001
    assert pas.listening_inodes(PROC_NET_TCP, 8000) == {"51234"}
    assert pas.listening_inodes(PROC_NET_TCP, 8001) == {"51240"}
    assert pas.listening_inodes(PROC_NET_TCP, 8002) == set()


def test_the_server_pid_is_checked_against_the_listening_port() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert pas.pid_listens_on(os.getpid(), port)
        assert not pas.pid_listens_on(os.getppid(), port)  # a shell that started the server
    assert not pas.pid_listens_on(os.getpid(), port)  # closed


def _stats(success: int, inference: int, execution: int,
           batches: dict[int, tuple[int, int]]) -> dict[str, object]:
    return {"model_stats": [{
        "name": "m", "version": "1", "inference_count": inference, "execution_count": execution,
        "inference_stats": {"success": {"count": success, "ns": 0}},
        "batch_stats": [{"batch_size": b, "compute_infer": {"count": c, "ns": ns}}
                        for b, (c, ns) in batches.items()],
    }]}


def test_cpu_per_request_and_batch_figures_on_a_fixed_sample() -> None:
    before = pas.snapshot_from_stats(
        _stats(10_000, 12_000, 8_000, {1: (5_000, 50_000_000), 2: (3_000, 60_000_000),
                                        7: (1, 9_000)}), ticks=1_000, now=100.0)
    after = pas.snapshot_from_stats(
        _stats(60_000, 62_000, 33_000, {1: (15_000, 150_000_000), 2: (3_000, 60_000_000),
                                         4: (15_000, 450_000_000), 7: (1, 9_000)}),
        ticks=1_600, now=110.0)
    w = pas.server_window(before, after, clock_ticks=100)
    # 600 ticks at 100 Hz = 6 s of CPU for 50,000 requests: 120 us each, 0.6 of a core over 10 s
    assert w["requests"] == 50_000 and w["cpu_s"] == pytest.approx(6.0)
    assert w["cpu_us_per_request"] == pytest.approx(120.0)
    assert w["cpu_cores"] == pytest.approx(0.6)
    # 50,000 rows in 25,000 executions
    assert w["average_batch"] == pytest.approx(2.0)
    # only batch sizes that ran in the window: 10,000 of 1 at 10 us, 15,000 of 4 at 30 us
    assert w["batches"] == {"1": {"executions": 10_000, "compute_infer_us": pytest.approx(10.0)},
                            "4": {"executions": 15_000, "compute_infer_us": pytest.approx(30.0)}}


def test_without_a_pid_there_are_no_cpu_figures_and_versions_are_summed() -> None:
    two = _stats(10, 10, 5, {})
    two["model_stats"] = two["model_stats"] * 2  # type: ignore[operator]
    before = pas.snapshot_from_stats(_stats(0, 0, 0, {}), ticks=None, now=0.0)
    after = pas.snapshot_from_stats(two, ticks=None, now=1.0)
    w = pas.server_window(before, after, clock_ticks=100)
    assert w["requests"] == 20 and w["average_batch"] == pytest.approx(2.0)
    assert w["cpu_us_per_request"] is None and w["cpu_s"] is None


def test_input_data_is_one_exact_row_per_input_with_shapes_for_variable_dimensions() -> None:
    metadata = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [-1, 2, 3]},
                           {"name": "b", "datatype": "INT64", "shape": [-1, -1]},
                           {"name": "c", "datatype": "BYTES", "shape": [-1, 1]}]}
    data, shapes = pas.input_data(metadata, {"max_batch_size": 8})
    row = data["data"][0]
    assert row["a"]["shape"] == [2, 3] and len(row["a"]["content"]) == 6
    assert row["b"]["shape"] == [1] and shapes == ["b:1"]
    assert row["c"]["content"] == ["pyserver"]
    assert json.loads(json.dumps(data, allow_nan=False)) == data  # JSON can carry it exactly
    unbatched, _ = pas.input_data({"inputs": [{"name": "x", "datatype": "FP32", "shape": [4]}]},
                                  {"max_batch_size": 0})
    assert unbatched["data"][0]["x"]["shape"] == [4]


def test_points_parse_and_name_themselves() -> None:
    for text in ("identity:16", "identity:16:json", "digits:64:grpc"):
        assert pas.Point.parse(text).key == text
    assert pas.Point.parse("identity:1:binary") == pas.Point("identity", 1)
    assert pas.Point.parse("m:2:grpc").protocol == "grpc"
    for bad in ("identity", "identity:x", "identity:0", "identity:4:xml", "a:1:json:2"):
        with pytest.raises(ValueError):
            pas.Point.parse(bad)


def _result(label: str, throughput: float, cpu: float | None) -> dict[str, object]:
    point = {"key": "identity:16", "client": {"throughput": throughput, "p50_us": 100.0,
                                               "p99_us": 400.0},
             "server": {"cpu_us_per_request": cpu, "average_batch": 1.5}}
    return {"label": label, "started": "now", "points": [point, {"key": "x:1", "error": "e"}]}


def test_compare_table_gives_after_over_before() -> None:
    table = pa_report.compare_table(_result("a", 5000.0, 150.0), _result("b", 10000.0, 60.0))
    row = next(line for line in table.splitlines() if line.startswith("identity:16"))
    assert row.split() == ["identity:16", "5000", "10000", "2.00", "100", "100", "1.00",
                           "400", "400", "1.00", "150.0", "60.0", "0.40"]
    assert "x:1" in table and "-" in next(r for r in table.splitlines() if r.startswith("x:1"))


def test_ab_medians_leave_failed_runs_out(capsys: pytest.CaptureFixture[str]) -> None:
    def run(side: str, throughput: float) -> dict[str, object]:
        r = _result(side, throughput, throughput / 100)["points"][0]  # type: ignore[index]
        return {**r, "side": side}

    runs = [run("base", 100), run("base", 300), run("base", 200), run("head", 400),
            {"key": "identity:16", "error": "unstable", "side": "head"}, run("head", 600)]
    (row,) = ab.summarize([pas.Point("identity", 16)], runs)
    assert row["base"]["infer/s"] == 200 and row["head"]["infer/s"] == 500
    assert row["ratio"]["infer/s"] == pytest.approx(2.5)
    assert row["ratio"]["CPU us/req"] == pytest.approx(2.5) and row["base"]["batch"] == 1.5
    for i, r in enumerate(runs):
        r["repeat"] = i // 2
    ab.print_summary([row], runs)
    out = capsys.readouterr().out
    medians_row = next(line for line in out.splitlines() if line.startswith("identity:16"))
    assert medians_row.split()[:4] == ["identity:16", "200", "500", "2.50"]
    assert "failed: unstable" in out


def test_ceiling_times_batches_by_the_clock_and_by_cpu_time() -> None:
    from ceiling import batch_timings

    model = str(ROOT / "engines" / "digits" / "1" / "model.onnx")
    one, eight = batch_timings(model, [1, 8], seconds=0.2)
    for t in (one, eight):
        assert t.calls > 0 and t.seconds >= 0.2
        assert t.rows_per_s == pytest.approx(t.calls * t.batch / t.seconds)
        # one ONNX Runtime thread: the process cannot use more CPU than the time that passed
        assert 0 < t.cpu_seconds <= t.seconds * 1.05 + 0.01
        assert t.cpu_us_per_batch == pytest.approx(t.cpu_seconds / t.calls * 1e6)
    assert (one.batch, eight.batch) == (1, 8)


def test_ceiling_times_single_calls_after_a_sleep() -> None:
    import time

    from ceiling import session_for, spaced_calls

    session = session_for(str(ROOT / "engines" / "digits" / "1" / "model.onnx"))
    started = time.perf_counter()
    times = spaced_calls(session, 4, gap_s=0.001, calls=50, warmup_calls=5)
    elapsed = time.perf_counter() - started
    assert times.shape == (50,) and (times > 0).all()
    # The sleeps are not in the figures: the calls took far less than the 55 ms slept.
    assert elapsed >= 0.055 and times.sum() < elapsed - 0.05


PERF_ANALYZER = pas.find_perf_analyzer()


@pytest.mark.skipif(PERF_ANALYZER is None, reason="perf_analyzer is not installed (it comes from "
                    "../shared/tools/install-perf-analyzer, which CI does not run)")
def test_perf_analyzer_sweep_measures_a_served_model(tmp_path: Path) -> None:
    port = free_port()
    proc = start_server(port, "--allow-metrics", "false")
    try:
        run = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "perf_analyzer_sweep.py"),
             "--url", f"http://127.0.0.1:{port}", "--server-pid", str(proc.pid),
             "--points", "identity:4", "identity:2:json", "digits:8", "-p", "500", "-s", "100",
             "--model-repository", str(ROOT / "engines"), "--ceiling-seconds", "0.2",
             "--label", "test", "--output-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=300,
        )
    finally:
        stop_server(proc)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "warning" not in run.stderr  # the pid given is the one listening on the port
    (out,) = tmp_path.glob("pa_*.json")
    result = json.loads(out.read_text())
    assert result["label"] == "test" and result["server_pid"] == proc.pid
    points = {p["key"]: p for p in result["points"]}
    assert list(points) == ["identity:4", "identity:2:json", "digits:8"]
    for p in points.values():
        c, s = p["client"], p["server"]
        assert c["throughput"] > 0 and 0 < c["p50_us"] <= c["p90_us"] <= c["p99_us"]
        # the server served at least what perf_analyzer counted in one of its windows
        assert s["requests"] >= c["throughput"] * 0.5
        assert 0 < s["cpu_us_per_request"] < 100_000 and s["average_batch"] >= 1
        assert 0 < c["cpu_us_per_request"] < 100_000  # perf_analyzer's own CPU
        assert sum(b["executions"] for b in s["batches"].values()) == s["executions"]
    cmd = points["identity:2:json"]["perf_analyzer"]["command"]
    assert cmd[cmd.index("--input-tensor-format") + 1] == "json"
    assert cmd[cmd.index("--output-tensor-format") + 1] == "json"
    ceiling = points["digits:8"]["ceiling"]
    assert ceiling["at_average_batch"]["rows_per_s"] > 0 and ceiling["per_batch"]
    assert all(b["in_process_us"] > 0 and b["ratio"] > 0 for b in ceiling["per_batch"])
    ratios = [b["ratio"] for b in ceiling["per_batch"]]
    assert min(ratios) <= ceiling["compute_infer_ratio_weighted"] <= max(ratios)
    assert "identity:4" in run.stdout
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    same = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "perf_analyzer_sweep.py"),
         "--compare", str(out), str(out), "--output-dir", str(tmp_path / "cmp")],
        capture_output=True, text=True, timeout=120,
    )
    assert same.returncode == 0, same.stdout + same.stderr
    row = next(r for r in same.stdout.splitlines() if r.startswith("identity:4"))
    assert row.split()[3::3] == ["1.00"] * 4  # a run against itself: every ratio is one
    assert (tmp_path / "cmp" / "compare.png").exists()


@pytest.mark.skipif(PERF_ANALYZER is None, reason="perf_analyzer is not installed (it comes from "
                    "../shared/tools/install-perf-analyzer, which CI does not run)")
def test_an_unsettled_point_is_measured_all_the_same_and_says_so(server: RunningServer) -> None:
    """Windows that must agree within 0.01% never do: a second run takes the mean of 3 windows
    whatever their spread, and the point is marked unsettled."""
    assert PERF_ANALYZER is not None
    settings = pas.Settings(PERF_ANALYZER, measurement_interval_ms=300, stability_percentage=0.01,
                            max_trials=3)
    row = pas.run_point(settings, pas.Point("identity", 2), pas.Target(server.http))
    pa = row["perf_analyzer"]
    assert pa["mode"] == "unsettled" and pa["attempts"] == 2
    assert pa["command"][pa["command"].index("-s") + 1] == "1000"
    assert row["client"]["throughput"] > 0
    # the server's window is the second run alone: at least the 3 windows perf_analyzer counted
    assert row["server"]["requests"] >= row["client"]["throughput"] * 3 * 0.3 * 0.9
    assert row["server"]["cpu_us_per_request"] is None  # no pid given: no CPU figures

    strict = pas.Settings(PERF_ANALYZER, measurement_interval_ms=200, stability_percentage=0.01,
                          max_trials=3, fallback_stability=None)
    with pytest.raises(pas.PerfAnalyzerError, match="exited with"):
        pas.run_point(strict, pas.Point("identity", 2), pas.Target(server.http))
