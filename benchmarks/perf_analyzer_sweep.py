"""Measure a running v2 server with Triton's perf_analyzer, point by point: per (model,
concurrency, tensor format, protocol) one perf_analyzer run, recording infer/s and p50/p90/p99
(from its CSV report), and from the server's side, over the same run: CPU per request, the average
batch size and compute_infer per batch size (from /v2/models/{m}/stats).

    python benchmarks/perf_analyzer_sweep.py --url http://127.0.0.1:8000 --server-pid PID \
        --points identity:1 identity:16 identity:16:json digits:64 mlp:64 \
        --model-repository engines --output-dir benchmarks/results/pa --label mine
    python benchmarks/perf_analyzer_sweep.py --url http://127.0.0.1:8000 \
        --models identity digits --concurrency 1 16 64 --formats binary json
    python benchmarks/perf_analyzer_sweep.py --compare before.json after.json

Nothing is installed here: perf_analyzer comes from ../shared/tools/install-perf-analyzer (found
through $PERF_ANALYZER, then PATH, then /opt/perf_analyzer/bin/perf_analyzer).

CPU per request = (utime + stime of the server process, all its threads: fields 14 and 15 of
/proc/PID/stat, in clock ticks) over the perf_analyzer run, divided by the requests the model
served over the same run (the change of its `inference_stats.success.count`, read just before
and just after). perf_analyzer's own warm-up and stabilisation windows are inside the run: the
ratio covers them all, so it does not depend on which windows perf_analyzer kept.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PERF_ANALYZER = "/opt/perf_analyzer/bin/perf_analyzer"
FORMATS = ("binary", "json")
PROTOCOLS = ("http", "grpc")
UNSTABLE = "Failed to obtain stable measurement"

# perf_analyzer's CSV columns (latencies and their parts in microseconds) -> our names
CSV_COLUMNS = {
    "Concurrency": "concurrency",
    "Inferences/Second": "throughput",
    "Client Send": "client_send_us",
    "Network+Server Send/Recv": "network_us",
    "Server Queue": "server_queue_us",
    "Server Compute Input": "server_compute_input_us",
    "Server Compute Infer": "server_compute_infer_us",
    "Server Compute Output": "server_compute_output_us",
    "Client Recv": "client_recv_us",
    "p50 latency": "p50_us",
    "p90 latency": "p90_us",
    "p95 latency": "p95_us",
    "p99 latency": "p99_us",
}


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer failed or gave no report; the message ends with its output's tail."""


def find_perf_analyzer() -> str | None:
    for candidate in (os.environ.get("PERF_ANALYZER"), shutil.which("perf_analyzer"),
                      DEFAULT_PERF_ANALYZER):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


# --- what is measured ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Point:
    """One measurement: a model at a concurrency, over a protocol; for HTTP, the tensor format
    of both the request and the response (binary: the binary tensor extension; json: JSON)."""

    model: str
    concurrency: int
    tensor_format: str = "binary"
    protocol: str = "http"

    def __post_init__(self) -> None:
        if self.tensor_format not in FORMATS or self.protocol not in PROTOCOLS:
            raise ValueError(f"bad point {self}")
        if self.protocol == "grpc" and self.tensor_format != "binary":
            raise ValueError("gRPC carries tensors as protobuf: no tensor format to choose")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")

    @property
    def key(self) -> str:
        """`identity:16`, `identity:16:json`, `identity:16:grpc`: what --points takes."""
        suffix = ":grpc" if self.protocol == "grpc" else (
            ":json" if self.tensor_format == "json" else "")
        return f"{self.model}:{self.concurrency}{suffix}"

    @classmethod
    def parse(cls, text: str) -> Point:
        """MODEL:CONCURRENCY[:binary|json|grpc]"""
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[1].isdigit():
            raise ValueError(f"expected MODEL:CONCURRENCY[:binary|json|grpc], got {text!r}")
        kind = parts[2] if len(parts) == 3 else "binary"
        if kind == "grpc":
            return cls(parts[0], int(parts[1]), "binary", "grpc")
        if kind not in FORMATS:
            raise ValueError(f"expected binary, json or grpc after the concurrency, got {kind!r}")
        return cls(parts[0], int(parts[1]), kind, "http")


