"""Model monitoring, the data plane's side: what a version's [monitoring] table asks of the core,
its drift references, its report for GET /v2/models/{m}[/versions/{v}]/monitoring, and its
payload log.

The core measures (csrc/core/monitor.h): per sampled batch, on the batch's own buffers, with no
Python and no GIL. Here, once per version: the table is checked against the model's tensors
(which may have come from the model file), turned into the core's options, and each input's
reference sample (a .npy file under the model folder) is read at load and handed to the core,
which histograms it with the same code as the batches. At read time (a scrape, the endpoint) the
core's snapshot is turned into JSON.

A version's monitor starts when the version turns READY, so warmup requests are not counted; a
reloaded version is a new version and starts from zero, as its statistics do.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from pyserver import _core
from pyserver.config import ModelConfig, Monitoring
from pyserver.errors import ModelLoadError
from pyserver.types import DataType, TensorSpec

# The window's ring: window_seconds in this many slots (the window reported is the last 90-100%
# of window_seconds, ending now).
INTERVALS = 10


def core_options(config: ModelConfig) -> _core.MonitorOptions | None:
    """The core's monitoring options for a version whose tensors are complete (None when its
    configuration measures nothing). Raises ModelLoadError naming the file and the key when the
    table does not fit the model's tensors."""
    monitoring = config.monitoring
    if monitoring is None or not (monitoring.inputs or monitoring.outputs):
        return None
    check_tensors(config, monitoring)
    options = _core.MonitorOptions()
    options.sample_every = monitoring.sample_every
    options.window_ns = max(int(monitoring.window_seconds * 1e9), INTERVALS)
    options.intervals = INTERVALS
    tensors = []
    for i in monitoring.inputs:
        t = _core.MonitorTensor()
        t.name = i.name
        t.input = True
        t.buckets = list(i.buckets)
        t.per_feature = i.per_feature
        t.reference_first_window = i.reference_first_window
        tensors.append(t)
    for o in monitoring.outputs:
        t = _core.MonitorTensor()
        t.name = o.name
        t.input = False
        t.buckets = list(o.buckets)
        t.classes = o.classes
        t.top = o.top
        tensors.append(t)
    options.tensors = tensors
    return options


def _fixed_elements(dims: tuple[int, ...]) -> int:
    """The elements of one row when every dim is fixed; -1 otherwise."""
    return -1 if any(d < 0 for d in dims) else math.prod(dims)


def check_tensors(config: ModelConfig, monitoring: Monitoring) -> None:
    """What the core would refuse, said with the file and the key."""
    key = monitoring.key

    def fail(where: str, expected: str, found: object) -> ModelLoadError:
        return ModelLoadError(f"{config.where(f'{key}.{where}')}: expected {expected}, got {found}")

    inputs = {t.name: t for t in config.inputs}
    outputs = {t.name: t for t in config.outputs}
    for n, entry in enumerate(monitoring.inputs):
        where = f"input[{n}]"
        spec = inputs.get(entry.name)
        if spec is None:
            raise fail(f"{where}.name", f"one of the model's inputs ({', '.join(inputs)})",
                       repr(entry.name))
        numeric = spec.datatype is not DataType.BYTES
        if numeric and not entry.buckets:
            raise fail(f"{where}.buckets", "the histogram's bucket bounds (a non-empty array)",
                       "none")
        if not numeric and (entry.per_feature or entry.reference or entry.reference_first_window):
            raise fail(where, "no per_feature and no reference for a BYTES input (its "
                       "lengths are counted)", "them")
        if entry.per_feature:
            features = _fixed_elements(spec.dims)
            if features < 1:
                raise fail(f"{where}.per_feature", "an input with fixed dims (no -1)",
                           f"dims {list(spec.dims)}")
            if features * (len(entry.buckets) + 1) > 65536:
                raise fail(f"{where}.per_feature", "at most 65536 counters (features x buckets)",
                           f"{features} features x {len(entry.buckets) + 1} buckets")
    for n, out in enumerate(monitoring.outputs):
        where = f"output[{n}]"
        spec = outputs.get(out.name)
        if spec is None:
            raise fail(f"{where}.name", f"one of the model's outputs ({', '.join(outputs)})",
                       repr(out.name))
        dt = spec.datatype
        is_float = dt in (DataType.FP16, DataType.BF16, DataType.FP32, DataType.FP64)
        if out.top:
            if not is_float:
                raise fail(f"{where}.top", "scores (an FP16, BF16, FP32 or FP64 output)", dt.name)
            group = spec.dims[-1] if spec.dims else -1
            if group < 1:
                raise fail(f"{where}.top", "a fixed last dimension (the classes)",
                           f"dims {list(spec.dims)}")
            if out.classes and out.classes != group:
                raise fail(f"{where}.classes", f"the last dimension's size ({group}) or none",
                           out.classes)
        elif out.classes:
            if is_float or dt is DataType.BYTES:
                raise fail(f"{where}.classes", "an integer output (for scores, use top = true)",
                           dt.name)


