"""The monitoring families without a server: exact exposition text from a core monitor snapshot
(the layout pyserver/_core.pyi documents), and the text parses as Prometheus' own parser reads
it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pyserver.metrics import MonitoringCollector, render
from pyserver.types import DataType


def span(counts: list[int], sums: list[float], nan: int = 0, inf: int = 0,
         classes: list[int] | None = None) -> dict[str, Any]:
    return {"counts": counts, "sums": sums, "nan": nan, "inf": inf,
            "elements": sum(counts) + nan + inf, "classes": classes or []}


def snapshot() -> dict[str, Any]:
    pixels = {
        "name": "pixels", "input": True, "datatype": int(DataType.FP32), "buckets": [0.0, 8.0],
        "per_feature": True, "top": False, "features": 2, "class_count": 0,
        "total": span([3, 1, 0, 0, 2, 2], [4.0, 60.5], nan=1, inf=2),
        "window": span([1, 1, 0, 0, 1, 1], [1.0, 20.0]),
        "reference": span([4, 0, 0, 0, 2, 2], [0.0, 50.0]), "reference_source": "file",
        "psi": [0.25, math.nan], "psi_pooled": 0.125,
    }
    text = {
        "name": "text", "input": True, "datatype": int(DataType.BYTES), "buckets": [16.0],
        "per_feature": False, "top": False, "features": 1, "class_count": 0,
        "total": span([5, 1], [70.0]), "window": span([5, 1], [70.0]), "reference": None,
        "reference_source": "", "psi": [], "psi_pooled": math.nan,
    }
    label = {
        "name": "label", "input": False, "datatype": int(DataType.INT64), "buckets": [],
        "per_feature": False, "top": False, "features": 1, "class_count": 3,
        "total": span([0], [0.0], classes=[2, 0, 7, 1]),
        "window": span([0], [0.0], classes=[1, 0, 3, 0]), "reference": None,
        "reference_source": "", "psi": [], "psi_pooled": math.nan,
    }
    scores = {
        "name": "scores", "input": False, "datatype": int(DataType.FP32), "buckets": [0.5],
        "per_feature": False, "top": True, "features": 1, "class_count": 3,
        "total": span([1, 9], [8.25], classes=[5, 5, 0, 0]),
        "window": span([0, 0], [0.0], classes=[0, 0, 0, 0]), "reference": None,
        "reference_source": "", "psi": [], "psi_pooled": math.nan,
    }
    return {"tensors": [pixels, text, label, scores]}


@dataclass
class Monitored:
    name: str = "m"
    version_str: str = "2"
    snap: dict[str, Any] | None = field(default_factory=snapshot)

    def monitor_snapshot(self) -> dict[str, Any] | None:
        return self.snap


class Unmonitored:
    """A stats source with no monitor_snapshot at all."""

    name = "other"
    version_str = "1"


def test_exposition_text() -> None:
    text = render(MonitoringCollector(lambda: [Monitored(), Monitored(name="off", snap=None),
                                               Unmonitored()])).decode()
    m = 'model="m",version="2"'
    expected = [
        "# TYPE pyserver_input_value histogram",
        f'pyserver_input_value_bucket{{feature="0",input="pixels",le="0.0",{m}}} 3',
        f'pyserver_input_value_bucket{{feature="0",input="pixels",le="8.0",{m}}} 4',
        f'pyserver_input_value_bucket{{feature="0",input="pixels",le="+Inf",{m}}} 4',
        f'pyserver_input_value_sum{{feature="0",input="pixels",{m}}} 4',
        f'pyserver_input_value_count{{feature="0",input="pixels",{m}}} 4',
        f'pyserver_input_value_bucket{{feature="1",input="pixels",le="0.0",{m}}} 0',
        f'pyserver_input_value_bucket{{feature="1",input="pixels",le="8.0",{m}}} 2',
        f'pyserver_input_value_bucket{{feature="1",input="pixels",le="+Inf",{m}}} 4',
        f'pyserver_input_value_sum{{feature="1",input="pixels",{m}}} 60.5',
        f'pyserver_input_value_count{{feature="1",input="pixels",{m}}} 4',
        f'pyserver_input_value_bucket{{input="text",le="16.0",{m}}} 5',
        f'pyserver_input_value_bucket{{input="text",le="+Inf",{m}}} 6',
        f'pyserver_input_value_sum{{input="text",{m}}} 70',
        "# TYPE pyserver_input_nan_total counter",
        f'pyserver_input_nan_total{{input="pixels",{m}}} 1',
        f'pyserver_input_nan_total{{input="text",{m}}} 0',
        f'pyserver_input_inf_total{{input="pixels",{m}}} 2',
        "# TYPE pyserver_input_drift gauge",
        f'pyserver_input_drift{{feature="0",input="pixels",{m}}} 0.25',
        "# TYPE pyserver_prediction_class_total counter",
        'pyserver_prediction_class_total{class="0",model="m",output="label",version="2"} 2',
        'pyserver_prediction_class_total{class="2",model="m",output="label",version="2"} 7',
        'pyserver_prediction_class_total{class="other",model="m",output="label",version="2"} 1',
        'pyserver_prediction_class_total{class="1",model="m",output="scores",version="2"} 5',
        "# TYPE pyserver_output_value histogram",
        'pyserver_output_value_bucket{le="0.5",model="m",output="scores",version="2"} 1',
        'pyserver_output_value_bucket{le="+Inf",model="m",output="scores",version="2"} 10',
        'pyserver_output_value_sum{model="m",output="scores",version="2"} 8.25',
        "# TYPE pyserver_prediction_top_class_share gauge",
        'pyserver_prediction_top_class_share{model="m",output="label",version="2"} 0.75',
    ]
    lines = text.splitlines()
    for line in expected:
        assert line in lines, line
    # A feature without data in the window has no drift sample (NaN is not exported); a
    # window with no predictions has no share; models without monitoring export nothing.
    assert 'feature="1",input="pixels"' not in "\n".join(
        x for x in lines if x.startswith("pyserver_input_drift"))
    assert 'output="scores"' not in "\n".join(
        x for x in lines if x.startswith("pyserver_prediction_top_class_share"))
    assert 'model="off"' not in text and 'model="other"' not in text
    # Only outputs with buckets (or top) have a value histogram.
    assert 'output="label"' not in "\n".join(
        x for x in lines if x.startswith("pyserver_output_value"))


def test_prometheus_parses_it() -> None:
    text = render(MonitoringCollector(lambda: [Monitored()])).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["pyserver_input_value"].type == "histogram"
    assert families["pyserver_input_nan"].type == "counter"
    assert families["pyserver_prediction_class"].type == "counter"
    shares = [s.value for s in families["pyserver_prediction_top_class_share"].samples]
    assert shares == [0.75]