@dataclass(frozen=True)
class Target:
    """The server under test: its HTTP URL (metadata, statistics and -i http), its gRPC address
    for -i grpc, and its process id for CPU time (None: no CPU figures)."""

    url: str
    grpc_url: str | None = None
    pid: int | None = None

    def address(self, protocol: str) -> str:
        if protocol == "grpc":
            if not self.grpc_url:
                raise ValueError("a gRPC point needs the server's gRPC address (--grpc-url)")
            return self.grpc_url.split("://", 1)[-1]
        return self.url.split("://", 1)[-1].rstrip("/")


@dataclass
class Settings:
    perf_analyzer: str
    measurement_interval_ms: int = 3000
    stability_percentage: float = 25.0
    max_trials: int = 10
    unstable_retries: int = 0  # reruns with twice the stability percentage
    # After an unstable run, one more with this percentage, which any 3 windows meet: the
    # mean of 3 windows is reported as "unsettled". None: an unstable point fails.
    fallback_stability: float | None = 1000.0
    batch: int = 1
    extra_args: list[str] = field(default_factory=list)
    model_repository: Path | None = None  # where the in-process ceiling finds ONNX files
    ceiling_seconds: float = 1.0


# --- parsing (sans-IO) --------------------------------------------------------------------------

def parse_csv(text: str) -> dict[str, float]:
    """The one row of perf_analyzer's -f report for a single concurrency level."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if len(rows) != 1:
        raise PerfAnalyzerError(f"expected one row in perf_analyzer's CSV, got {len(rows)}")
    row = rows[0]
    missing = [c for c in ("Inferences/Second", "p50 latency", "p99 latency") if c not in row]
    if missing:
        raise PerfAnalyzerError(f"perf_analyzer's CSV lacks {missing}")
    return {ours: float(row[theirs]) for theirs, ours in CSV_COLUMNS.items() if row.get(theirs)}


def parse_proc_stat(text: str) -> int:
    """utime + stime (fields 14 and 15, clock ticks) from a /proc/PID/stat line. The command
    name (field 2) sits in parentheses and may hold spaces or ')': split after the last ')'."""
    after = text[text.rindex(")") + 2:].split()
    # `after` starts at field 3 (state): field n is after[n - 3]
    return int(after[14 - 3]) + int(after[15 - 3])


def cpu_ticks(pid: int) -> int:
    return parse_proc_stat(Path(f"/proc/{pid}/stat").read_text())


def listening_inodes(proc_net_tcp: str, port: int) -> set[str]:
    """Socket inodes listening (state 0A) on `port` in a /proc/net/tcp or tcp6 table."""
    inodes = set()
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            inodes.add(fields[9])
    return inodes


def pid_listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` holds the socket listening on `port`: a check that --server-pid
    names the server itself and not, say, a shell that started it (whose CPU would read 0)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            inodes |= listening_inodes(Path(table).read_text(), port)
        except OSError:
            pass
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


@dataclass(frozen=True)
class Snapshot:
    """The server's counters at one instant."""

    cpu_ticks: int | None
    success: int
    inference_count: int
    execution_count: int
    # batch size -> (executions, compute_infer ns)
    compute_infer: dict[int, tuple[int, int]]
    monotonic: float


