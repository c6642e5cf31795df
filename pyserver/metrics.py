"""Prometheus metrics, read from the core when Prometheus scrapes.

The request path makes no metric call: the C++ core keeps its counters and histograms as atomics
(updated per batch and per request by its own threads) and the collectors here turn one
`Model.stats()` snapshot per model version into metric families at scrape time.

Names, meanings and labels follow Triton's (`nv_inference_*`, `nv_gpu_*`), so dashboards and
autoscaling rules written for Triton work unchanged. Triton's counters carry no `_total` suffix;
prometheus_client's own exposition would add one, so `render` writes those families itself and
hands every other family to prometheus_client. Real histograms, which Triton lacks, are exported
as `pyserver_*` families.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from pyserver.config import ModelConfig

log = logging.getLogger("pyserver.metrics")

# Failure reasons as the core counts them and as Triton labels them.
FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")

# Triton's per-model counters: (name, help, what of the core's stats they read).
_COUNTERS: tuple[tuple[str, str, Callable[[dict[str, Any]], int]], ...] = (
    ("nv_inference_request_success",
     "Number of successful inference requests, all batch sizes",
     lambda s: s["success"]["count"]),
    ("nv_inference_count",
     "Number of inferences performed (a batch of n counts n)",
     lambda s: s["inference_count"]),
    ("nv_inference_exec_count",
     "Number of model executions performed (batches)",
     lambda s: s["execution_count"]),
    ("nv_inference_request_duration_us",
     "Cumulative inference request duration in microseconds (successful requests)",
     lambda s: s["success"]["ns"] // 1000),
    ("nv_inference_queue_duration_us",
     "Cumulative inference queuing duration in microseconds",
     lambda s: s["queue"]["ns"] // 1000),
    ("nv_inference_compute_input_duration_us",
     "Cumulative compute input duration in microseconds",
     lambda s: s["compute_input"]["ns"] // 1000),
    ("nv_inference_compute_infer_duration_us",
     "Cumulative compute inference duration in microseconds",
     lambda s: s["compute_infer"]["ns"] // 1000),
    ("nv_inference_compute_output_duration_us",
     "Cumulative inference compute output duration in microseconds",
     lambda s: s["compute_output"]["ns"] // 1000),
)

# The core's histograms -> (family name, help, divisor from the core's unit to the exported one).
_HISTOGRAMS: tuple[tuple[str, str, str, float], ...] = (
    ("request_duration_ns", "pyserver_request_duration_seconds",
     "Time from a request's arrival at the core to its answer (successes and failures)", 1e9),
    ("queue_duration_ns", "pyserver_queue_duration_seconds",
     "Time executed requests waited in the scheduling queue", 1e9),
    ("compute_duration_ns", "pyserver_compute_duration_seconds",
     "Time each batch took to gather inputs, execute and scatter outputs", 1e9),
    ("batch_size", "pyserver_batch_size",
     "Rows in each executed batch", 1.0),
)


class StatsSource(Protocol):
    """What the collector needs of a loaded model version (pyserver.model.Model)."""

    name: str
    version_str: str
    config: ModelConfig

    def stats(self) -> dict[str, Any]: ...
    def instances(self) -> list[dict[str, Any]]: ...
    def memory_usage(self) -> list[dict[str, Any]]: ...


class _Nvml(Protocol):
    """The few pynvml calls used here (the nvidia-ml-py package)."""

    def nvmlInit(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...


@dataclass(frozen=True)
class _Gpu:
    index: int
    uuid: str
    handle: Any


class GpuMonitor(Collector):
    """GPUs seen through NVML when `pynvml` (nvidia-ml-py) is installed and a driver answers;
    otherwise no GPUs, and no GPU metric is exported."""

    def __init__(self, nvml: _Nvml | None, gpus: Sequence[_Gpu]) -> None:
        self._nvml = nvml
        self.gpus = tuple(gpus)

    @classmethod
    def detect(cls) -> GpuMonitor:
        try:
            nvml: Any = importlib.import_module("pynvml")
        except ImportError:
            return cls(None, ())
        try:
            nvml.nvmlInit()
            gpus = []
            for index in range(int(nvml.nvmlDeviceGetCount())):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = nvml.nvmlDeviceGetUUID(handle)
                if isinstance(uuid, bytes):  # older nvidia-ml-py answers bytes
                    uuid = uuid.decode()
                gpus.append(_Gpu(index, str(uuid), handle))
        except Exception as exc:  # no driver, no device: a CPU machine with pynvml installed
            log.info("no GPU metrics: NVML is not usable here (%s)", exc)
            return cls(None, ())
        return cls(nvml, gpus)

    def uuid(self, index: int) -> str | None:
        for gpu in self.gpus:
            if gpu.index == index:
                return gpu.uuid
        return None

    def collect(self) -> Iterator[Metric]:
        if self._nvml is None or not self.gpus:
            return
        utilization = GaugeMetricFamily(
            "nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", labels=["gpu_uuid"])
        used = GaugeMetricFamily(
            "nv_gpu_memory_used_bytes", "GPU used memory, in bytes", labels=["gpu_uuid"])
        total = GaugeMetricFamily(
            "nv_gpu_memory_total_bytes", "GPU total memory, in bytes", labels=["gpu_uuid"])
        for gpu in self.gpus:
            try:
                rates = self._nvml.nvmlDeviceGetUtilizationRates(gpu.handle)
                memory = self._nvml.nvmlDeviceGetMemoryInfo(gpu.handle)
            except Exception as exc:  # a GPU that fell off the bus: skip it, keep the rest
                log.warning("NVML could not read GPU %s: %s", gpu.uuid, exc)
                continue
            utilization.add_metric([gpu.uuid], float(rates.gpu) / 100.0)
            used.add_metric([gpu.uuid], float(memory.used))
            total.add_metric([gpu.uuid], float(memory.total))
        yield utilization
        yield used
        yield total


def _model_gpu_uuid(instances: list[dict[str, Any]]) -> str | None:
    """The GPU a model's instances all run on, when there is exactly one (Triton's gpu_uuid
    label); None for CPU models and for models spread over several GPUs."""
    uuids = {i["gpu_uuid"] for i in instances}
    if len(uuids) != 1:
        return None
    uuid: str | None = next(iter(uuids))
    return uuid


class ModelCollector(Collector):
    """Per-model families from each model version's core stats, read at scrape time."""

    def __init__(self, models: Callable[[], Iterable[StatsSource]]) -> None:
        self._models = models

    def collect(self) -> Iterator[Metric]:
        rows = []
        placed = []
        for model in self._models():
            labels = {"model": model.name, "version": model.version_str}
            instances = model.instances()
            uuid = _model_gpu_uuid(instances)
            if uuid is not None:
                labels["gpu_uuid"] = uuid
            rows.append((labels, model.stats()))
            placed.append((model, instances))

        for name, doc, read in _COUNTERS[:1]:
            yield _counter(name, doc, ((labels, read(stats)) for labels, stats in rows))
        failure = Metric("nv_inference_request_failure",
                         "Number of failed inference requests, all batch sizes", "counter")
        for labels, stats in rows:
            for reason in FAILURE_REASONS:
                failure.add_sample("nv_inference_request_failure", labels | {"reason": reason},
                                   float(stats["fail_by_reason"][reason]))
        yield failure
        for name, doc, read in _COUNTERS[1:]:
            yield _counter(name, doc, ((labels, read(stats)) for labels, stats in rows))
        pending = Metric("nv_inference_pending_request_count",
                         "Instantaneous number of pending requests awaiting execution per-model.",
                         "gauge")
        for labels, stats in rows:
            # Triton's gauge counts requests waiting for execution (the queue), not those
            # executing: the core's "queued", not its "pending" (queued or executing).
            pending.add_sample("nv_inference_pending_request_count", labels,
                               float(stats["queued"]))
        yield pending

        for key, name, doc, scale in _HISTOGRAMS:
            family = HistogramMetricFamily(name, doc, labels=["model", "version"])
            for labels, stats in rows:
                buckets, total = _cumulative_buckets(stats["histograms"][key], scale)
                family.add_metric([labels["model"], labels["version"]], buckets, total)
            yield family

        info = GaugeMetricFamily(
            "pyserver_instance_info", "Where each model instance runs (always 1)",
            labels=["model", "version", "instance", "kind", "gpu", "gpu_uuid"])
        memory = GaugeMetricFamily(
            "pyserver_model_memory_bytes",
            "Memory a model version's instances hold (Triton's memory_usage types)",
            labels=["model", "version", "type", "id"])
        for model, instances in placed:
            for i in instances:
                gpu = "" if i["gpu"] is None else str(i["gpu"])
                info.add_metric([model.name, model.version_str, str(i["index"]), i["kind"], gpu,
                                 i["gpu_uuid"] or ""], 1.0)
            for usage in model.memory_usage():
                memory.add_metric([model.name, model.version_str, usage["type"],
                                   str(usage["id"])], float(usage["byte_size"]))
        yield info
        yield memory


