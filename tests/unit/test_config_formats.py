"""Triton's config.pbtxt and JSON read into the same ModelConfig as config.toml; auto-complete;
warmup tables."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pyserver.config import (
    Backend,
    DynamicBatching,
    InstanceKind,
    QueuePolicy,
    TimeoutAction,
    VersionPolicyKind,
    WarmupData,
    config_from_json,
    load_config,
    to_triton,
)
from pyserver.config.pbtxt import parse
from pyserver.errors import ModelLoadError
from pyserver.types import DataType, TensorSpec

ENGINES = Path(__file__).resolve().parents[2] / "engines"

ADD_SUB_PBTXT = """
# add_sub as a Triton user writes it
name: "add_sub"
platform: "onnxruntime_onnx"
max_batch_size: 64
input [
  { name: "INPUT0", data_type: TYPE_FP32, dims: [ 16 ] },
  {
    name: "INPUT1"
    data_type: TYPE_FP32
    dims: [ 16 ]
  }
]
output { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] }
output { name: "OUTPUT1" data_type: TYPE_FP32 dims: 16 }
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
  priority_levels: 2
  default_priority_level: 2
  default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 5000
                         allow_timeout_override: true max_queue_size: 32 }
  priority_queue_policy { key: 1 value: { max_queue_size: 8 } }
}
instance_group [ { count: 2, kind: KIND_CPU } ]
version_policy: { latest: { num_versions: 2 } }
parameters { key: "intra_op_num_threads" value: { string_value: "1" } }
parameters: { key: "graph_optimization_level" value { string_value: 'all' } }
"""

ADD_SUB_TOML = """
backend = "onnxruntime"
max_batch_size = 64
[[input]]
name = "INPUT0"
data_type = "TYPE_FP32"
dims = [16]
[[input]]
name = "INPUT1"
data_type = "TYPE_FP32"
dims = [16]
[[output]]
name = "OUTPUT0"
data_type = "TYPE_FP32"
dims = [16]
[[output]]
name = "OUTPUT1"
data_type = "TYPE_FP32"
dims = [16]
[dynamic_batching]
preferred_batch_size = [4, 8]
max_queue_delay_microseconds = 100
priority_levels = 2
default_priority_level = 2
[dynamic_batching.default_queue_policy]
timeout_action = "DELAY"
default_timeout_microseconds = 5000
allow_timeout_override = true
max_queue_size = 32
[dynamic_batching.priority_queue_policy.1]
max_queue_size = 8
[[instance_group]]
count = 2
kind = "KIND_CPU"
[version_policy]
latest = { num_versions = 2 }
[parameters]
intra_op_num_threads = "1"
graph_optimization_level = "all"
"""


def model(root: Path, files: dict[str, str], name: str = "add_sub") -> Path:
    folder = root / name
    (folder / "1").mkdir(parents=True)
    for filename, text in files.items():
        (folder / filename).write_text(text)
    return folder


def test_pbtxt_means_what_toml_means(tmp_path: Path) -> None:
    from_pbtxt = load_config(model(tmp_path / "a", {"config.pbtxt": ADD_SUB_PBTXT}))
    from_toml = load_config(model(tmp_path / "b", {"config.toml": ADD_SUB_TOML}))
    assert to_triton(from_pbtxt) == to_triton(from_toml)
    assert from_pbtxt.backend is Backend.ONNXRUNTIME
    assert from_pbtxt.inputs[1] == TensorSpec("INPUT1", DataType.FP32, (16,))
    assert from_pbtxt.dynamic_batching == DynamicBatching(
        preferred_batch_size=(4, 8), max_queue_delay_microseconds=100, priority_levels=2,
        default_priority_level=2,
        default_queue_policy=QueuePolicy(TimeoutAction.DELAY, 5000, True, 32),
        priority_queue_policy=((1, QueuePolicy(max_queue_size=8)),),
    )
    assert from_pbtxt.instance_group[0].kind is InstanceKind.KIND_CPU
    assert from_pbtxt.version_policy.kind is VersionPolicyKind.LATEST
    assert from_pbtxt.version_policy.num_versions == 2
    assert dict(from_pbtxt.parameters) == {"intra_op_num_threads": "1",
                                           "graph_optimization_level": "all"}
    assert from_pbtxt.source.endswith("config.pbtxt")


def test_json_round_trip(tmp_path: Path) -> None:
    """GET .../config's JSON, given back as a load request's config, means the same."""
    config = load_config(model(tmp_path, {"config.toml": ADD_SUB_TOML}))
    text = json.dumps(to_triton(config))
    again = config_from_json(text, config.path, "add_sub")
    assert to_triton(again) == to_triton(config)


def test_json_int64_as_strings(tmp_path: Path) -> None:
    """protobuf's JSON writes int64 fields as strings (Triton's GET config does)."""
    doc = {"backend": "onnxruntime", "max_batch_size": 8,
           "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": ["4", "-1"],
                      "format": "FORMAT_NONE", "is_shape_tensor": False}],
           "dynamic_batching": {"max_queue_delay_microseconds": "300"},
           "parameters": {"k": {"string_value": "v"}}}
    config = config_from_json(json.dumps(doc), tmp_path, "m")
    assert config.inputs[0].dims == (4, -1)
    assert config.dynamic_batching is not None
    assert config.dynamic_batching.max_queue_delay_microseconds == 300
    assert dict(config.parameters) == {"k": "v"}


@pytest.mark.parametrize(("field", "value", "words"), [
    ("sequence_batching", {"max_sequence_idle_microseconds": "1000"}, "sequence batching"),
    ("ensemble_scheduling", {"step": []}, "ensembles"),
    ("model_transaction_policy", {"decoupled": True}, "decoupled"),
])
def test_fields_that_cannot_be_ignored_fail(tmp_path: Path, field: str, value: object,
                                            words: str) -> None:
    doc = {"backend": "onnxruntime", "max_batch_size": 8, field: value}
    with pytest.raises(ModelLoadError, match=f"{field}.*{words}"):
        config_from_json(json.dumps(doc), tmp_path, "m")


def test_reshape_is_refused(tmp_path: Path) -> None:
    text = ('backend: "onnxruntime"\nmax_batch_size: 8\n'
            'input { name: "x" data_type: TYPE_FP32 dims: [4] reshape { shape: [2, 2] } }\n')
    with pytest.raises(ModelLoadError, match=r"input\[0\]\.reshape"):
        load_config(model(tmp_path, {"config.pbtxt": text}, "m"))


def test_ignorable_fields_are_named_in_a_warning(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    text = ('backend: "onnxruntime"\nmax_batch_size: 8\n'
            'optimization { graph { level: 1 } }\nresponse_cache { enable: true }\n')
    with caplog.at_level(logging.WARNING, logger="pyserver.config"):
        config = load_config(model(tmp_path, {"config.pbtxt": text}, "m"))
    assert config.max_batch_size == 8
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "optimization: not supported by pyserver; ignored" in warned
    assert "response_cache: not supported by pyserver; ignored" in warned


def test_both_files_is_an_error(tmp_path: Path) -> None:
    folder = model(tmp_path, {"config.pbtxt": ADD_SUB_PBTXT, "config.toml": ADD_SUB_TOML})
    with pytest.raises(ModelLoadError, match="holds both config.toml and config.pbtxt"):
        load_config(folder)


@pytest.mark.parametrize(("text", "where", "words"), [
    ('max_batch_size: 8\ninput { name: "x" ', "2:19", "a field name or '}'"),
    ('max_batch_size 8\n', "1:16", "':' or '{' after the field name 'max_batch_size'"),
    ('max_batch_size: 8\nmax_batch_size: 9\n', "2:1", "the field 'max_batch_size' once"),
    ('name: "unterminated\n', "1:7", "unexpected character"),
    ('input { dims: [1, 2 }', "1:21", "',' or ']' in a list"),
    ('a ' + '{ b ' * 40 + '}' * 40, "1:", "at most 32 nested messages"),
    ('parameters { value { string_value: "x" } }', "1:1", "parameters { key: ... value: ... }"),
    ('backend: "onnxruntime" @', "1:24", "unexpected character '@'"),
])
def test_malformed_pbtxt_names_line_and_column(tmp_path: Path, text: str, where: str,
                                               words: str) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_config(model(tmp_path, {"config.pbtxt": text}, "m"))
    message = str(info.value)
    assert f"config.pbtxt:{where}" in message, message
    assert words in message, message


def test_pbtxt_unknown_field_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="max_batch_sise.*did you mean 'max_batch_size'"):
        load_config(model(tmp_path, {"config.pbtxt": 'backend: "identity"\nmax_batch_sise: 4\n'},
                          "m"))


def test_pbtxt_scalars() -> None:
    doc = parse(r"""
        s: "a\"b" 'c' "\x41\101\n"   # adjacent strings join
        i: -12 h: 0x1f f: 2.5e1 flag: true other: False enum: TYPE_FP32
    """, "x.pbtxt")
    assert doc == {"s": 'a"bcAA\n', "i": -12, "h": 31, "f": 25.0, "flag": True, "other": False,
                   "enum": "TYPE_FP32"}


def test_auto_complete_without_a_config(tmp_path: Path) -> None:
    folder = tmp_path / "digits"
    (folder / "2").mkdir(parents=True)
    (folder / "2" / "model.onnx").write_bytes(b"not read here")
    config = load_config(folder, default_max_batch_size=16)
    assert config.auto_complete
    assert config.backend is Backend.ONNXRUNTIME
    assert config.max_batch_size == 16  # the backend keeps it only if every tensor batches
    assert config.default_model_filename == "model.onnx"
    assert config.source == str(folder)


def test_a_pbtxt_without_max_batch_size_is_completed(tmp_path: Path) -> None:
    config = load_config(model(tmp_path, {"config.pbtxt": 'platform: "onnxruntime_onnx"\n'}, "m"))
    assert config.auto_complete and config.max_batch_size == 4


WARMUP = """
[[model_warmup]]
name = "zeros"
batch_size = 4
count = 3
[model_warmup.inputs.INPUT0]
data_type = "TYPE_FP32"
dims = [16]
zero_data = true
"""


def test_warmup_table(tmp_path: Path) -> None:
    text = (ENGINES / "identity" / "config.toml").read_text() + WARMUP
    config = load_config(model(tmp_path, {"config.toml": text}, "identity"))
    (sample,) = config.model_warmup
    assert (sample.name, sample.batch_size, sample.count) == ("zeros", 4, 3)
    assert sample.inputs[0].data is WarmupData.ZERO
    assert sample.inputs[0].dims == (16,)
    assert to_triton(config)["model_warmup"][0]["inputs"]["INPUT0"]["zero_data"] is True


@pytest.mark.parametrize(("change", "key", "words"), [
    (("zero_data = true", "zero_data = true\nrandom_data = true"), "model_warmup[0].inputs.INPUT0",
     "exactly one of zero_data"),
    (("batch_size = 4", "batch_size = 999"), "model_warmup[0].batch_size",
     "from 1 to max_batch_size (256)"),
    (("zero_data = true", 'input_data_file = "../secret"'),
     "model_warmup[0].inputs.INPUT0.input_data_file", "under the model's warmup/ folder"),
    (("dims = [16]", "dims = [-1]"), "model_warmup[0].inputs.INPUT0.dims[0]", "no -1"),
])
def test_bad_warmup(tmp_path: Path, change: tuple[str, str], key: str, words: str) -> None:
    text = (ENGINES / "identity" / "config.toml").read_text() + WARMUP.replace(*change)
    with pytest.raises(ModelLoadError) as info:
        load_config(model(tmp_path, {"config.toml": text}, "identity"))
    assert f"config.toml: {key}" in str(info.value)
    assert words in str(info.value)
