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

from pa_figures import (  # noqa: E402  (re-exported: the sweep's figures are read there)
    CSV_COLUMNS,
    PerfAnalyzerError,
    Snapshot,
    cpu_ticks,
    input_data,
    listening_inodes,
    parse_csv,
    parse_proc_stat,
    pid_listens_on,
    server_window,
    snapshot_from_stats,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PERF_ANALYZER = "/opt/perf_analyzer/bin/perf_analyzer"
FORMATS = ("binary", "json")
PROTOCOLS = ("http", "grpc")
UNSTABLE = "Failed to obtain stable measurement"
__all__ = ["CSV_COLUMNS", "PerfAnalyzerError", "Point", "Settings", "Snapshot", "Target",
           "cpu_ticks", "find_perf_analyzer", "input_data", "listening_inodes", "parse_csv",
           "parse_proc_stat", "pid_listens_on", "run_point", "server_window",
           "snapshot_from_stats", "sweep"]

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
