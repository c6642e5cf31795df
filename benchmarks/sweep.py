"""Load sweep against a running v2 server: closed-loop concurrency levels and open-loop Poisson
request rates, each for a window, repeated; writes a JSON results file and PNG plots
(throughput against p99 latency; p50/p90/p99 by load) and prints a table.

Only the public HTTP API is used (model metadata, then binary-tensor infer requests from the
project's asyncio client, benchmarks/loadgen.py), so the same sweep runs against any KServe v2
server, Triton included; --compare draws earlier result files on the same plots, so two servers
measured by the same client sit side by side.

    python benchmarks/sweep.py --url http://127.0.0.1:8000 --model identity \
        --concurrency 1 4 16 64 --rate 500 1000 2000 --duration 5 --repeats 3 \
        --output-dir benchmarks/results/identity
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import (  # noqa: E402
    LoadResult,
    build_request,
    model_stats,
    new_loop,
    run_load,
    run_poisson,
)

PERCENTILES = (50, 90, 99)


def summarize(result: LoadResult) -> dict[str, Any]:
    return {
        "seconds": round(result.seconds, 3),
        "requests": result.requests,
        "errors": result.errors,
        "throughput": result.rate,
        **{f"p{p}_us": result.percentile(p) for p in PERCENTILES},
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ["throughput", *(f"p{p}_us" for p in PERCENTILES)]
    out = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["errors"] = sum(r["errors"] for r in runs)
    out["requests"] = sum(r["requests"] for r in runs)
    return out


def counts(url: str, model: str) -> tuple[int, int] | None:
    """(inference_count, execution_count) from the statistics extension, where the server has
    it (pyserver and Triton do)."""
    try:
        stats = model_stats(url, model)
        return int(stats["inference_count"]), int(stats["execution_count"])
    except (OSError, KeyError, ValueError, IndexError):
        return None


def average_batch(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    if before is None or after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    payload = build_request(args.url, args.model, args.batch)
    closed, opened = [], []
    with asyncio.Runner(loop_factory=new_loop) as runner:
        if args.warmup_first > 0:
            runner.run(run_load(args.url, payload, max(args.concurrency or [4]), args.warmup_first, 0))
        for level in args.concurrency:
            before = counts(args.url, args.model)
            runs = [summarize(runner.run(run_load(args.url, payload, level, args.duration,
                                                  args.warmup)))
                    for _ in range(args.repeats)]
            closed.append({"concurrency": level, "runs": runs, "median": median_of(runs),
                           "average_batch": average_batch(before, counts(args.url, args.model))})
            print_row(f"c={level}", closed[-1])
        for rate in args.rate:
            before = counts(args.url, args.model)
            runs = [summarize(runner.run(run_poisson(args.url, payload, rate, args.duration,
                                                     args.warmup, args.connections, seed=i)))
                    for i in range(args.repeats)]
            opened.append({"rate": rate, "runs": runs, "median": median_of(runs),
                           "average_batch": average_batch(before, counts(args.url, args.model))})
            print_row(f"rate={rate:g}/s", opened[-1])
    return {
        "label": args.label or args.url,
        "url": args.url,
        "model": args.model,
        "batch": args.batch,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "settings": {"duration_s": args.duration, "warmup_s": args.warmup,
                     "repeats": args.repeats, "connections": args.connections},
        "closed_loop": closed,
        "open_loop": opened,
    }


def print_header() -> None:
    print(f"{'load':>14} {'infer/s':>10} {'p50 us':>9} {'p90 us':>9} {'p99 us':>9} "
          f"{'errors':>7} {'batch':>6}")


def print_row(load: str, row: dict[str, Any]) -> None:
    m, batch = row["median"], row["average_batch"]
    print(f"{load:>14} {m['throughput']:10.0f} {m['p50_us']:9.0f} {m['p90_us']:9.0f} "
          f"{m['p99_us']:9.0f} {m['errors']:7d} {'' if batch is None else f'{batch:6.1f}'}",
          flush=True)


def plot(results: list[dict[str, Any]], output_dir: Path) -> list[Path]:
    """throughput_vs_p99.png and latency_by_load.png, one series per results file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for res in results:
        for kind, key, marker in (("closed_loop", "concurrency", "o-"), ("open_loop", "rate", "s--")):
            rows = res[kind]
            if rows:
                ax.plot([r["median"]["throughput"] for r in rows],
                        [r["median"]["p99_us"] / 1000 for r in rows], marker,
                        label=f"{res['label']} ({'concurrency' if key == 'concurrency' else 'Poisson rate'})")
    ax.set_xlabel("throughput (infer/s)")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"{results[0]['model']}: throughput against p99 latency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(output_dir / "throughput_vs_p99.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, kind, key, xlabel in ((axes[0], "closed_loop", "concurrency", "concurrency (closed loop)"),
                                  (axes[1], "open_loop", "rate", "offered rate, infer/s (Poisson)")):
        for res in results:
            rows = res[kind]
            if not rows:
                continue
            for p, style in zip(PERCENTILES, ("-", "--", ":")):
                ax.plot([r[key] for r in rows], [r["median"][f"p{p}_us"] / 1000 for r in rows],
                        style, marker="o", label=f"{res['label']} p{p}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("latency (ms)")
        ax.set_yscale("log")
        if kind == "closed_loop":
            ax.set_xscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{results[0]['model']}: latency percentiles by load")
    fig.tight_layout()
    paths.append(output_dir / "latency_by_load.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="any KServe v2 server")
    parser.add_argument("--model", default="identity")
    parser.add_argument("--batch", type=int, default=1, help="rows per request")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 16, 64],
                        help="closed-loop levels (connections each keeping one request in flight)")
    parser.add_argument("--rate", type=float, nargs="*", default=[],
                        help="open-loop Poisson arrival rates, requests/s")
    parser.add_argument("--connections", type=int, default=64,
                        help="connection pool of the open-loop client")
    parser.add_argument("--duration", type=float, default=5.0, help="measured window, s")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured lead-in per window, s")
    parser.add_argument("--warmup-first", type=float, default=2.0,
                        help="one unmeasured run before the sweep, s")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", default="", help="series name in plots (default: the URL)")
    parser.add_argument("--output-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--compare", type=Path, nargs="*", default=[],
                        help="earlier results JSON files to draw on the same plots")
    args = parser.parse_args(argv)
    if not args.concurrency and not args.rate:
        parser.error("give --concurrency levels, --rate values, or both")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    print(f"{args.model} at {args.url}: {args.duration:g} s windows, {args.repeats} repeats, medians")
    print_header()
    result = sweep(args)
    out = args.output_dir / f"sweep_{args.model}.json"
    out.write_text(json.dumps(result, indent=1))
    others = [json.loads(p.read_text()) for p in args.compare]
    paths = plot([result, *others], args.output_dir)
    print(f"wrote {out} and {', '.join(str(p) for p in paths)}")


if __name__ == "__main__":
    main()
