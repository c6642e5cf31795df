"""perf_analyzer's report and the server's counters, read into figures: its CSV, /proc/PID/stat,
/proc/net/tcp, /v2/models/{m}/stats snapshots and the arithmetic between two of them, and the
--input-data a model needs. No subprocess and no network here (the /proc readers aside), so
all of it is tested on fixed samples; benchmarks/perf_analyzer_sweep.py does the running."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
