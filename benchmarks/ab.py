"""Before/after in one run: a given commit (the base) and the working tree (the head), each served
by its own `pyserver serve`, measured by perf_analyzer alternately, so that the ratios come from
the same minutes of a noisy machine.

    python benchmarks/ab.py --base d6aaa2f
    python benchmarks/ab.py --base d6aaa2f --repeats 5 --points identity:16 digits:64 mlp:64 \
        identity:1 identity:16:json

The base is checked out with `git worktree` under benchmarks/results/ab/<sha>/src and installed
(`pip install <src>`, not editable) into benchmarks/results/ab/<sha>/venv; both are kept, so a
second run against the same commit reuses them. The head is served by this interpreter (the
working tree's virtualenv, where pyserver is installed editable). Both servers load the same
model repository: the working tree's engines/ plus the benchmark MLP (benchmarks/make_mlp.py),
linked into a temporary folder.

Both servers are started once. For each repeat, for each point, each server gets one
perf_analyzer run (see perf_analyzer_sweep.py), the base first in even repeats and the head first
in odd ones; only one server is under load at a time. The table gives per point the median over
the repeats of infer/s, p50, p99 and CPU per request for both, and head/base ratios of the medians;
the JSON (benchmarks/results/ab/ab_<time>.json) keeps every run.

A gRPC point (`identity:16:grpc`) needs each server's gRPC port: pass the serve flag with the
placeholder, e.g. `--serve-arg=--grpc-port={grpc_port}` (both servers) or --head-serve-arg.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_mlp import link_engines, write_mlp  # noqa: E402
from pa_report import FIGURES, figure, fmt, plot_results, ratio  # noqa: E402
from perf_analyzer_sweep import (  # noqa: E402
    PerfAnalyzerError,
    Point,
    Settings,
    Target,
    find_perf_analyzer,
    machine,
    run_point,
)
from server_process import free_port, stop_server  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
AB_ROOT = ROOT / "benchmarks" / "results" / "ab"
DEFAULT_POINTS = ["identity:1", "identity:16", "identity:16:json", "digits:64", "mlp:64"]
INSTALLED = ".pyserver-installed"


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()


def head_label() -> str:
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT).returncode != 0
    return git("rev-parse", "--short", "HEAD") + ("+changes" if dirty else "")


def prepare_base(base: str, ab_root: Path = AB_ROOT) -> tuple[str, Path]:
    """The base commit's full sha and the virtualenv it is installed in (made once per sha)."""
    sha = git("rev-parse", "--verify", f"{base}^{{commit}}")
    folder = ab_root / sha
    src, venv = folder / "src", folder / "venv"
    marker = venv / INSTALLED
    if marker.is_file() and marker.read_text().strip() == sha:
        return sha, venv
    if not (src / ".git").exists():
        git("worktree", "prune")  # forget a checkout whose folder was deleted
        folder.mkdir(parents=True, exist_ok=True)
        git("worktree", "add", "--detach", str(src), sha)
    if venv.exists():
        shutil.rmtree(venv)
    print(f"building {sha[:10]} into {venv} (a few minutes; once per commit)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run(["nice", "-n", "10", *pip, str(src)], check=True, cwd=folder)
    marker.write_text(sha + "\n")
    return sha, venv


def make_repository(ab_root: Path, engines: Path | None = None) -> Path:
    """engines/* (the working tree's, or `engines`: the base checkout's own, whose configs its
    server understands) linked and the benchmark MLP written into a fresh folder (removed
    after)."""
    repo = Path(tempfile.mkdtemp(prefix="repository-", dir=ab_root))
    link_engines(repo, engines)
    write_mlp(repo)
    return repo


@dataclass
class Server:
    name: str  # "base" or "head"
    label: str
    command: list[str]
    cwd: Path
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> Target:
        assert self.proc is not None
        return Target(f"http://127.0.0.1:{self.http_port}", f"127.0.0.1:{self.grpc_port}",
                      self.proc.pid)

    def start(self, repository: Path, serve_args: list[str], log: Path) -> None:
        args = [a.format(grpc_port=self.grpc_port, http_port=self.http_port) for a in serve_args]
        cmd = [*self.command, "serve", "--model-repository", str(repository),
               "--host", "127.0.0.1", "--http-port", str(self.http_port), *args]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} server exited with {self.proc.returncode}; "
                                   f"see {log}")
            try:
                url = f"http://127.0.0.1:{self.http_port}/v2/health/ready"
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"{self.name} server not ready after 180 s; see {log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_server(self.proc)


