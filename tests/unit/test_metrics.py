"""The collectors without a server: exact exposition text from a stats snapshot, the core's
histograms turned into Prometheus' cumulative buckets, and GPUs through a fake NVML."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyserver.config import InstanceGroup
from pyserver.metrics import GpuMonitor, Metrics, ModelCollector, render


def histogram(bounds: list[int], counts: list[int], total: int) -> dict[str, Any]:
    return {"bounds": bounds, "counts": counts, "sum": total, "count": sum(counts)}


def core_stats(**overrides: Any) -> dict[str, Any]:
    duration = {"count": 0, "ns": 0}
    stats: dict[str, Any] = {
        "inference_count": 12, "execution_count": 4, "last_inference": 0,
        "success": {"count": 5, "ns": 7_500_900}, "fail": {"count": 3, "ns": 1000},
        "queue": {"count": 5, "ns": 2_000_499}, "compute_input": dict(duration),
        "compute_infer": {"count": 5, "ns": 3_000_000}, "compute_output": dict(duration),
        "batch_stats": [], "pending": 5, "queued": 2,
        "fail_by_reason": {"REJECTED": 1, "CANCELED": 0, "BACKEND": 0, "OTHER": 2},
        "histograms": {
            "request_duration_ns": histogram([25_000, 1_000_000], [1, 6, 1], 9_000_000),
            "queue_duration_ns": histogram([25_000, 1_000_000], [5, 0, 0], 50_000),
            "compute_duration_ns": histogram([25_000, 1_000_000], [0, 4, 0], 3_000_000),
            "batch_size": histogram([1, 2, 4], [1, 0, 3, 0], 12),
        },
    }
    stats.update(overrides)
    return stats


@dataclass
class FakeConfig:
    instance_group: tuple[InstanceGroup, ...] = (InstanceGroup(),)


@dataclass
class FakeModel:
    name: str = "m"
    version_str: str = "1"
    config: Any = field(default_factory=FakeConfig)
    snapshot: dict[str, Any] = field(default_factory=core_stats)
    gpus: tuple[int | None, ...] = (None,)  # one entry per instance

    def stats(self) -> dict[str, Any]:
        return self.snapshot

    def instances(self) -> list[dict[str, Any]]:
        return [
            {"index": i, "kind": "KIND_CPU" if g is None else "KIND_GPU", "gpu": g,
             "gpu_uuid": None if g is None else f"GPU-{g}"}
            for i, g in enumerate(self.gpus)
        ]

    def memory_usage(self) -> list[dict[str, Any]]:
        if all(g is None for g in self.gpus):
            return []
        return [{"type": "GPU", "id": g, "byte_size": 1024} for g in sorted(set(self.gpus))]


def no_gpus() -> GpuMonitor:
    return GpuMonitor(None, ())


def test_triton_counters_are_written_exactly_as_triton_writes_them() -> None:
    text = render(ModelCollector(lambda: [FakeModel()])).decode()
    assert (
        "# HELP nv_inference_request_success Number of successful inference requests, all batch sizes\n"
        "# TYPE nv_inference_request_success counter\n"
        'nv_inference_request_success{model="m",version="1"} 5\n'
    ) in text
    assert (
        "# TYPE nv_inference_request_failure counter\n"
        'nv_inference_request_failure{model="m",reason="REJECTED",version="1"} 1\n'
        'nv_inference_request_failure{model="m",reason="CANCELED",version="1"} 0\n'
        'nv_inference_request_failure{model="m",reason="BACKEND",version="1"} 0\n'
        'nv_inference_request_failure{model="m",reason="OTHER",version="1"} 2\n'
    ) in text
    # cumulative microseconds, truncated as Triton's integer counters are
    assert 'nv_inference_request_duration_us{model="m",version="1"} 7500\n' in text
    assert 'nv_inference_queue_duration_us{model="m",version="1"} 2000\n' in text
    assert 'nv_inference_compute_infer_duration_us{model="m",version="1"} 3000\n' in text
    assert 'nv_inference_count{model="m",version="1"} 12\n' in text
    assert 'nv_inference_exec_count{model="m",version="1"} 4\n' in text
    assert "# TYPE nv_inference_pending_request_count gauge\n" in text
    assert 'nv_inference_pending_request_count{model="m",version="1"} 2\n' in text
    assert "_total" not in text


def test_histograms_become_cumulative_seconds() -> None:
    text = render(ModelCollector(lambda: [FakeModel()])).decode()
    assert (
        "# TYPE pyserver_request_duration_seconds histogram\n"
        'pyserver_request_duration_seconds_bucket{le="2.5e-05",model="m",version="1"} 1\n'
        'pyserver_request_duration_seconds_bucket{le="0.001",model="m",version="1"} 7\n'
        'pyserver_request_duration_seconds_bucket{le="+Inf",model="m",version="1"} 8\n'
        'pyserver_request_duration_seconds_count{model="m",version="1"} 8\n'
        'pyserver_request_duration_seconds_sum{model="m",version="1"} 0.009\n'
    ) in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    batch = {(s.name, s.labels.get("le")): s.value for s in families["pyserver_batch_size"].samples}
    assert batch[("pyserver_batch_size_bucket", "1.0")] == 1
    assert batch[("pyserver_batch_size_bucket", "2.0")] == 1
    assert batch[("pyserver_batch_size_bucket", "4.0")] == 4
    assert batch[("pyserver_batch_size_bucket", "+Inf")] == 4
    assert batch[("pyserver_batch_size_sum", None)] == 12
    for name in ("pyserver_queue_duration_seconds", "pyserver_compute_duration_seconds"):
        assert families[name].type == "histogram"


def test_label_values_are_escaped() -> None:
    text = render(ModelCollector(lambda: [FakeModel(name='a"b\\c')])).decode()
    assert 'nv_inference_count{model="a\\"b\\\\c",version="1"} 12\n' in text
    assert any(f.name == "nv_inference_count" for f in text_string_to_metric_families(text))


def test_other_families_render_as_prometheus_client_does() -> None:
    """Process counters keep their _total on the TYPE line; gauges and values as usual."""
    from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

    registry = CollectorRegistry()
    ProcessCollector(registry=registry, proc="/proc", pid=lambda: "self")
    ours = render(registry).decode()
    theirs = generate_latest(registry).decode()
    assert "# TYPE process_cpu_seconds_total counter\n" in ours
    assert [line.split(" ")[0] for line in ours.splitlines()] == [
        line.split(" ")[0] for line in theirs.splitlines()]
    assert {f.name: f.type for f in text_string_to_metric_families(ours)} == {
        f.name: f.type for f in text_string_to_metric_families(theirs)}


def test_no_models_no_samples_but_families_stay_valid() -> None:
    text = render(ModelCollector(lambda: [])).decode()
    assert "# TYPE nv_inference_request_success counter\n" in text
    list(text_string_to_metric_families(text))


class FakeNvml(types.ModuleType):
    """What nvidia-ml-py's pynvml module answers, for two GPUs."""

    def __init__(self, fail_init: bool = False) -> None:
        super().__init__("pynvml")
        self.fail_init = fail_init
        self.inits = 0

    def nvmlInit(self) -> None:
        self.inits += 1
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> str | bytes:
        return f"GPU-{handle}" if handle == 0 else f"GPU-{handle}".encode()

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return types.SimpleNamespace(gpu=40 + handle, memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return types.SimpleNamespace(total=16 * 2**30, used=(handle + 1) * 2**30, free=0)


def samples_of(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(text) for s in f.samples
    }


def test_gpu_gauges_through_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml())
    metrics = Metrics(lambda: [], gpus=GpuMonitor.detect())
    samples = samples_of(metrics.render().decode())
    for uuid, used, rate in (("GPU-0", 2**30, 0.40), ("GPU-1", 2 * 2**30, 0.41)):
        label = frozenset({"gpu_uuid": uuid}.items())
        assert samples[("nv_gpu_utilization", label)] == pytest.approx(rate)
        assert samples[("nv_gpu_memory_used_bytes", label)] == used
        assert samples[("nv_gpu_memory_total_bytes", label)] == 16 * 2**30