def snapshot_from_stats(stats: dict[str, Any], ticks: int | None, now: float) -> Snapshot:
    """From a /v2/models/{m}/stats answer (every version entry summed)."""
    success = inference = execution = 0
    per_batch: dict[int, tuple[int, int]] = {}
    for entry in stats["model_stats"]:
        success += int(entry["inference_stats"]["success"]["count"])
        inference += int(entry["inference_count"])
        execution += int(entry["execution_count"])
        for b in entry.get("batch_stats", []):
            count, ns = per_batch.get(int(b["batch_size"]), (0, 0))
            per_batch[int(b["batch_size"])] = (count + int(b["compute_infer"]["count"]),
                                               ns + int(b["compute_infer"]["ns"]))
    return Snapshot(ticks, success, inference, execution, per_batch, now)


def server_window(before: Snapshot, after: Snapshot, clock_ticks: int) -> dict[str, Any]:
    """The server's side of one run: requests served, CPU seconds and CPU per request, average
    batch size, and per batch size seen, the executions and average compute_infer per batch."""
    requests = after.success - before.success
    executions = after.execution_count - before.execution_count
    wall = after.monotonic - before.monotonic
    out: dict[str, Any] = {
        "requests": requests,
        "inferences": after.inference_count - before.inference_count,
        "executions": executions,
        "wall_s": wall,
        "average_batch": (after.inference_count - before.inference_count) / executions
        if executions else None,
        "cpu_s": None, "cpu_cores": None, "cpu_us_per_request": None,
    }
    if before.cpu_ticks is not None and after.cpu_ticks is not None:
        cpu_s = (after.cpu_ticks - before.cpu_ticks) / clock_ticks
        out["cpu_s"] = cpu_s
        out["cpu_cores"] = cpu_s / wall if wall > 0 else None
        out["cpu_us_per_request"] = cpu_s * 1e6 / requests if requests else None
    batches = {}
    for size, (count, ns) in sorted(after.compute_infer.items()):
        c0, ns0 = before.compute_infer.get(size, (0, 0))
        if count > c0:
            batches[str(size)] = {"executions": count - c0,
                                  "compute_infer_us": (ns - ns0) / (count - c0) / 1000}
    out["batches"] = batches
    return out


def input_data(metadata: dict[str, Any], config: dict[str, Any]) -> tuple[dict[str, Any],
                                                                          list[str]]:
    """perf_analyzer's --input-data JSON for one request of batch 1, from the model's metadata
    and config, and the --shape arguments its variable dimensions need (each set to 1). Values
    are small and exact in JSON (perf_analyzer's own random FP32 data is not JSON-safe)."""
    batched = int(config.get("max_batch_size", 0)) > 0
    row: dict[str, Any] = {}
    shapes = []
    for t in metadata["inputs"]:
        dims = [1 if d < 0 else int(d) for d in (t["shape"][1:] if batched else t["shape"])]
        if any(d < 0 for d in (t["shape"][1:] if batched else t["shape"])):
            shapes.append(f"{t['name']}:{','.join(map(str, dims))}")
        n = 1
        for d in dims:
            n *= d
        dtype = t["datatype"]
        content: list[Any]
        if dtype.startswith("FP") or dtype == "BF16":
            content = [float((i * 7) % 16) / 4 for i in range(n)]
        elif dtype.startswith(("INT", "UINT")):
            content = [(i * 7) % 16 for i in range(n)]
        elif dtype == "BOOL":
            content = [i % 2 == 0 for i in range(n)]
        elif dtype == "BYTES":
            content = ["pyserver"] * n
        else:
            raise ValueError(f"input {t['name']}: no test data for datatype {dtype}")
        row[t["name"]] = {"content": content, "shape": dims}
    return {"data": [row]}, shapes


# --- running ------------------------------------------------------------------------------------

def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def take_snapshot(target: Target, model: str) -> Snapshot:
    ticks = cpu_ticks(target.pid) if target.pid is not None else None
    stats = get_json(f"{target.url.rstrip('/')}/v2/models/{model}/stats")
    return snapshot_from_stats(stats, ticks, time.monotonic())