def _counter(name: str, doc: str, values: Iterable[tuple[dict[str, str], int]]) -> Metric:
    """A counter under Triton's exact name: samples carry the family's name, no `_total`."""
    family = Metric(name, doc, "counter")
    for labels, value in values:
        family.add_sample(name, labels, float(value))
    return family


def _cumulative_buckets(
    histogram: dict[str, Any], scale: float
) -> tuple[list[tuple[str, float]], float]:
    """The core's per-bucket counts (inclusive upper bounds, one extra +Inf bucket) as
    Prometheus' cumulative `le` buckets, bounds and sum divided by `scale`."""
    bounds, counts = histogram["bounds"], histogram["counts"]
    buckets = []
    running = 0
    for bound, count in zip(bounds, counts):
        running += count
        buckets.append((repr(bound / scale), float(running)))
    running += counts[len(bounds)]
    buckets.append(("+Inf", float(running)))
    return buckets, histogram["sum"] / scale


class MonitorSource(Protocol):
    """What the monitoring collector needs of a model version (pyserver.model.Model)."""

    name: str
    version_str: str

    def monitor_snapshot(self) -> dict[str, Any] | None: ...


def _histogram_samples(metric: Metric, labels: dict[str, str], bounds: Sequence[float],
                       counts: Sequence[int], total: float) -> None:
    """One Prometheus histogram (cumulative `le` buckets, _sum, _count) from per-bucket counts
    (one more than bounds: the last is above every bound)."""
    running = 0
    for bound, count in zip(bounds, counts):
        running += count
        metric.add_sample(metric.name + "_bucket", labels | {"le": repr(float(bound))},
                          float(running))
    running += counts[len(bounds)]
    metric.add_sample(metric.name + "_bucket", labels | {"le": "+Inf"}, float(running))
    metric.add_sample(metric.name + "_sum", labels, float(total))
    metric.add_sample(metric.name + "_count", labels, float(running))


