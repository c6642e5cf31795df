"""The [monitoring] table: read from config.toml, from config.pbtxt's and Triton's JSON
`monitoring` parameter (the same table as JSON), written back by to_triton, and every mistake
named with the file, the key and the expectation; what only the model's tensors can tell is
checked when the version is built (pyserver.monitoring.core_options)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyserver.config import (
    MonitoredInput,
    MonitoredOutput,
    Monitoring,
    PayloadLogging,
    config_from_json,
    load_config,
    to_triton,
)
from pyserver.errors import ModelLoadError
from pyserver.monitoring import core_options
from pyserver.types import DataType, TensorSpec

ENGINES = Path(__file__).resolve().parents[2] / "engines"

MODEL = 'backend = "onnxruntime"\nmax_batch_size = 8\n'
TABLE = """
[monitoring]
sample_every = 4
window_seconds = 60
log_payloads = { every = 100, path = "logs/payloads.jsonl", max_bytes = 1048576 }
[[monitoring.input]]
name = "pixels"
buckets = [0, 2, 4.5, 16]
per_feature = true
reference = "reference/pixels.npy"
[[monitoring.output]]
name = "label"
classes = 10
[[monitoring.output]]
name = "probabilities"
buckets = [0.5, 0.9, 0.99]
top = true
"""
EXPECTED = Monitoring(
    sample_every=4,
    window_seconds=60.0,
    inputs=(MonitoredInput("pixels", (0.0, 2.0, 4.5, 16.0), True, "reference/pixels.npy"),),
    outputs=(MonitoredOutput("label", classes=10),
             MonitoredOutput("probabilities", buckets=(0.5, 0.9, 0.99), top=True)),
    log_payloads=PayloadLogging("logs/payloads.jsonl", every=100, max_bytes=1048576),
)


def write(root: Path, filename: str, text: str, name: str = "m") -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / filename).write_text(text)
    return folder


def test_toml_table(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "config.toml", MODEL + TABLE))
    assert config.monitoring == EXPECTED
    assert config.monitoring.key == "monitoring"
    assert dict(config.parameters) == {}


def test_defaults(tmp_path: Path) -> None:
    text = MODEL + '[monitoring]\n[[monitoring.output]]\nname = "y"\nclasses = 3\n'
    monitoring = load_config(write(tmp_path, "config.toml", text)).monitoring
    assert monitoring == Monitoring(outputs=(MonitoredOutput("y", classes=3),))
    assert (monitoring.sample_every, monitoring.window_seconds) == (1, 300.0)
    assert monitoring.log_payloads is None
    assert load_config(write(tmp_path / "b", "config.toml", MODEL)).monitoring is None


def test_pbtxt_parameter_means_what_the_table_means(tmp_path: Path) -> None:
    table = {
        "sample_every": 4, "window_seconds": 60,
        "log_payloads": {"every": 100, "path": "logs/payloads.jsonl", "max_bytes": 1048576},
        "input": [{"name": "pixels", "buckets": [0, 2, 4.5, 16], "per_feature": True,
                   "reference": "reference/pixels.npy"}],
        "output": [{"name": "label", "classes": 10},
                   {"name": "probabilities", "buckets": [0.5, 0.9, 0.99], "top": True}],
    }
    pbtxt = (
        'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        'parameters { key: "intra_op_num_threads" value { string_value: "1" } }\n'
        f'parameters {{ key: "monitoring" value {{ string_value: {json.dumps(json.dumps(table))} }} }}\n'
    )
    config = load_config(write(tmp_path, "config.pbtxt", pbtxt))
    assert config.monitoring == EXPECTED
    assert config.monitoring.key == "parameters.monitoring"
    # The parameter is the table's: the engine never sees it.
    assert dict(config.parameters) == {"intra_op_num_threads": "1"}


def test_to_triton_writes_the_parameter_and_reads_back(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "config.toml", MODEL + TABLE))
    triton = to_triton(config)
    written = json.loads(triton["parameters"]["monitoring"]["string_value"])
    assert written["input"][0]["buckets"] == [0.0, 2.0, 4.5, 16.0]
    again = config_from_json(json.dumps(triton), config.path, "m")
    assert again.monitoring == config.monitoring
    assert to_triton(again) == triton
    assert "monitoring" not in to_triton(load_config(ENGINES / "add_sub"))["parameters"]


def test_the_bundled_digits_monitors_out_of_the_box() -> None:
    config = load_config(ENGINES / "digits")
    monitoring = config.monitoring
    assert monitoring is not None
    (pixels,) = monitoring.inputs
    assert pixels.name == "pixels" and pixels.per_feature
    assert (config.path / pixels.reference).is_file()
    assert [o.name for o in monitoring.outputs] == ["label", "probabilities"]
    assert monitoring.log_payloads is None  # off by default


# (text after MODEL, key the message must name, words of the expectation)
BAD = [
    pytest.param("[monitoring]\nsample_evry = 2\n", "monitoring.sample_evry",
                 "did you mean 'sample_every'", id="typo"),
    pytest.param("[monitoring]\nsample_every = 0\n", "monitoring.sample_every",
                 "an integer from 1 to", id="sample-zero"),
    pytest.param("[monitoring]\nwindow_seconds = 0\n", "monitoring.window_seconds",
                 "a number from 0.01 to 604800, got 0", id="window-zero"),
    pytest.param('[monitoring]\nwindow_seconds = "5m"\n', "monitoring.window_seconds",
                 "a number from 0.01 to 604800, got '5m'", id="window-string"),
    pytest.param('[[monitoring.input]]\nbuckets = [1]\n', "monitoring.input[0].name",
                 "expected an input's name, got none", id="input-without-name"),
    pytest.param('[[monitoring.input]]\nname = "x"\nbuckets = [2, 1]\n',
                 "monitoring.input[0].buckets[1]", "strictly increasing numbers, got 1",
                 id="buckets-order"),
    pytest.param('[[monitoring.input]]\nname = "x"\nbuckets = [1, nan]\n',
                 "monitoring.input[0].buckets[1]", "finite, strictly increasing", id="buckets-nan"),
    pytest.param('[[monitoring.input]]\nname = "x"\nbuckets = [true]\n',
                 "monitoring.input[0].buckets[0]", "got true (a boolean)", id="buckets-bool"),
    pytest.param('[[monitoring.input]]\nname = "x"\nbuckets = ' + str(list(range(65))) + "\n",
                 "monitoring.input[0].buckets", "at most 64", id="too-many-buckets"),
    pytest.param('[[monitoring.input]]\nname = "x"\nreference = "../x.npy"\n',
                 "monitoring.input[0].reference", "a .npy file's path inside the model folder",
                 id="reference-outside"),
    pytest.param('[[monitoring.input]]\nname = "x"\nreference = "r.npy"\n'
                 "reference_first_window = true\n",
                 "monitoring.input[0].reference_first_window", "got both",
                 id="two-references"),
    pytest.param('[[monitoring.input]]\nname = "x"\nper_feature = "yes"\n',
                 "monitoring.input[0].per_feature", "true or false", id="per-feature-string"),
    pytest.param('[[monitoring.input]]\nname = "x"\n[[monitoring.input]]\nname = "x"\n',
                 "monitoring.input[1].name", "an input not monitored already, got 'x'",
                 id="duplicate"),
    pytest.param('[[monitoring.output]]\nname = "y"\n', "monitoring.output[0]",
                 "expected classes = N (integer outputs), buckets = [...] or top = true",
                 id="output-measures-nothing"),
    pytest.param('[[monitoring.output]]\nname = "y"\nclasses = -1\n',
                 "monitoring.output[0].classes", "an integer from 0 to 65536", id="classes"),
    pytest.param('[[monitoring.output]]\nname = "y"\ntop = 1\n', "monitoring.output[0].top",
                 "true or false, got 1", id="top-int"),
    pytest.param("[monitoring]\nlog_payloads = { every = 10 }\n", "monitoring.log_payloads.path",
                 "expected the log file's path, got none", id="log-without-path"),
    pytest.param('[monitoring]\nlog_payloads = { path = "p", every = 0 }\n',
                 "monitoring.log_payloads.every", "an integer from 1", id="log-every"),
    pytest.param('[monitoring]\nlog_payloads = { path = "p", max_bytes = 10 }\n',
                 "monitoring.log_payloads.max_bytes", "an integer from 4096", id="log-max-bytes"),
    pytest.param('[monitoring]\n[parameters]\nmonitoring = "{}"\n', "parameters.monitoring",
                 "expected either a [monitoring] table or this parameter, got both",
                 id="table-and-parameter"),
    pytest.param('[parameters]\nmonitoring = "{not json"\n', "parameters.monitoring",
                 "the [monitoring] table as a JSON object, got invalid JSON", id="bad-json"),
    pytest.param('[parameters]\nmonitoring = "[1]"\n', "parameters.monitoring",
                 "the [monitoring] table as a JSON object, got an array [1]", id="json-array"),
    pytest.param('[parameters]\nmonitoring = \'{"input": [{"name": "x", "buckets": "a"}]}\'\n',
                 "parameters.monitoring.input[0].buckets", "got 'a'", id="key-inside-parameter"),
]


@pytest.mark.parametrize(("text", "key", "expectation"), BAD)
def test_bad_table(tmp_path: Path, text: str, key: str, expectation: str) -> None:
    folder = write(tmp_path, "config.toml", MODEL + text)
    with pytest.raises(ModelLoadError) as info:
        load_config(folder)
    message = str(info.value)
    assert message.startswith(f"{folder / 'config.toml'}: {key}: "), message
    assert expectation in message, message


# The tensors of a digits-like model, as the model file would complete them.
PIXELS = TensorSpec("pixels", DataType.FP32, (64,))
TEXT = TensorSpec("text", DataType.BYTES, (1,))
ANY = TensorSpec("any", DataType.FP32, (-1,))
LABEL = TensorSpec("label", DataType.INT64, (1,))
PROBABILITIES = TensorSpec("probabilities", DataType.FP32, (10,))


def completed(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    config = load_config(write(tmp_path, "config.toml", MODEL + text))
    return config.with_tensors((PIXELS, TEXT, ANY), (LABEL, PROBABILITIES))


def test_core_options(tmp_path: Path) -> None:
    options = core_options(completed(tmp_path, TABLE))
    assert options is not None
    assert (options.sample_every, options.window_ns, options.intervals) == (4, 60 * 10**9, 10)
    assert [(t.name, t.input, t.buckets, t.per_feature, t.classes, t.top)
            for t in options.tensors] == [
        ("pixels", True, [0.0, 2.0, 4.5, 16.0], True, 0, False),
        ("label", False, [], False, 10, False),
        ("probabilities", False, [0.5, 0.9, 0.99], False, 0, True),
    ]
    # Payload logging alone measures nothing in the core.
    log_only = '[monitoring]\nlog_payloads = { path = "p" }\n'
    assert core_options(completed(tmp_path / "b", log_only)) is None


BAD_FOR_THE_TENSORS = [
    pytest.param('[[monitoring.input]]\nname = "pixel"\nbuckets = [1]\n',
                 "monitoring.input[0].name",
                 "expected one of the model's inputs (pixels, text, any), got 'pixel'",
                 id="unknown-input"),
    pytest.param('[[monitoring.input]]\nname = "pixels"\n', "monitoring.input[0].buckets",
                 "the histogram's bucket bounds", id="no-buckets"),
    pytest.param('[[monitoring.input]]\nname = "any"\nbuckets = [1]\nper_feature = true\n',
                 "monitoring.input[0].per_feature", "fixed dims (no -1), got dims [-1]",
                 id="per-feature-dynamic"),
    pytest.param('[[monitoring.input]]\nname = "text"\nbuckets = [1]\nper_feature = true\n',
                 "monitoring.input[0]", "no per_feature and no reference for a BYTES input",
                 id="bytes-per-feature"),
    pytest.param('[[monitoring.output]]\nname = "probabilities"\nclasses = 10\n',
                 "monitoring.output[0].classes", "an integer output (for scores, use top = true)",
                 id="classes-of-scores"),
    pytest.param('[[monitoring.output]]\nname = "label"\ntop = true\n',
                 "monitoring.output[0].top", "scores (an FP16, BF16, FP32 or FP64 output), "
                 "got INT64", id="top-of-labels"),
    pytest.param('[[monitoring.output]]\nname = "probabilities"\ntop = true\nclasses = 9\n',
                 "monitoring.output[0].classes", "the last dimension's size (10) or none, got 9",
                 id="top-classes-mismatch"),
    pytest.param('[[monitoring.output]]\nname = "labels"\nclasses = 3\n',
                 "monitoring.output[0].name", "one of the model's outputs (label, probabilities)",
                 id="unknown-output"),
]


@pytest.mark.parametrize(("text", "key", "expectation"), BAD_FOR_THE_TENSORS)
def test_bad_for_the_tensors(tmp_path: Path, text: str, key: str, expectation: str) -> None:
    config = completed(tmp_path, text)
    with pytest.raises(ModelLoadError) as info:
        core_options(config)
    message = str(info.value)
    assert message.startswith(f"{config.source}: {key}: "), message
    assert expectation in message, message