class ModelMonitor:
    """One version's monitoring: the core's monitor (through its scheduler) and the reference
    samples it was given."""

    def __init__(self, config: ModelConfig, scheduler: _core.Scheduler) -> None:
        """In a load thread: reads each reference file and hands it to the core."""
        assert config.monitoring is not None
        self.config = config
        self.monitoring = config.monitoring
        self._scheduler = scheduler
        self.reference_files: dict[str, str] = {}
        specs = {t.name: t for t in config.inputs}
        for n, entry in enumerate(self.monitoring.inputs):
            if entry.reference:
                where = config.where(f"{self.monitoring.key}.input[{n}].reference")
                sample = read_reference(config.path / entry.reference, specs[entry.name], where)
                spec = specs[entry.name]
                try:
                    scheduler.monitor_set_reference(entry.name, int(_reference_type(spec)),
                                                    sample.data)
                except ValueError as exc:
                    raise ModelLoadError(f"{where}: {exc}") from None
                self.reference_files[entry.name] = entry.reference

    def start(self) -> None:
        """Count from now (the version is READY)."""
        self._scheduler.monitor_start()

    def snapshot(self) -> dict[str, Any] | None:
        return self._scheduler.monitor_snapshot()

    def report(self) -> dict[str, Any]:
        """The endpoint's JSON: the window against the reference, totals since the start."""
        snap = self._scheduler.monitor_snapshot()
        assert snap is not None
        covered = max(snap["now_ns"] - snap["started_ns"], 0) if snap["running"] else 0
        out: dict[str, Any] = {
            "running": snap["running"],
            "sample_every": snap["sample_every"],
            "window_seconds": snap["window_ns"] / 1e9,
            "window_covered_seconds": min(covered, snap["window_ns"]) / 1e9,
            "batches": {"seen": snap["batches_seen"], "sampled": snap["batches_sampled"],
                        "failed": snap["batches_failed"]},
            "inputs": [],
            "outputs": [],
        }
        for tensor in snap["tensors"]:
            if tensor["input"]:
                out["inputs"].append(self._input_report(tensor))
            else:
                out["outputs"].append(_output_report(tensor))
        return out

    def _input_report(self, t: dict[str, Any]) -> dict[str, Any]:
        buckets = len(t["buckets"]) + 1
        per_feature = t["per_feature"]
        entry: dict[str, Any] = {
            "name": t["name"],
            "datatype": DataType(t["datatype"]).name,
            "buckets": t["buckets"],
            "per_feature": per_feature,
            "total": _values(t["total"], buckets, False),
            "window": _values(t["window"], buckets, per_feature),
            "reference": None,
            "drift": None,
        }
        if t["reference"] is not None:
            reference = _values(t["reference"], buckets, per_feature)
            reference["source"] = t["reference_source"]
            if t["name"] in self.reference_files:
                reference["file"] = self.reference_files[t["name"]]
            entry["reference"] = reference
            psi = [_finite(x) for x in t["psi"]]
            known = [x for x in psi if x is not None]
            pooled = _finite(t["psi_pooled"])
            score = (sum(known) / len(known) if known else None) if per_feature else pooled
            entry["drift"] = {
                "score": score,  # per_feature: the mean over features with data
                "pooled": pooled,
                "max": max(known) if known else None,
                **({"features": psi} if per_feature else {}),
            }
        return entry


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _values(c: dict[str, Any], buckets: int, per_feature: bool) -> dict[str, Any]:
    """A span's value counts: pooled histogram (bucket k: values <= buckets[k]; the last: above
    every bound), finite count, NaN, infinities, mean; per feature too when asked."""
    counts = c["counts"]
    features = len(counts) // buckets if buckets else 0
    pooled = [sum(counts[f * buckets + k] for f in range(features)) for k in range(buckets)]
    finite = sum(pooled)
    out: dict[str, Any] = {
        "count": finite, "nan": c["nan"], "inf": c["inf"], "elements": c["elements"],
        "histogram": pooled,
        "mean": sum(c["sums"]) / finite if finite else None,
    }
    if per_feature:
        out["features"] = [counts[f * buckets:(f + 1) * buckets] for f in range(features)]
    return out