class MonitoringCollector(Collector):
    """What models see and say ([monitoring], pyserver/monitoring.py), from each version's core
    monitor at scrape time: value histograms since the version turned READY (per feature when
    the table says per_feature), NaN and infinity counts, drift of the current window against
    the reference, class counts and the window's top-class share. Models without monitoring
    (or stats sources that have none) export nothing here."""

    def __init__(self, models: Callable[[], Iterable[object]]) -> None:
        self._models = models

    def collect(self) -> Iterator[Metric]:
        input_value = Metric("pyserver_input_value",
                             "Values of monitored inputs (BYTES: element lengths)", "histogram")
        nan = Metric("pyserver_input_nan", "NaN values in monitored inputs", "counter")
        inf = Metric("pyserver_input_inf", "Infinite values in monitored inputs", "counter")
        drift = Metric("pyserver_input_drift",
                       "Population stability index of a monitored input's current window "
                       "against its reference", "gauge")
        classes = Metric("pyserver_prediction_class",
                         "Predictions per class of monitored outputs (other: outside the "
                         "classes)", "counter")
        output_value = Metric("pyserver_output_value",
                              "Values of monitored outputs (top: each row's largest score)",
                              "histogram")
        share = Metric("pyserver_prediction_top_class_share",
                       "Share of the most frequent class in the current window", "gauge")
        for model in self._models():
            read = getattr(model, "monitor_snapshot", None)
            snapshot = read() if read is not None else None
            if snapshot is None:
                continue
            base = {"model": getattr(model, "name", ""), "version": getattr(model, "version_str", "")}
            for t in snapshot["tensors"]:
                bounds = t["buckets"]
                buckets = len(bounds) + 1
                total = t["total"]
                counts, sums = total["counts"], total["sums"]
                if t["input"]:
                    labels = base | {"input": t["name"]}
                    per_feature = t["per_feature"]
                    if per_feature:
                        for f in range(t["features"]):
                            _histogram_samples(input_value, labels | {"feature": str(f)}, bounds,
                                               counts[f * buckets:(f + 1) * buckets], sums[f])
                    else:
                        _histogram_samples(input_value, labels, bounds, counts, sums[0])
                    nan.add_sample("pyserver_input_nan_total", labels, float(total["nan"]))
                    inf.add_sample("pyserver_input_inf_total", labels, float(total["inf"]))
                    if t["reference"] is not None:
                        if per_feature:
                            for f, psi in enumerate(t["psi"]):
                                if math.isfinite(psi):
                                    drift.add_sample("pyserver_input_drift",
                                                     labels | {"feature": str(f)}, psi)
                        elif math.isfinite(t["psi_pooled"]):
                            drift.add_sample("pyserver_input_drift", labels, t["psi_pooled"])
                    continue
                labels = base | {"output": t["name"]}
                if t["class_count"]:
                    per_class = total["classes"]
                    for c, n in enumerate(per_class[:-1]):
                        classes.add_sample("pyserver_prediction_class_total",
                                           labels | {"class": str(c)}, float(n))
                    classes.add_sample("pyserver_prediction_class_total",
                                       labels | {"class": "other"}, float(per_class[-1]))
                    window = t["window"]["classes"]
                    seen = sum(window)
                    if seen:
                        share.add_sample("pyserver_prediction_top_class_share", labels,
                                         max(window[:-1]) / seen)
                if bounds or t["top"]:
                    _histogram_samples(output_value, labels, bounds, counts, sums[0])
        # Without monitored models, no family at all (not empty ones).
        yield from (f for f in (input_value, nan, inf, drift, classes, output_value, share)
                    if f.samples)