def test_model_on_one_gpu_gets_its_gpu_uuid() -> None:
    on_gpu1 = FakeModel(name="g", gpus=(1, 1))
    spread = FakeModel(name="s", gpus=(0, 1))
    samples = samples_of(render(ModelCollector(lambda: [on_gpu1, spread, FakeModel()])).decode())
    assert samples[("nv_inference_count_total",
                    frozenset({"model": "g", "version": "1", "gpu_uuid": "GPU-1"}.items()))] == 12
    assert ("nv_inference_count_total", frozenset({"model": "s", "version": "1"}.items())) in samples
    assert ("nv_inference_count_total", frozenset({"model": "m", "version": "1"}.items())) in samples
    # where each instance runs, and what the GPU instances hold
    info = {labels: value for (name, labels), value in samples.items()
            if name == "pyserver_instance_info"}
    assert info[frozenset({"model": "s", "version": "1", "instance": "1", "kind": "KIND_GPU",
                           "gpu": "1", "gpu_uuid": "GPU-1"}.items())] == 1
    assert info[frozenset({"model": "m", "version": "1", "instance": "0", "kind": "KIND_CPU",
                           "gpu": "", "gpu_uuid": ""}.items())] == 1
    assert samples[("pyserver_model_memory_bytes", frozenset(
        {"model": "g", "version": "1", "type": "GPU", "id": "1"}.items()))] == 1024


@pytest.mark.parametrize("nvml", [None, FakeNvml(fail_init=True)], ids=["absent", "no-driver"])
def test_no_nvml_no_gpu_metrics(monkeypatch: pytest.MonkeyPatch, nvml: Any) -> None:
    # sys.modules[name] = None makes `import name` raise ImportError
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    gpus = GpuMonitor.detect()
    assert gpus.gpus == ()
    text = Metrics(lambda: [FakeModel()], gpus=gpus).render().decode()
    assert "nv_gpu" not in text
    assert 'nv_inference_count{model="m",version="1"} 12\n' in text
    assert "process_resident_memory_bytes" in text


def test_registries_are_per_server() -> None:
    a = Metrics(lambda: [FakeModel(name="a")], gpus=no_gpus())
    b = Metrics(lambda: [FakeModel(name="b")], gpus=no_gpus())
    assert 'model="b"' not in a.render().decode()
    assert 'model="a"' not in b.render().decode()