def _classes(c: dict[str, Any]) -> dict[str, Any]:
    counts = c["classes"][:-1]
    total = sum(c["classes"])
    top = max(range(len(counts)), key=counts.__getitem__) if counts else None
    return {
        "count": total,
        "classes": counts,
        "outside": c["classes"][-1],  # outside 0..classes-1 (top: rows of NaN only)
        "shares": [n / total for n in counts] if total else None,
        "top_class": top if total else None,
        "top_class_share": counts[top] / total if total and top is not None else None,
    }


def _output_report(t: dict[str, Any]) -> dict[str, Any]:
    buckets = len(t["buckets"]) + 1
    entry: dict[str, Any] = {"name": t["name"], "datatype": DataType(t["datatype"]).name,
                             "top": t["top"]}
    for span in ("total", "window"):
        part: dict[str, Any] = {}
        if t["class_count"]:
            part.update(_classes(t[span]))
        if t["buckets"] or t["top"]:
            part["values"] = _values(t[span], buckets, False)
        entry[span] = part
    entry["buckets"] = t["buckets"]
    return entry


def _reference_type(spec: TensorSpec) -> DataType:
    """The datatype a reference sample is handed to the core in: the input's own (compared the
    same way), FP32 for BF16 (numpy has no bfloat16; both compare as float)."""
    return DataType.FP32 if spec.datatype is DataType.BF16 else spec.datatype


def read_reference(path: Path, spec: TensorSpec, where: str) -> np.ndarray[Any, Any]:
    """A reference sample: a .npy array of numbers whose first axis is the sample and whose
    other axes hold one row of the input (its dims' elements; any count for dims with -1),
    converted to the input's datatype."""
    expected = "a .npy file of numbers, one row of the input per sample"
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ModelLoadError(f"{where}: expected {expected}, got no file {path}") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{where}: expected {expected}, got {path}: {exc}") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf" or array.ndim < 1:
        raise ModelLoadError(f"{where}: expected {expected}, got {path} holding "
                             f"{getattr(array, 'dtype', type(array).__name__)}")
    rows = array.shape[0]
    row = math.prod(array.shape[1:])
    elements = _fixed_elements(spec.dims)
    if rows == 0 or (elements > 0 and row != elements):
        raise ModelLoadError(
            f"{where}: expected {expected} ({elements} values a row, as dims "
            f"{list(spec.dims)}), got {path} of shape {list(array.shape)}")
    numpy_type = _reference_type(spec).numpy
    assert numpy_type is not None
    return np.ascontiguousarray(array, dtype=numpy_type)
