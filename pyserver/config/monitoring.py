"""The [monitoring] table (pyserver's own), checked by the one reader (reader.py).

In config.toml it is a table of its own:

    [monitoring]
    sample_every = 1                 # measure every Nth batch
    window_seconds = 300             # the sliding window of the current distribution
    log_payloads = { every = 1000, path = "payloads.jsonl" }   # optional
    [[monitoring.input]]
    name = "pixels"
    buckets = [0, 2, 4, 8, 12, 16]
    per_feature = true
    reference = "reference/pixels.npy"
    [[monitoring.output]]
    name = "label"
    classes = 10

Triton's formats have no place for it, so there it is the same table as JSON in a parameter:
`parameters { key: "monitoring" value { string_value: "{...}" } }` in config.pbtxt, and
`"parameters": {"monitoring": {"string_value": "{...}"}}` in Triton's JSON (what GET .../config
writes back). A config.toml may use that parameter too; a table and the parameter together are an
error. The parameter never reaches the engine.

What can only be checked against the model's tensors (names, datatypes, fixed dims), which may
come from the model file, is checked when the version is built (pyserver/monitoring.py).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from pyserver.config.schema import MonitoredInput, MonitoredOutput, Monitoring, PayloadLogging
from pyserver.errors import ModelLoadError

if TYPE_CHECKING:
    from pyserver.config.reader import _Reader

PARAMETER = "monitoring"  # Triton's formats: the parameter holding the table as JSON
TABLE_KEYS = ("sample_every", "window_seconds", "input", "output", "log_payloads")
INPUT_KEYS = ("name", "buckets", "per_feature", "reference", "reference_first_window")
OUTPUT_KEYS = ("name", "classes", "buckets", "top")
LOG_KEYS = ("path", "every", "max_bytes", "backups", "max_elements")
MAX_BUCKETS = 64  # the core's limit per histogram
MAX_CLASSES = 65536
MIN_WINDOW_SECONDS = 0.01
MAX_WINDOW_SECONDS = 7 * 24 * 3600
MAX_LOG_ELEMENTS = 1 << 20


def split_parameter(r: _Reader, raw: dict[str, Any]) -> tuple[object, str, object]:
    """The monitoring table wherever it was written, the key it was written under, and the
    parameters without it. Raises when both places hold one."""
    table = raw.get("monitoring")
    parameters = raw.get("parameters", {})
    if not isinstance(parameters, dict) or PARAMETER not in parameters:
        return table, "monitoring", parameters
    key = f"parameters.{PARAMETER}"
    if table is not None:
        raise ModelLoadError(
            f"{r.file}: {key}: expected either a [monitoring] table or this parameter, got both")
    text = parameters[PARAMETER]
    expected = "the [monitoring] table as a JSON object"
    if not isinstance(text, str):
        raise r.error(key, expected, text)
    try:
        table = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ModelLoadError(f"{r.file}: {key}: expected {expected}, got invalid JSON: {exc}"
                             ) from None
    if not isinstance(table, dict):
        raise r.error(key, expected, table)
    rest = {k: v for k, v in parameters.items() if k != PARAMETER}
    return table, key, rest


def read_monitoring(r: _Reader, value: object, key: str) -> Monitoring:
    """The [monitoring] table `value`, written under `key`."""
    item = r.table(value, key, TABLE_KEYS)
    window = number(r, item.get("window_seconds", 300), f"{key}.window_seconds",
                    MIN_WINDOW_SECONDS, MAX_WINDOW_SECONDS)
    inputs = tuple(
        _input(r, raw, f"{key}.input[{i}]")
        for i, raw in enumerate(r.array(item.get("input", []), f"{key}.input",
                                        f"an array of tables ([[{key}.input]])")))
    outputs = tuple(
        _output(r, raw, f"{key}.output[{i}]")
        for i, raw in enumerate(r.array(item.get("output", []), f"{key}.output",
                                        f"an array of tables ([[{key}.output]])")))
    for kind, names in (("input", [e.name for e in inputs]),
                        ("output", [e.name for e in outputs])):
        for i, name in enumerate(names):
            if name in names[:i]:
                raise r.error(f"{key}.{kind}[{i}].name", f"an {kind} not monitored already",
                              name)
    log = None
    if "log_payloads" in item:
        log = _log(r, item["log_payloads"], f"{key}.log_payloads")
    return Monitoring(
        sample_every=r.integer(item.get("sample_every", 1), f"{key}.sample_every", 1),
        window_seconds=window, inputs=inputs, outputs=outputs, log_payloads=log, key=key,
    )


def number(r: _Reader, value: object, key: str, minimum: float, maximum: float) -> float:
    if (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and minimum <= value <= maximum):
        return float(value)
    raise r.error(key, f"a number from {minimum:g} to {maximum:g}", value)


def _buckets(r: _Reader, value: object, key: str) -> tuple[float, ...]:
    expected = f"an array of at most {MAX_BUCKETS} finite, strictly increasing numbers"
    items = r.array(value, key, expected)
    bounds: list[float] = []
    for i, v in enumerate(items):
        if (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)
                or (bounds and not v > bounds[-1])):
            raise r.error(f"{key}[{i}]", expected, v)
        bounds.append(float(v))
    if len(bounds) > MAX_BUCKETS:
        raise r.error(key, expected, items)
    return tuple(bounds)


def _input(r: _Reader, value: object, key: str) -> MonitoredInput:
    item = r.table(value, key, INPUT_KEYS)
    if "name" not in item:
        raise ModelLoadError(f"{r.file}: {key}.name: expected an input's name, got none")
    reference = ""
    if "reference" in item:
        reference = r.string(item["reference"], f"{key}.reference",
                             "a .npy file's path inside the model folder")
        parts = reference.replace("\\", "/").split("/")
        if reference.startswith("/") or ".." in parts:
            raise r.error(f"{key}.reference", "a .npy file's path inside the model folder",
                          reference)
    first_window = r.boolean(item.get("reference_first_window", False),
                             f"{key}.reference_first_window")
    if reference and first_window:
        raise ModelLoadError(
            f"{r.file}: {key}.reference_first_window: expected either a reference file or the "
            "first window as the reference, got both")
    return MonitoredInput(
        name=r.string(item["name"], f"{key}.name"),
        buckets=_buckets(r, item.get("buckets", []), f"{key}.buckets"),
        per_feature=r.boolean(item.get("per_feature", False), f"{key}.per_feature"),
        reference=reference,
        reference_first_window=first_window,
    )


def _output(r: _Reader, value: object, key: str) -> MonitoredOutput:
    item = r.table(value, key, OUTPUT_KEYS)
    if "name" not in item:
        raise ModelLoadError(f"{r.file}: {key}.name: expected an output's name, got none")
    out = MonitoredOutput(
        name=r.string(item["name"], f"{key}.name"),
        classes=r.integer(item.get("classes", 0), f"{key}.classes", 0, MAX_CLASSES),
        buckets=_buckets(r, item.get("buckets", []), f"{key}.buckets"),
        top=r.boolean(item.get("top", False), f"{key}.top"),
    )
    if not (out.classes or out.buckets or out.top):
        raise ModelLoadError(
            f"{r.file}: {key}: expected classes = N (integer outputs), buckets = [...] or "
            "top = true (scores), got none of them")
    return out


def _log(r: _Reader, value: object, key: str) -> PayloadLogging:
    item = r.table(value, key, LOG_KEYS)
    if "path" not in item:
        raise ModelLoadError(f"{r.file}: {key}.path: expected the log file's path, got none")
    return PayloadLogging(
        path=r.string(item["path"], f"{key}.path", "a file path"),
        every=r.integer(item.get("every", 1000), f"{key}.every", 1),
        max_bytes=r.integer(item.get("max_bytes", 64 * 1024 * 1024), f"{key}.max_bytes",
                            4096, 2**62),
        backups=r.integer(item.get("backups", 3), f"{key}.backups", 0, 100),
        max_elements=r.integer(item.get("max_elements", 256), f"{key}.max_elements", 1,
                               MAX_LOG_ELEMENTS),
    )


def to_table(m: Monitoring) -> dict[str, Any]:
    """The table again (every key explicit): what the reader reads back to `m`."""
    table: dict[str, Any] = {
        "sample_every": m.sample_every,
        "window_seconds": m.window_seconds,
        "input": [
            {"name": i.name, "buckets": list(i.buckets), "per_feature": i.per_feature,
             "reference_first_window": i.reference_first_window}
            | ({"reference": i.reference} if i.reference else {})
            for i in m.inputs
        ],
        "output": [
            {"name": o.name, "classes": o.classes, "buckets": list(o.buckets), "top": o.top}
            for o in m.outputs
        ],
    }
    log = m.log_payloads
    if log is not None:
        table["log_payloads"] = {
            "path": log.path, "every": log.every, "max_bytes": log.max_bytes,
            "backups": log.backups, "max_elements": log.max_elements,
        }
    return table