def perf_analyzer_command(settings: Settings, point: Point, target: Target, data_path: Path,
                          csv_path: Path, shapes: list[str], stability: float) -> list[str]:
    # Not --request-count: perf_analyzer 2.60 then reports throughput over a duration rounded
    # to whole seconds (60,000 requests read 8,568.8/s in six runs of 6.1-6.9 s), and one such
    # run never returned under heavy load.
    cmd = [settings.perf_analyzer, "-m", point.model, "-u", target.address(point.protocol),
           "-i", point.protocol, "-b", str(settings.batch),
           "--concurrency-range", f"{point.concurrency}:{point.concurrency}",
           "-p", str(settings.measurement_interval_ms), "-s", f"{stability:g}",
           "-r", str(settings.max_trials), "--input-data", str(data_path), "-f", str(csv_path)]
    if point.protocol == "http":
        cmd += ["--input-tensor-format", point.tensor_format,
                "--output-tensor-format", point.tensor_format]
    for s in shapes:
        cmd += ["--shape", s]
    return cmd + settings.extra_args


def run_point(settings: Settings, point: Point, target: Target) -> dict[str, Any]:
    """One perf_analyzer measurement, with the server's counters read just before and just
    after it. On this shared machine perf_analyzer's windows may never agree within the
    stability percentage: then (after `unstable_retries` reruns with twice the percentage) one
    more run takes the mean of its first 3 windows whatever their spread;
    `perf_analyzer.mode` says "stable" or "unsettled"."""
    base = target.url.rstrip("/")
    metadata = get_json(f"{base}/v2/models/{point.model}")
    config = get_json(f"{base}/v2/models/{point.model}/config")
    data, shapes = input_data(metadata, config)
    clock_ticks = os.sysconf("SC_CLK_TCK")
    stability = settings.stability_percentage
    unsettled = False
    attempts = 0
    # the most a run can take: its windows (and a margin for start-up and slow windows)
    timeout = (settings.max_trials + 2) * settings.measurement_interval_ms / 1000 * 2 + 60
    with tempfile.TemporaryDirectory(prefix="pa-") as tmp:
        data_path, csv_path = Path(tmp) / "input.json", Path(tmp) / "report.csv"
        data_path.write_text(json.dumps(data))
        while True:
            attempts += 1
            cmd = perf_analyzer_command(settings, point, target, data_path, csv_path, shapes,
                                        stability)
            before = take_snapshot(target, point.model)
            started, children = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired as e:
                raise PerfAnalyzerError(f"perf_analyzer did not return within {timeout:.0f} s "
                                        f"for {point.key}; killed") from e
            seconds = time.monotonic() - started
            after = take_snapshot(target, point.model)
            waited = resource.getrusage(resource.RUSAGE_CHILDREN)
            client_cpu_s = (waited.ru_utime + waited.ru_stime
                            - children.ru_utime - children.ru_stime)
            output = proc.stdout + proc.stderr
            if proc.returncode == 0 and csv_path.exists():
                break
            if UNSTABLE in output and not unsettled:
                if attempts <= settings.unstable_retries:
                    stability *= 2
                    continue
                if settings.fallback_stability is not None:
                    stability, unsettled = settings.fallback_stability, True
                    continue
            raise PerfAnalyzerError(
                f"perf_analyzer exited with {proc.returncode} for {point.key}:\n{output[-2000:]}")
        report = csv_path.read_text()
    server = server_window(before, after, clock_ticks)
    # perf_analyzer's own CPU per request served: on a small machine it competes with the server
    client: dict[str, float | None] = {
        **parse_csv(report), "cpu_s": client_cpu_s,
        "cpu_us_per_request": client_cpu_s * 1e6 / server["requests"]
        if server["requests"] else None,
    }
    result: dict[str, Any] = {
        **asdict(point), "key": point.key, "batch": settings.batch,
        "client": client, "server": server,
        "perf_analyzer": {"command": cmd, "seconds": seconds, "attempts": attempts,
                          "mode": "unsettled" if unsettled else "stable",
                          "stability_percentage": stability, "csv": report},
    }
    if settings.model_repository is not None:
        result["ceiling"] = in_process_ceiling(settings, config, result)
    return result


