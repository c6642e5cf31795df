"""Scheduler sweep: `digits` under open-loop Poisson load, fixed max_queue_delay settings against
the latency target.

For each setting it writes a copy of engines/digits whose [dynamic_batching] table is that
setting into a temporary repository, starts `pyserver serve` on it, offers each rate (Poisson
arrivals, `loadgen.run_poisson`: latency counts from arrival, so a server that falls behind
shows it) for a warm-up and then --duration seconds, and prints per rate: the throughput
answered, p50/p99 latency, errors (503s from a full queue included) and the average batch size
(rows per execution, from /stats). With --repeats R the whole matrix runs R times, settings
interleaved, and the table shows medians.

    python benchmarks/scheduler_sweep.py [--rates 1000 4000 8000 12000] [--duration 5]
        [--settings delay=0 delay=500 delay=2000 target=2000 target=8000] [--repeats 1]
        [--output results.json]

A setting is delay=N (max_queue_delay_microseconds = N) or target=N
(latency_target_microseconds = N).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import build_request, model_stats, new_loop, run_poisson
from server_process import ROOT, free_port, start_server, stop_server

MODEL = "digits"


def batching_table(setting: str) -> str:
    kind, _, value = setting.partition("=")
    key = {"delay": "max_queue_delay_microseconds", "target": "latency_target_microseconds"}.get(kind)
    if key is None or not value.isdigit():
        raise SystemExit(f"a setting is delay=N or target=N, got {setting!r}")
    return f"[dynamic_batching]\n{key} = {value}\n"


def write_repository(root: Path, setting: str) -> Path:
    """engines/digits with its [dynamic_batching] table replaced by the setting's."""
    source = ROOT / "engines" / MODEL
    target = root / setting.replace("=", "_") / MODEL
    shutil.copytree(source / "1", target / "1")
    shutil.copytree(source / "reference", target / "reference")  # [monitoring]'s sample
    kept: list[str] = []
    skipping = False
    for line in (source / "config.toml").read_text().splitlines():
        if line.startswith("["):
            skipping = line.strip() == "[dynamic_batching]"
        if not skipping:
            kept.append(line)
    (target / "config.toml").write_text("\n".join(kept) + "\n" + batching_table(setting))
    return target.parent


def measure(setting: str, rates: list[float], args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    port = free_port()
    proc = start_server(port, repository=write_repository(root, setting))
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        payload = build_request(url, MODEL)
        loop = new_loop()
        for rate in rates:
            before = model_stats(url, MODEL)
            result = loop.run_until_complete(run_poisson(
                url, payload, rate, args.duration, warmup=args.warmup,
                connections=args.connections))
            after = model_stats(url, MODEL)
            executions = after["execution_count"] - before["execution_count"]
            inferences = after["inference_count"] - before["inference_count"]
            rows.append({
                "setting": setting, "offered": rate, "throughput": result.rate,
                "p50_us": result.percentile(50), "p99_us": result.percentile(99),
                "errors": result.errors,
                "avg_batch": inferences / executions if executions else 0.0,
            })
        loop.close()
    finally:
        stop_server(proc)
    return rows


def median_rows(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    merged = []
    for rows in zip(*runs):
        out = dict(rows[0])
        for key in ("throughput", "p50_us", "p99_us", "errors", "avg_batch"):
            out[key] = statistics.median(r[key] for r in rows)
        merged.append(out)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+",
                        default=["delay=0", "delay=500", "delay=2000", "target=2000", "target=8000"])
    parser.add_argument("--rates", type=float, nargs="+", default=[1000, 4000, 8000, 12000])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--output", type=Path, help="write the table's rows as JSON here")
    args = parser.parse_args()
    for setting in args.settings:
        batching_table(setting)  # refuse a bad setting before any run

    runs: dict[str, list[list[dict[str, Any]]]] = {s: [] for s in args.settings}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for setting in args.settings:
                runs[setting].append(measure(setting, args.rates, args, Path(tmp) / str(repeat)))

    table = [row for setting in args.settings for row in median_rows(runs[setting])]
    print(f"digits, open-loop Poisson arrivals, {args.duration:g} s windows after "
          f"{args.warmup:g} s warm-up, medians of {args.repeats} run(s)")
    print(f"{'setting':<14}{'offered/s':>10}{'answered/s':>12}{'p50 us':>10}{'p99 us':>10}"
          f"{'errors':>8}{'batch':>7}")
    for row in table:
        print(f"{row['setting']:<14}{row['offered']:>10.0f}{row['throughput']:>12.0f}"
              f"{row['p50_us']:>10.0f}{row['p99_us']:>10.0f}{row['errors']:>8.0f}"
              f"{row['avg_batch']:>7.1f}")
    if args.output is not None:
        args.output.write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