def medians(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    """Median over the repeats of each figure (failed runs left out)."""
    out: dict[str, float | None] = {}
    for title, read, _ in FIGURES:
        values = [v for v in (figure(r, read) for r in runs) if v is not None]
        out[title] = statistics.median(values) if values else None
    extra = {
        "batch": lambda p: p["server"]["average_batch"],
        # with --ceiling: infer/s over the in-process ceiling at the server's average batch, and
        # compute_infer per batch over the in-process time, for the batch size formed most often
        "ceiling share": lambda p: p["ceiling"]["at_average_batch"]["server_share"],
        "compute_infer/in-process": lambda p: p["ceiling"]["per_batch"][0]["ratio"],
        "weighted compute_infer/in-process":
            lambda p: p["ceiling"]["compute_infer_ratio_weighted"],
    }
    for name, read in extra.items():
        values = [v for v in (figure(r, read) for r in runs) if v is not None]
        out[name] = statistics.median(values) if values else None
    return out


def summarize(points: list[Point], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for point in points:
        mine = [r for r in runs if r["key"] == point.key]
        base = medians([r for r in mine if r["side"] == "base"])
        head = medians([r for r in mine if r["side"] == "head"])
        rows.append({"key": point.key, "base": base, "head": head,
                     "ratio": {t: ratio(head[t], base[t]) for t in base}})
    return rows


def print_summary(summary: list[dict[str, Any]], runs: list[dict[str, Any]]) -> None:
    titles = [(t, spec) for t, _, spec in FIGURES]
    print("\nmedians over the repeats (ratio = head / base)")
    print(f"{'point':<18}" + "".join(f" {t + ' base':>15} {'head':>8} {'ratio':>6}"
                                     for t, _ in titles) + f" {'batch b/h':>11}")
    for row in summary:
        cells = "".join(f" {fmt(row['base'][t], s):>15} {fmt(row['head'][t], s):>8} "
                        f"{fmt(row['ratio'][t], '{:.2f}'):>6}" for t, s in titles)
        batch = f"{fmt(row['base']['batch'], '{:.1f}')}/{fmt(row['head']['batch'], '{:.1f}')}"
        print(f"{row['key']:<18}{cells} {batch:>11}")
    ceilings = [row for row in summary if row["head"]["ceiling share"] is not None]
    if ceilings:
        print("\nagainst the in-process ONNX Runtime ceiling (medians; base / head)")
        print(f"{'point':<18} {'share of ceiling':>18} {'compute_infer / in-process':>28} "
              f"{'(weighted)':>14}   (at the batch size run most often; weighted over the "
              "3 sizes run most often)")
        for row in ceilings:
            share = "/".join(fmt(row[s]["ceiling share"], "{:.0%}") for s in ("base", "head"))
            ci, weighted = ("/".join(fmt(row[s][key], "{:.2f}") for s in ("base", "head"))
                            for key in ("compute_infer/in-process",
                                        "weighted compute_infer/in-process"))
            print(f"{row['key']:<18} {share:>18} {ci:>28} {weighted:>14}")
    print("\nevery run")
    print(f"{'rep':>3} {'point':<18} {'side':<6}" + "".join(f" {t:>10}" for t, _ in titles)
          + "  windows (stable: within the stability percentage; unsettled: the mean of 3 that "
            "were not)")
    for r in runs:
        cells = "".join(f" {fmt(figure(r, read), spec):>10}" for _, read, spec in FIGURES)
        if "error" in r:
            note = f"  failed: {r['error'].splitlines()[0]}"
        else:
            note = "  " + r.get("perf_analyzer", {}).get("mode", "-")
        print(f"{r['repeat']:>3} {r['key']:<18} {r['side']:<6}{cells}{note}")


def measure(servers: dict[str, Server], points: list[Point], settings: Settings, repeats: int,
            warmup: bool) -> list[dict[str, Any]]:
    if warmup:  # a short run per point on each server: first-call costs stay out of the repeats
        quick = Settings(settings.perf_analyzer, 500, 100.0, 3, fallback_stability=None,
                         batch=settings.batch, extra_args=settings.extra_args)
        for point in points:
            for server in servers.values():
                try:
                    run_point(quick, point, server.target)
                except PerfAnalyzerError:  # not stable in 3 short windows: warm all the same
                    pass
    runs = []
    for repeat in range(repeats):
        order = ["base", "head"] if repeat % 2 == 0 else ["head", "base"]
        for point in points:
            for name in order:
                try:
                    run = run_point(settings, point, servers[name].target)
                except PerfAnalyzerError as e:
                    run = {"key": point.key, "error": str(e)}
                runs.append({**run, "side": name, "repeat": repeat})
                done = "failed" if "error" in run else \
                    f"{run['client']['throughput']:.0f} infer/s"
                print(f"repeat {repeat} {point.key:<18} {name}: {done}", flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare with (any git ref)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--points", nargs="+", default=DEFAULT_POINTS,
                        metavar="MODEL:C[:json|grpc]")
    parser.add_argument("-p", "--measurement-interval", type=int, default=3000,
                        help="perf_analyzer's window, ms (default %(default)s)")
    parser.add_argument("-s", "--stability-percentage", type=float, default=25.0)
    parser.add_argument("-r", "--max-trials", type=int, default=6,
                        help="perf_analyzer's windows before a run is called unsettled and "
                             "rerun for the mean of 3 windows (default %(default)s)")
    parser.add_argument("--serve-arg", action="append", default=None, metavar="ARG",
                        help="a `pyserver serve` argument for both servers ({grpc_port} and "
                             "{http_port} are filled in); default: --allow-metrics false "
                             "--log-level warning")
    parser.add_argument("--base-serve-arg", action="append", default=[], metavar="ARG")
    parser.add_argument("--head-serve-arg", action="append", default=[], metavar="ARG")
    parser.add_argument("--no-warmup", action="store_true")
    parser.add_argument("--ceiling", action="store_true",
                        help="also the in-process ceiling of ONNX models after each run")
    parser.add_argument("--build-only", action="store_true",
                        help="prepare the base's checkout and virtualenv, measure nothing")
    parser.add_argument("--output-dir", type=Path, default=AB_ROOT)
    args = parser.parse_args(argv)

    AB_ROOT.mkdir(parents=True, exist_ok=True)
    sha, venv = prepare_base(args.base)
    if args.build_only:
        print(f"{sha} ready in {venv}")
        return 0
    pa = find_perf_analyzer()
    if pa is None:
        print("perf_analyzer not found: ../shared/tools/install-perf-analyzer", file=sys.stderr)
        return 2
    points = [Point.parse(p) for p in args.points]
    serve_args = args.serve_arg if args.serve_arg is not None else \
        ["--allow-metrics", "false", "--log-level", "warning"]
    repository = make_repository(AB_ROOT)
    base_repository = make_repository(AB_ROOT, AB_ROOT / sha / "src" / "engines")
    settings = Settings(pa, args.measurement_interval, args.stability_percentage,
                        args.max_trials,
                        model_repository=repository if args.ceiling else None)
    servers = {
        "base": Server("base", sha[:10], [str(venv / "bin" / "pyserver")], AB_ROOT / sha),
        "head": Server("head", head_label(), [sys.executable, "-m", "pyserver"], ROOT),
    }
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    before = machine()
    try:
        for name, server in servers.items():
            extra = args.base_serve_arg if name == "base" else args.head_serve_arg
            server.start(base_repository if name == "base" else repository, serve_args + extra,
                         AB_ROOT / f"server-{name}.log")
        runs = measure(servers, points, settings, args.repeats, not args.no_warmup)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(repository, ignore_errors=True)
        shutil.rmtree(base_repository, ignore_errors=True)
    summary = summarize(points, runs)
    print_summary(summary, runs)
    result = {"base": {"sha": sha, "label": servers["base"].label},
              "head": {"label": servers["head"].label}, "started": started,
              "machine": before, "loadavg_after": list(os.getloadavg()),
              "settings": {"repeats": args.repeats, "measurement_interval_ms":
                           args.measurement_interval, "stability_percentage":
                           args.stability_percentage, "serve_args": serve_args},
              "summary": summary, "runs": runs}
    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir / ("ab_" + time.strftime("%Y%m%d-%H%M%S") + ".json")
    out.write_text(json.dumps(result, indent=1))
    plot_results([{"label": f"{name} {servers[name].label}", "points": [
        {"key": row["key"], "client": {"throughput": row[name]["infer/s"],
                                       "p99_us": row[name]["p99 us"]},
         "server": {"cpu_us_per_request": row[name]["CPU us/req"]}} for row in summary]}
        for name in ("base", "head")], out.with_suffix(".png"))
    print(f"\nload average before {before['loadavg']}, after {result['loadavg_after']}")
    print(f"wrote {out} and its .png")
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