def _model_file(repository: Path, model: str, config: dict[str, Any]) -> Path | None:
    folder = repository / model
    versions = sorted((int(p.name) for p in folder.glob("[1-9]*") if p.name.isdigit()),
                      reverse=True)
    name = config.get("default_model_filename") or "model.onnx"
    for v in versions:
        if (folder / str(v) / name).is_file():
            return folder / str(v) / name
    return None


def in_process_ceiling(settings: Settings, config: dict[str, Any],
                       result: dict[str, Any]) -> dict[str, Any] | None:
    """For an ONNX Runtime model: the same file called in this process (one thread; the
    model's intra_op_num_threads, 1 if unset) at the average batch size the server reached and
    at the batch sizes it formed most often; the server's throughput as a share of the ceiling,
    and its compute_infer per batch against the in-process time of the same batch.

    The in-process figures are taken by CPU time (see ceiling.py): on a busy machine the wall
    clock charges the model for the time its thread waited for a core, and would flatter the
    server. The wall-clock figures are kept beside them."""
    if config.get("backend") != "onnxruntime" or settings.model_repository is None:
        return None
    path = _model_file(settings.model_repository, config["name"], config)
    server = result["server"]
    if path is None or not server["average_batch"]:
        return None
    from ceiling import batch_timings

    threads = int(config.get("parameters", {}).get("intra_op_num_threads", {})
                  .get("string_value", "1") or 1)
    at_average = max(1, round(server["average_batch"]))
    common = sorted(server["batches"].items(), key=lambda kv: -kv[1]["executions"])[:3]
    sizes = sorted({at_average, *(int(size) for size, _ in common)})
    timings = {t.batch: t for t in batch_timings(str(path), sizes, settings.ceiling_seconds,
                                                 threads)}
    per_batch = []
    for size, figures in common:
        t = timings[int(size)]
        per_batch.append({"batch": int(size), "executions": figures["executions"],
                          "server_compute_infer_us": figures["compute_infer_us"],
                          "in_process_us": t.cpu_us_per_batch,
                          "in_process_wall_us": t.us_per_batch,
                          "ratio": figures["compute_infer_us"] / t.cpu_us_per_batch})
    ceil = timings[at_average]
    # over the sizes timed, weighted by how often the server ran each
    weighted = (sum(b["executions"] * b["server_compute_infer_us"] for b in per_batch)
                / sum(b["executions"] * b["in_process_us"] for b in per_batch))
    return {"model_file": str(path), "intra_op_threads": threads,
            "compute_infer_ratio_weighted": weighted,
            "at_average_batch": {"batch": at_average, "rows_per_s": ceil.cpu_rows_per_s,
                                 "rows_per_s_wall": ceil.rows_per_s,
                                 "server_share": result["client"]["throughput"] /
                                 ceil.cpu_rows_per_s},
            "per_batch": per_batch}


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "loadavg": list(os.getloadavg())}


def sweep(settings: Settings, target: Target, points: list[Point], label: str,
          quiet: bool = False) -> dict[str, Any]:
    """Every point in turn; a point perf_analyzer could not measure is kept with its error."""
    from pa_report import print_header, print_row

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    before = machine()
    rows = []
    if not quiet:
        print_header()
    for point in points:
        try:
            row = run_point(settings, point, target)
        except PerfAnalyzerError as e:
            row = {**asdict(point), "key": point.key, "error": str(e)}
        rows.append(row)
        if not quiet:
            print_row(row)
    settings_out = {k: (str(v) if isinstance(v, Path) else v)
                    for k, v in asdict(settings).items()}
    return {"label": label, "url": target.url, "grpc_url": target.grpc_url,
            "server_pid": target.pid, "started": started, "machine": before,
            "loadavg_after": list(os.getloadavg()), "settings": settings_out, "points": rows}