class ConnectionsCollector(Collector):
    """Open HTTP connections, counted by whoever serves them when Prometheus asks."""

    def __init__(self, count: Callable[[], int]) -> None:
        self._count = count

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "pyserver_http_open_connections", "Open connections on the HTTP port")
        gauge.add_metric([], float(self._count()))
        yield gauge


class LifecycleSource(Protocol):
    """What the lifecycle collector needs of the model manager (pyserver.lifecycle)."""

    load_durations: Any  # LoadHistogram: bounds, counts (one more: +Inf), total, count

    def states(self) -> list[tuple[str, str, str]]: ...


# Every state a version can report, so each (model, version) exports all of them: 1 for the
# current one, 0 for the others (a dashboard's sum by state then counts versions).
MODEL_STATES = ("LOADING", "READY", "UNLOADING", "UNAVAILABLE")


class LifecycleCollector(Collector):
    """pyserver_model_state{model, version, state} and pyserver_model_load_duration_seconds."""

    def __init__(self, lifecycle: LifecycleSource) -> None:
        self._lifecycle = lifecycle

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "pyserver_model_state", "1 for each model version's current state, 0 for the others",
            labels=["model", "version", "state"])
        for model, version, current in self._lifecycle.states():
            for name in MODEL_STATES:
                state.add_metric([model, version, name], 1.0 if name == current else 0.0)
        yield state
        h = self._lifecycle.load_durations
        family = HistogramMetricFamily(
            "pyserver_model_load_duration_seconds",
            "Time each model load or reload took (reading, building engines, warmup)")
        buckets, running = [], 0
        for bound, count in zip(h.bounds, h.counts):
            running += count
            buckets.append((repr(float(bound)), float(running)))
        buckets.append(("+Inf", float(running + h.counts[len(h.bounds)])))
        family.add_metric([], buckets, h.total)
        yield family


