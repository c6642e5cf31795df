"""Tables and plots for the results of benchmarks/perf_analyzer_sweep.py and benchmarks/ab.py:
a row per point, a before/after table with ratios, grouped bar charts (PNG, matplotlib Agg)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# (title, how to read it from a point, format)
FIGURES = (
    ("infer/s", lambda p: p["client"]["throughput"], "{:.0f}"),
    ("p50 us", lambda p: p["client"]["p50_us"], "{:.0f}"),
    ("p99 us", lambda p: p["client"]["p99_us"], "{:.0f}"),
    ("CPU us/req", lambda p: p["server"]["cpu_us_per_request"], "{:.1f}"),
)


def load(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())  # type: ignore[no-any-return]


def figure(point: dict[str, Any], read: Any) -> float | None:
    """A figure of a point, None when the point failed or the figure is missing."""
    if "error" in point:
        return None
    try:
        value = read(point)
    except (KeyError, TypeError, IndexError):
        return None
    return None if value is None else float(value)


def ratio(after: float | None, before: float | None) -> float | None:
    if after is None or before is None or before == 0:
        return None
    return after / before


def fmt(value: float | None, spec: str = "{:.0f}") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else spec.format(value)


def print_header() -> None:
    print(f"{'point':<20} {'infer/s':>9} {'p50 us':>8} {'p90 us':>8} {'p99 us':>8} "
          f"{'CPU us/req':>10} {'cores':>5} {'batch':>6} {'ceil%':>6} {'ci/ip':>6} "
          f"{'PA us/req':>9}")


def print_row(point: dict[str, Any]) -> None:
    """CPU us/req and cores: the server's CPU per request and its CPU over the run's wall time;
    ceil%: infer/s as a share of the in-process ceiling at the server's average batch;
    ci/ip: compute_infer per batch in the server over the in-process time of the same batch,
    for the batch size formed most often (ONNX models measured with --model-repository);
    PA us/req: perf_analyzer's own CPU per request (the load generator's cost)."""
    if "error" in point:
        print(f"{point['key']:<20} failed: {point['error'].splitlines()[0]}")
        return
    c, s = point["client"], point["server"]
    ceil = point.get("ceiling") or {}
    share = ceil.get("at_average_batch", {}).get("server_share")
    per_batch = ceil.get("per_batch") or [{}]
    print(f"{point['key']:<20} {c['throughput']:9.0f} {c['p50_us']:8.0f} {c.get('p90_us', 0):8.0f} "
          f"{c['p99_us']:8.0f} {fmt(s['cpu_us_per_request'], '{:.1f}'):>10} "
          f"{fmt(s['cpu_cores'], '{:.2f}'):>5} {fmt(s['average_batch'], '{:.2f}'):>6} "
          f"{fmt(share and share * 100, '{:.0f}'):>6} "
          f"{fmt(per_batch[0].get('ratio'), '{:.2f}'):>6} "
          f"{fmt(c.get('cpu_us_per_request'), '{:.0f}'):>9}")


def compare_table(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Points present in both runs, matched by key: each figure before, after, and after/before."""
    b_points = {p["key"]: p for p in before["points"]}
    lines = [f"before: {before['label']} ({before['started']})",
             f"after:  {after['label']} ({after['started']})", ""]
    head = f"{'point':<20}" + "".join(f" {t + ' before':>15} {'after':>9} {'ratio':>6}"
                                      for t, _, _ in FIGURES)
    lines.append(head)
    for a in after["points"]:
        b = b_points.get(a["key"])
        if b is None:
            continue
        cells = []
        for _, read, spec in FIGURES:
            vb, va = figure(b, read), figure(a, read)
            cells.append(f" {fmt(vb, spec):>15} {fmt(va, spec):>9} "
                         f"{fmt(ratio(va, vb), '{:.2f}'):>6}")
        lines.append(f"{a['key']:<20}" + "".join(cells))
    return "\n".join(lines)


def plot_results(results: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars, one group per point and one bar per result: infer/s, p99 and CPU per
    request."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys: list[str] = []
    for r in results:
        keys += [p["key"] for p in r["points"] if p["key"] not in keys]
    shown = [FIGURES[0], FIGURES[2], FIGURES[3]]
    fig, axes = plt.subplots(len(shown), 1, figsize=(max(6.0, 1.4 * len(keys) + 2), 9))
    width = 0.8 / max(1, len(results))
    for ax, (title, read, _) in zip(axes, shown, strict=True):
        for i, r in enumerate(results):
            by_key = {p["key"]: p for p in r["points"]}
            values = [figure(by_key[k], read) if k in by_key else None for k in keys]
            xs = [j + i * width for j in range(len(keys))]
            ax.bar(xs, [v if v is not None else 0.0 for v in values], width, label=r["label"])
        ax.set_xticks([j + width * (len(results) - 1) / 2 for j in range(len(keys))], keys)
        ax.set_ylabel(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize="small")
    axes[0].set_title("perf_analyzer: " + " vs ".join(r["label"] for r in results))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
