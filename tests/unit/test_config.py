"""pyserver.config: the bundled configs, Triton's JSON shape, version policies and bad configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyserver.config import (
    DynamicBatching,
    InstanceGroup,
    ModelConfig,
    QueuePolicy,
    VersionPolicy,
    load_config,
    to_triton,
)
from pyserver.errors import ModelLoadError
from pyserver.repository import ModelRepository
from pyserver.types import DataType, ModelSignature, TensorSpec

ENGINES = Path(__file__).resolve().parents[2] / "engines"

MINIMAL = 'backend = "onnxruntime"\nmax_batch_size = 8\n'
TENSOR = '[[input]]\nname = "x"\ndata_type = "TYPE_FP32"\ndims = [4]\n'


def model_versions(config: ModelConfig) -> list[int]:
    """The versions the repository serves for the model of `config`."""
    return list(ModelRepository(config.path.parent).read(config.name).versions)


def write_model(root: Path, text: str, name: str = "m") -> Path:
    model_dir = root / name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.toml").write_text(text)
    return model_dir


# -- the bundled model repository --------------------------------------------------------------


def test_identity() -> None:
    config = load_config(ENGINES / "identity")
    assert config.name == "identity"
    assert (config.backend, config.platform) == ("identity", "identity")
    assert config.max_batch_size == 256
    assert config.inputs == (TensorSpec("INPUT0", DataType.FP32, (16,)),)
    assert config.outputs == (TensorSpec("OUTPUT0", DataType.FP32, (16,)),)
    assert config.dynamic_batching == DynamicBatching((), 0)
    assert config.instance_group == (InstanceGroup(1, "KIND_CPU", ()),)
    assert dict(config.parameters) == {"execute_delay_us": "0"}
    assert config.default_model_filename == ""
    assert config.path == ENGINES / "identity"
    assert model_versions(config) == [1]


def test_identity_bytes() -> None:
    config = load_config(ENGINES / "identity_bytes")
    assert config.backend == "identity"
    assert config.max_batch_size == 64
    assert config.inputs == (TensorSpec("INPUT0", DataType.BYTES, (1,)),)
    assert config.outputs == (TensorSpec("OUTPUT0", DataType.BYTES, (1,)),)
    assert config.dynamic_batching == DynamicBatching((), 0)
    assert model_versions(config) == [1]


def test_add_sub() -> None:
    config = load_config(ENGINES / "add_sub")
    assert (config.backend, config.platform) == ("onnxruntime", "onnxruntime_onnx")
    assert config.max_batch_size == 64
    assert [t.name for t in config.inputs] == ["INPUT0", "INPUT1"]
    assert [t.name for t in config.outputs] == ["OUTPUT0", "OUTPUT1"]
    assert all(t.datatype is DataType.FP32 and t.dims == (16,)
               for t in config.inputs + config.outputs)
    assert config.dynamic_batching == DynamicBatching((), 0)
    assert dict(config.parameters) == {
        "intra_op_num_threads": "1", "graph_optimization_level": "all"}
    assert config.default_model_filename == "model.onnx"
    assert model_versions(config) == [1]
    assert (config.path / "1" / config.default_model_filename).is_file()


def test_digits_leaves_tensors_to_the_model_file() -> None:
    config = load_config(ENGINES / "digits")
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == 128
    assert config.inputs == () and config.outputs == ()
    assert config.dynamic_batching == DynamicBatching((), 200)
    assert dict(config.parameters) == {
        "intra_op_num_threads": "1", "graph_optimization_level": "all"}
    assert (config.path / "1" / "model.onnx").is_file()

    pixels = TensorSpec("pixels", DataType.FP32, (64,))
    outputs = (TensorSpec("label", DataType.INT64, (1,)),
               TensorSpec("probabilities", DataType.FP32, (10,)))
    filled = config.with_tensors((pixels,), outputs)
    assert filled.inputs == (pixels,) and filled.outputs == outputs
    assert filled.dynamic_batching == config.dynamic_batching
    assert config.inputs == ()  # the original is untouched
    assert filled.signature() == ModelSignature("digits", 128, (pixels,), outputs)


def test_to_triton_field_names() -> None:
    triton = to_triton(load_config(ENGINES / "identity_bytes"))
    assert triton == {
        "name": "identity_bytes",
        "platform": "identity",
        "backend": "identity",
        "max_batch_size": 64,
        "input": [{"name": "INPUT0", "data_type": "TYPE_STRING", "dims": [1]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_STRING", "dims": [1]}],
        "dynamic_batching": {
            "preferred_batch_size": [], "max_queue_delay_microseconds": 0,
            "preserve_ordering": False, "priority_levels": 0, "default_priority_level": 0,
            "default_queue_policy": {
                "timeout_action": "REJECT", "default_timeout_microseconds": 0,
                "allow_timeout_override": False, "max_queue_size": 0},
            "priority_queue_policy": {},
        },
        "instance_group": [
            {"name": "identity_bytes_0", "kind": "KIND_AUTO", "count": 1, "gpus": []}],
        "parameters": {},
        "version_policy": {"latest": {"num_versions": 1}},
        "default_model_filename": "",
    }
    add_sub = to_triton(load_config(ENGINES / "add_sub"))
    assert add_sub["parameters"] == {
        "intra_op_num_threads": {"string_value": "1"},
        "graph_optimization_level": {"string_value": "all"},
    }
    assert add_sub["input"][1] == {"name": "INPUT1", "data_type": "TYPE_FP32", "dims": [16]}


def test_to_triton_full(tmp_path: Path) -> None:
    model_dir = write_model(tmp_path, """
        platform = "tensorrt_plan"
        max_batch_size = 32
        [[inputs]]
        name = "images"
        datatype = "FP16"
        dims = [3, -1, -1]
        [[outputs]]
        name = "scores"
        datatype = "float32"
        dims = [1000]
        [dynamic_batching]
        preferred_batch_size = [8, 32]
        max_queue_delay_microseconds = 500
        [[instance_group]]
        kind = "KIND_GPU"
        count = 2
        gpus = [0, 1]
        [version_policy]
        specific = { versions = [2, 1] }
        [parameters]
        fp16 = true
        workspace_mb = 512
        ratio = 0.5
        """, name="resnet")
    config = load_config(model_dir)
    assert (config.backend, config.platform) == ("tensorrt", "tensorrt_plan")
    assert config.default_model_filename == "model.plan"
    assert config.inputs == (TensorSpec("images", DataType.FP16, (3, -1, -1)),)
    assert config.version_policy == VersionPolicy("specific", 1, (2, 1))
    assert dict(config.parameters) == {"fp16": "true", "workspace_mb": "512", "ratio": "0.5"}
    triton = to_triton(config)
    assert triton["dynamic_batching"]["preferred_batch_size"] == [8, 32]
    assert triton["dynamic_batching"]["max_queue_delay_microseconds"] == 500
    assert triton["instance_group"] == [
        {"name": "resnet_0", "kind": "KIND_GPU", "count": 2, "gpus": [0, 1]}]
    assert triton["version_policy"] == {"specific": {"versions": [2, 1]}}
    assert triton["input"] == [{"name": "images", "data_type": "TYPE_FP16", "dims": [3, -1, -1]}]


def test_scheduling_policies(tmp_path: Path) -> None:
    model_dir = write_model(tmp_path, MINIMAL + """
        [dynamic_batching]
        preserve_ordering = true
        priority_levels = 3
        default_priority_level = 2
        latency_target_microseconds = 5000
        [dynamic_batching.default_queue_policy]
        max_queue_size = 16
        [dynamic_batching.priority_queue_policy.1]
        timeout_action = "DELAY"
        default_timeout_microseconds = 2000
        allow_timeout_override = true
        """)
    batching = load_config(model_dir).dynamic_batching
    assert batching is not None
    assert batching.preserve_ordering and batching.priority_levels == 3
    assert batching.default_priority_level == 2
    assert batching.latency_target_microseconds == 5000
    assert batching.default_queue_policy == QueuePolicy(max_queue_size=16)
    assert batching.priority_queue_policy == (
        (1, QueuePolicy("DELAY", 2000, True, 0)),)
    triton = to_triton(load_config(model_dir))["dynamic_batching"]
    assert triton["priority_queue_policy"] == {"1": {
        "timeout_action": "DELAY", "default_timeout_microseconds": 2000,
        "allow_timeout_override": True, "max_queue_size": 0}}
    assert triton["latency_target_microseconds"] == 5000

    # Without default_priority_level (which Triton requires), requests with no priority go to
    # the lowest level.
    plain = write_model(tmp_path / "b", MINIMAL + "[dynamic_batching]\npriority_levels = 4\n")
    assert load_config(plain).dynamic_batching.default_priority_level == 4  # type: ignore[union-attr]


def test_defaults(tmp_path: Path) -> None:
    config = load_config(write_model(tmp_path, 'backend = "pytorch"\n'))
    assert config.name == "m"
    assert config.platform == "pytorch_libtorch"
    assert config.max_batch_size == 0
    assert config.dynamic_batching is None
    assert "dynamic_batching" not in to_triton(config)
    assert config.instance_group == (InstanceGroup(1, "KIND_AUTO", ()),)
    assert config.version_policy == VersionPolicy("latest", 1, ())
    assert config.default_model_filename == "model.pt"
    assert dict(config.parameters) == {}


def test_parameters_are_read_only() -> None:
    config = load_config(ENGINES / "add_sub")
    with pytest.raises(TypeError):
        config.parameters["intra_op_num_threads"] = "4"  # type: ignore[index]


# -- version policies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", [10]),
        ("[version_policy]\nlatest = { num_versions = 2 }\n", [3, 10]),
        ("[version_policy]\nlatest = { num_versions = 9 }\n", [1, 2, 3, 10]),
        ("[version_policy]\nall = {}\n", [1, 2, 3, 10]),
        ("[version_policy]\nspecific = { versions = [3, 1] }\n", [1, 3]),
    ],
)
def test_model_versions(tmp_path: Path, policy: str, expected: list[int]) -> None:
    model_dir = write_model(tmp_path, MINIMAL + policy)
    for folder in ("1", "2", "3", "10", "07", "abc", "1a", "-4", "٣"):
        (model_dir / folder).mkdir()
    (model_dir / "11").write_text("a file, not a version folder")
    assert model_versions(load_config(model_dir)) == expected


def test_model_versions_none(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no numeric version folder to serve"):
        model_versions(load_config(write_model(tmp_path, MINIMAL)))


def test_specific_version_missing(tmp_path: Path) -> None:
    model_dir = write_model(tmp_path, MINIMAL + "[version_policy]\nspecific = {versions=[1, 5]}\n")
    (model_dir / "1").mkdir()
    with pytest.raises(ModelLoadError, match=r"version_policy\.specific\.versions.*5"):
        model_versions(load_config(model_dir))


# -- bad configs -------------------------------------------------------------------------------

# (config text, key the message must name, words of the expectation it must state)
BAD_CONFIGS = [
    pytest.param('backend = "onnxruntime"\nmax_batch_size = "8"\n',
                 "max_batch_size", "expected an integer from 0 to 65536, got '8'", id="wrong-type"),
    pytest.param('backend = "onnxruntime"\nmax_batch_size = true\n',
                 "max_batch_size", "got true (a boolean)", id="bool-for-int"),
    pytest.param('backend = "onnxruntime"\nmax_batch_size = -1\n',
                 "max_batch_size", "expected an integer from 0 to 65536, got -1", id="negative"),
    pytest.param('backend = "onnxruntime"\nmax_batch_size = 100000\n',
                 "max_batch_size", "expected an integer from 0 to 65536, got 100000",
                 id="too-large"),
    pytest.param('backend = "identity"\n[[input]]\nname = "x"\ndata_type = "FP32"\n'
                 'dims = [99999999999]\n',
                 "input[0].dims[0]", "99999999999", id="dim-too-large"),
    pytest.param('backend = "onnxruntime"\nmax_batch_sise = 8\n',
                 "max_batch_sise", "did you mean 'max_batch_size'", id="unknown-key"),
    pytest.param(MINIMAL + '[[input]]\nname = "x"\ndata_type = "TYPE_FLAOT"\ndims = [4]\n',
                 "input[0].data_type", "expected a datatype such as TYPE_FP32", id="datatype"),
    pytest.param(MINIMAL + TENSOR + '[[input]]\nname = "y"\ndatatype = "FP32"\ndims = "abc"\n',
                 "input[1].dims", "expected a non-empty list of positive integers or -1, "
                 "got 'abc'", id="dims-string"),
    pytest.param(MINIMAL + TENSOR.replace("[4]", "[4, 0]"),
                 "input[0].dims[1]", "positive integers or -1, got 0", id="dims-zero"),
    pytest.param(MINIMAL + TENSOR.replace("[4]", "[true]"),
                 "input[0].dims[0]", "got true (a boolean)", id="dims-bool"),
    pytest.param(MINIMAL + TENSOR.replace("dims = [4]\n", ""),
                 "input[0].dims", "expected a value, got none", id="dims-missing"),
    pytest.param(MINIMAL + TENSOR.replace("dims", "shape"),
                 "input[0].shape", "unknown key 'shape'", id="tensor-unknown-key"),
    pytest.param(MINIMAL + TENSOR + TENSOR,
                 "input[1].name", "a name no other input uses, got 'x'", id="duplicate-tensor"),
    pytest.param(MINIMAL + TENSOR + TENSOR.replace("[[input]]", "[[inputs]]"),
                 "inputs", "expected either [[input]] or [[inputs]], got both", id="both-spellings"),
    pytest.param(MINIMAL + "[dynamic_batching]\npreferred_batch_size = [4, 16]\n",
                 "dynamic_batching.preferred_batch_size[1]",
                 "an array of integers from 1 to max_batch_size (8), got 16",
                 id="preferred-over-max"),
    pytest.param('backend = "onnxruntime"\n[dynamic_batching]\n', "dynamic_batching",
                 "expected max_batch_size >= 1 for dynamic batching, got max_batch_size 0",
                 id="batching-without-batch"),
    pytest.param(MINIMAL + "[dynamic_batching]\nmax_queue_delay_microseconds = -5\n",
                 "dynamic_batching.max_queue_delay_microseconds", "expected an integer from 0 to 2147483647",
                 id="negative-delay"),
    pytest.param(MINIMAL + "[dynamic_batching]\npreserve_ordering = 1\n",
                 "dynamic_batching.preserve_ordering", "expected true or false, got 1",
                 id="ordering-int"),
    pytest.param(MINIMAL + "[dynamic_batching]\npriority_levels = 2\ndefault_priority_level = 3\n",
                 "dynamic_batching.default_priority_level",
                 "an integer from 1 to priority_levels (2), got 3", id="default-level-range"),
    pytest.param(MINIMAL + "[dynamic_batching]\ndefault_priority_level = 1\n",
                 "dynamic_batching.default_priority_level",
                 "expected 0 or no key (priority_levels is 0), got 1", id="level-without-levels"),
    pytest.param(MINIMAL + "[dynamic_batching]\npriority_levels = 2000\n",
                 "dynamic_batching.priority_levels", "from 0 to 1024, got 2000",
                 id="too-many-levels"),
    pytest.param(MINIMAL + "[dynamic_batching]\npriority_levels = 2\n"
                 "[dynamic_batching.priority_queue_policy.3]\nmax_queue_size = 1\n",
                 "dynamic_batching.priority_queue_policy.3", "one of the keys 1, 2",
                 id="policy-level-range"),
    pytest.param(MINIMAL + "[dynamic_batching.default_queue_policy]\ntimeout_action = \"DROP\"\n",
                 "dynamic_batching.default_queue_policy.timeout_action",
                 "one of 'REJECT', 'DELAY', got 'DROP'", id="timeout-action"),
    pytest.param(MINIMAL + "[dynamic_batching.default_queue_policy]\nmax_queue_size = -1\n",
                 "dynamic_batching.default_queue_policy.max_queue_size",
                 "an integer from 0 to 2147483647, got -1", id="negative-queue-size"),
    pytest.param(MINIMAL + "[dynamic_batching.default_queue_policy]\nmax_queue_sise = 4\n",
                 "dynamic_batching.default_queue_policy.max_queue_sise",
                 "did you mean 'max_queue_size'", id="policy-typo"),
    pytest.param(MINIMAL + "[dynamic_batching]\nlatency_target_microseconds = 1000\n"
                 "max_queue_delay_microseconds = 100\n",
                 "dynamic_batching.latency_target_microseconds",
                 "expected either it or max_queue_delay_microseconds, got both",
                 id="target-and-delay"),
    pytest.param(MINIMAL + "[[instance_group]]\ncount = 0\n",
                 "instance_group[0].count", "expected an integer from 1 to 64, got 0", id="count-zero"),
    pytest.param(MINIMAL + '[[instance_group]]\nkind = "GPU"\n',
                 "instance_group[0].kind", "one of 'KIND_CPU', 'KIND_GPU', 'KIND_AUTO', got 'GPU'",
                 id="instance-kind"),
    pytest.param(MINIMAL + '[[instance_group]]\nkind = "KIND_CPU"\ngpus = [0]\n',
                 "instance_group[0].gpus", "no gpus for kind KIND_CPU", id="gpus-on-cpu"),
    pytest.param(MINIMAL + "[version_policy]\nlatest = { num_versions = 0 }\n",
                 "version_policy.latest.num_versions", "expected an integer from 1 to 2147483647",
                 id="num-versions"),
    pytest.param(MINIMAL + "[version_policy]\nall = {}\nlatest = {}\n",
                 "version_policy", "exactly one of latest = {num_versions = N}, all = {} or "
                 "specific = {versions = [...]}, got all, latest", id="two-policies"),
    pytest.param(MINIMAL + "[version_policy]\nnewest = {}\n",
                 "version_policy.newest", "unknown key 'newest'", id="unknown-policy"),
    pytest.param(MINIMAL + "[version_policy]\nspecific = { versions = [] }\n",
                 "version_policy.specific.versions", "a non-empty array of version numbers",
                 id="no-versions"),
    pytest.param(MINIMAL + "[parameters]\nthreads = [1, 2]\n",
                 "parameters.threads", "a string, number or boolean, got an array [1, 2]",
                 id="parameter-array"),
    pytest.param('name = "other"\n' + MINIMAL, "name",
                 "expected the model folder's name 'm', got 'other'", id="name-mismatch"),
    pytest.param("max_batch_size = 8\n", "backend",
                 "expected one of 'identity', 'onnxruntime', 'pytorch', 'tensorrt'",
                 id="missing-backend"),
    pytest.param('backend = "onnx"\n', "backend", "expected one of 'identity', 'onnxruntime'",
                 id="unknown-backend"),
    pytest.param('platform = "tensorflow_savedmodel"\n', "platform",
                 "'onnxruntime_onnx'", id="unknown-platform"),
    pytest.param('backend = "onnxruntime"\nplatform = "tensorrt_plan"\n', "platform",
                 "expected 'onnxruntime_onnx' for backend 'onnxruntime'", id="platform-mismatch"),
    pytest.param(MINIMAL + 'default_model_filename = "../model.onnx"\n',
                 "default_model_filename", "a file name inside the version folder",
                 id="filename-path"),
]


@pytest.mark.parametrize(("text", "key", "expectation"), BAD_CONFIGS)
def test_bad_config(tmp_path: Path, text: str, key: str, expectation: str) -> None:
    model_dir = write_model(tmp_path, text)
    with pytest.raises(ModelLoadError) as info:
        load_config(model_dir)
    message = str(info.value)
    assert message.startswith(f"{model_dir / 'config.toml'}: {key}: "), message
    assert expectation in message, message
    assert info.value.http_status == 400


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    model_dir = write_model(tmp_path, 'backend = "onnxruntime"\nmax_batch_size = = 8\n')
    with pytest.raises(ModelLoadError) as info:
        load_config(model_dir)
    message = str(info.value)
    assert message.startswith(f"{model_dir / 'config.toml'}: invalid TOML: "), message
    assert "line 2" in message, message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no config.toml or config.pbtxt, and no model file"):
        load_config(tmp_path)


def test_model_config_is_frozen() -> None:
    config: ModelConfig = load_config(ENGINES / "identity")
    with pytest.raises(AttributeError):
        config.max_batch_size = 3  # type: ignore[misc]