class Metrics:
    """One server's registry (not prometheus_client's global one, so servers started in the
    same process keep their own): per-model stats, process CPU and memory, open connections,
    and GPUs when NVML is there."""

    def __init__(
        self,
        models: Callable[[], Iterable[StatsSource]],
        open_connections: Callable[[], int] | None = None,
        gpus: GpuMonitor | None = None,
        lifecycle: LifecycleSource | None = None,
    ) -> None:
        self.gpus = gpus if gpus is not None else GpuMonitor.detect()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ModelCollector(models))
        self.registry.register(MonitoringCollector(models))
        if lifecycle is not None:
            self.registry.register(LifecycleCollector(lifecycle))
        self.registry.register(self.gpus)
        ProcessCollector(registry=self.registry)
        if open_connections is not None:
            self.registry.register(ConnectionsCollector(open_connections))

    def render(self) -> bytes:
        return render(self.registry)


class _One(Collector):
    """One metric family, as generate_latest takes it."""

    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self._metric


# Families render() writes itself; anything else (OpenMetrics-only types, _created samples)
# goes through prometheus_client.
_TYPES = {"counter": "counter", "gauge": "gauge", "histogram": "histogram",
          "summary": "summary", "unknown": "untyped"}
_OPENMETRICS_SUFFIXES = ("_created", "_gsum", "_gcount")


def render(registry: Collector) -> bytes:
    """The Prometheus text format (0.0.4).

    Written here rather than by prometheus_client's generate_latest for two reasons: Triton's
    counters carry no `_total` suffix, which generate_latest would add to their TYPE line; and
    generate_latest spends ~15 us per sample validating names, several milliseconds on the event
    loop per scrape for a few models' histograms. Families this does not know go to
    generate_latest unchanged."""
    out: list[str] = []
    for metric in registry.collect():
        kind = _TYPES.get(metric.type)
        if kind is None or any(s.name.endswith(_OPENMETRICS_SUFFIXES) for s in metric.samples):
            out.append(generate_latest(_One(metric)).decode())
            continue
        name = metric.name
        # A counter's samples may carry its bare name (Triton's) or name_total (the
        # OpenMetrics convention, e.g. process_cpu_seconds_total): the TYPE line names them.
        if kind == "counter" and any(s.name == name + "_total" for s in metric.samples):
            name += "_total"
        doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
        label_text: dict[tuple[tuple[str, str], ...], str] = {}
        for sample in metric.samples:
            key = tuple(sorted(sample.labels.items()))
            labels = label_text.get(key)
            if labels is None:
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
                labels = label_text[key] = "{" + labels + "}" if labels else ""
            out.append(f"{sample.name}{labels} {_number(sample.value)}\n")
    return "".join(out).encode()


def _number(value: float) -> str:
    """Whole numbers as Triton writes them ("3", not "3.0"); Go's spelling of the rest."""
    value = float(value)
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


@functools.lru_cache(maxsize=4096)  # the same model names and bounds on every scrape
def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