def points_from_args(args: argparse.Namespace) -> list[Point]:
    if args.points:
        return [Point.parse(p) for p in args.points]
    out = []
    for model in args.models:
        for protocol in args.protocols:
            formats = args.formats if protocol == "http" else ["binary"]
            for fmt in formats:
                out += [Point(model, c, fmt, protocol) for c in args.concurrency]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000",
                        help="the server's HTTP URL (metadata, /stats, and -i http)")
    parser.add_argument("--grpc-url", help="the server's gRPC host:port, for --protocols grpc")
    parser.add_argument("--server-pid", type=int, help="the server's process id: CPU figures")
    parser.add_argument("--points", nargs="+", metavar="MODEL:C[:json|grpc]",
                        help="explicit points (instead of models x concurrency x ...)")
    parser.add_argument("--models", nargs="+", default=["identity"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=["binary"])
    parser.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=["http"])
    parser.add_argument("-p", "--measurement-interval", type=int, default=3000,
                        help="perf_analyzer's window, ms (default %(default)s)")
    parser.add_argument("-s", "--stability-percentage", type=float, default=25.0,
                        help="perf_analyzer's -s; 25 (not its 10) for a shared machine")
    parser.add_argument("-r", "--max-trials", type=int, default=10)
    parser.add_argument("--no-fallback", action="store_true",
                        help="a point whose windows do not settle fails (default: one more run "
                             "reports the mean of 3 windows as unsettled)")
    parser.add_argument("-b", "--batch", type=int, default=1, help="rows per request")
    parser.add_argument("--model-repository", type=Path,
                        help="the server's model repository: ONNX models get the in-process "
                             "ceiling at the batch sizes the server formed")
    parser.add_argument("--ceiling-seconds", type=float, default=1.0)
    parser.add_argument("--perf-analyzer", help="path of perf_analyzer (default: found)")
    parser.add_argument("--pa-arg", action="append", default=[], metavar="ARG",
                        help="one more argument for perf_analyzer (repeatable)")
    parser.add_argument("--label", help="this run's name in tables and plots")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "benchmarks" / "results" / "pa")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                        help="print BEFORE and AFTER side by side with ratios; measure nothing")
    args = parser.parse_args(argv)

    from pa_report import compare_table, load, plot_results

    if args.compare:
        before, after = (load(p) for p in args.compare)
        print(compare_table(before, after))
        if args.output_dir:
            args.output_dir.mkdir(parents=True, exist_ok=True)
            plot_results([before, after], args.output_dir / "compare.png")
        return 0
    pa = args.perf_analyzer or find_perf_analyzer()
    if pa is None:
        print("perf_analyzer not found: install it with ../shared/tools/install-perf-analyzer "
              "(or set $PERF_ANALYZER)", file=sys.stderr)
        return 2
    settings = Settings(pa, args.measurement_interval, args.stability_percentage,
                        args.max_trials,
                        fallback_stability=None if args.no_fallback else 1000.0,
                        batch=args.batch, extra_args=args.pa_arg,
                        model_repository=args.model_repository,
                        ceiling_seconds=args.ceiling_seconds)
    target = Target(args.url, args.grpc_url, args.server_pid)
    port = urllib.parse.urlsplit(args.url).port
    if args.server_pid is not None and port and not pid_listens_on(args.server_pid, port):
        print(f"warning: process {args.server_pid} does not listen on port {port}: the CPU "
              "figures are that process's, not the server's", file=sys.stderr)
    result = sweep(settings, target, points_from_args(args), args.label or args.url)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    name = "pa_" + time.strftime("%Y%m%d-%H%M%S") + ".json"
    (args.output_dir / name).write_text(json.dumps(result, indent=1))
    plot_results([result], args.output_dir / name.replace(".json", ".png"))
    print(f"wrote {args.output_dir / name} and its .png")
    return 1 if any("error" in p for p in result["points"]) else 0


if __name__ == "__main__":
    sys.exit(main())
