"""Poll mode (new, removed, changed and broken model folders), warmup before READY, and Triton
repositories: config.pbtxt and folders with no configuration at all."""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from pyserver.dataplane import ControlMode
from tests.conftest import ENGINES

IDENTITY_PBTXT = """
name: "identity"
backend: "identity"
max_batch_size: 256
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
dynamic_batching { }
instance_group [ { kind: KIND_CPU count: 1 } ]
"""
IDENTITY_BYTES_PBTXT = """
backend: "identity"
max_batch_size: 64
input { name: "INPUT0" data_type: TYPE_STRING dims: [ 1 ] }
output { name: "OUTPUT0" data_type: TYPE_STRING dims: [ 1 ] }
dynamic_batching { max_queue_delay_microseconds: 0 }
"""
ADD_SUB_PBTXT = """
platform: "onnxruntime_onnx"
max_batch_size: 64
input [
  { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_FP32 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 16 ] }
]
dynamic_batching { }
parameters { key: "intra_op_num_threads" value: { string_value: "1" } }
"""
DIGITS_PBTXT = """
platform: "onnxruntime_onnx"
max_batch_size: 128
dynamic_batching { max_queue_delay_microseconds: 200 }
parameters: { key: "intra_op_num_threads" value: { string_value: "1" } }
parameters: { key: "graph_optimization_level" value: { string_value: "all" } }
"""


def triton_repository(root: Path) -> Path:
    """The bundled models as a Triton user writes them: config.pbtxt beside the version folders."""
    for name, text in (("identity", IDENTITY_PBTXT), ("identity_bytes", IDENTITY_BYTES_PBTXT),
                       ("add_sub", ADD_SUB_PBTXT), ("digits", DIGITS_PBTXT)):
        shutil.copytree(ENGINES / name / "1", root / name / "1")
        (root / name / "config.pbtxt").write_text(text)
    return root


def answers(url: str) -> dict[str, list[np.ndarray]]:
    """Each bundled model's answers to fixed inputs."""
    client = httpclient.InferenceServerClient(url)
    rng = np.random.default_rng(7)
    out: dict[str, list[np.ndarray]] = {}
    x = rng.random((3, 16)).astype(np.float32)
    a = httpclient.InferInput("INPUT0", [3, 16], "FP32")
    a.set_data_from_numpy(x)
    out["identity"] = [client.infer("identity", [a]).as_numpy("OUTPUT0")]
    b = httpclient.InferInput("INPUT1", [3, 16], "FP32")
    b.set_data_from_numpy(x[::-1].copy())
    r = client.infer("add_sub", [a, b])
    out["add_sub"] = [r.as_numpy("OUTPUT0"), r.as_numpy("OUTPUT1")]
    s = httpclient.InferInput("INPUT0", [2, 1], "BYTES")
    s.set_data_from_numpy(np.array([[b"abc"], [b"\x00\xff"]], dtype=object))
    out["identity_bytes"] = [client.infer("identity_bytes", [s]).as_numpy("OUTPUT0")]
    p = httpclient.InferInput("pixels", [4, 64], "FP32")
    p.set_data_from_numpy((rng.random((4, 64)) * 16).astype(np.float32))
    r = client.infer("digits", [p])
    out["digits"] = [r.as_numpy("label"), r.as_numpy("probabilities")]
    return out


def test_a_triton_repository_serves_the_same_answers(tmp_path: Path, server,  # type: ignore[no-untyped-def]
                                                     serve_repository) -> None:
    running = serve_repository(triton_repository(tmp_path / "triton"))
    assert httpclient.InferenceServerClient(running.url).is_server_ready()
    theirs, ours = answers(running.url), answers(server.url)
    assert theirs.keys() == ours.keys()
    for name in ours:
        for got, expected in zip(theirs[name], ours[name], strict=True):
            np.testing.assert_array_equal(got, expected)


def test_a_folder_with_only_the_model_file(tmp_path: Path, serve_repository) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "models"
    shutil.copytree(ENGINES / "digits" / "1", repo / "digits" / "1")  # 1/model.onnx, no config
    running = serve_repository(repo, default_max_batch_size=8)
    client = httpclient.InferenceServerClient(running.url)
    config = client.get_model_config("digits")
    assert config["max_batch_size"] == 8
    assert "dynamic_batching" in config
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("pixels", "TYPE_FP32", [64])]
    assert [(t["name"], t["data_type"]) for t in config["output"]] == [
        ("label", "TYPE_INT64"), ("probabilities", "TYPE_FP32")]
    p = httpclient.InferInput("pixels", [8, 64], "FP32")
    p.set_data_from_numpy(np.zeros((8, 64), np.float32))
    assert client.infer("digits", [p]).as_numpy("label").shape == (8, 1)


def stats(url: str, model: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(f"http://{url}/v2/models/{model}/stats", timeout=10) as r:
        return json.loads(r.read())["model_stats"][0]  # type: ignore[no-any-return]


WARMUP = """
[[model_warmup]]
name = "ones"
batch_size = 3
count = 5
[model_warmup.inputs.INPUT0]
data_type = "TYPE_FP32"
dims = [16]
input_data_file = "ones.bin"
"""


def test_warmup_runs_through_the_scheduler_before_ready(tmp_path: Path, serve_repository) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "models"
    shutil.copytree(ENGINES / "identity", repo / "identity")
    (repo / "identity" / "warmup").mkdir()
    (repo / "identity" / "warmup" / "ones.bin").write_bytes(np.ones((3, 16), np.float32).tobytes())
    with (repo / "identity" / "config.toml").open("a") as f:
        f.write(WARMUP)
    running = serve_repository(repo)
    s = stats(running.url, "identity")
    assert s["execution_count"] == 5 and s["inference_count"] == 15  # before any request


def test_a_failing_warmup_fails_the_load(tmp_path: Path, serve_repository) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "models"
    shutil.copytree(ENGINES / "identity", repo / "identity")
    (repo / "identity" / "warmup").mkdir()
    (repo / "identity" / "warmup" / "ones.bin").write_bytes(b"\x00" * 10)  # not 3x16 FP32
    with (repo / "identity" / "config.toml").open("a") as f:
        f.write(WARMUP)
    running = serve_repository(repo)
    client = httpclient.InferenceServerClient(running.url)
    assert not client.is_model_ready("identity")
    (entry,) = client.get_model_repository_index()
    assert entry["state"] == "UNAVAILABLE"
    assert "model_warmup[0] ('ones')" in entry["reason"] and "holds 10 bytes" in entry["reason"]


def test_loading_shows_in_readiness_and_the_index(tmp_path: Path, serve_repository) -> None:  # type: ignore[no-untyped-def]
    """A warmup that takes a second: the model is LOADING meanwhile, then READY."""
    repo = tmp_path / "models"
    (repo / "slow" / "1").mkdir(parents=True)
    (repo / "slow" / "config.toml").write_text(
        'backend = "identity"\nmax_batch_size = 0\n[[input]]\nname = "INPUT0"\n'
        'data_type = "TYPE_FP32"\ndims = [4]\n[parameters]\nexecute_delay_us = 250000\n'
        '[[model_warmup]]\nname = "w"\ncount = 4\n[model_warmup.inputs.INPUT0]\n'
        'data_type = "TYPE_FP32"\ndims = [4]\nrandom_data = true\n')
    running = serve_repository(repo, model_control_mode=ControlMode.EXPLICIT)
    client = httpclient.InferenceServerClient(running.url)
    request = urllib.request.Request(f"{running.http}/v2/repository/models/slow/load", data=b"{}",
                                     method="POST")
    loader = threading.Thread(target=lambda: urllib.request.urlopen(request, timeout=60).close())
    loader.start()
    time.sleep(0.4)
    assert client.get_model_repository_index() == [
        {"name": "slow", "version": "1", "state": "LOADING"}]
    assert not client.is_model_ready("slow")
    loader.join()
    assert client.is_model_ready("slow")
    assert client.get_model_repository_index() == [
        {"name": "slow", "version": "1", "state": "READY"}]


def wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def polled(tmp_path: Path, serve_repository):  # type: ignore[no-untyped-def]
    repo = tmp_path / "models"
    shutil.copytree(ENGINES / "identity", repo / "identity")
    running = serve_repository(repo, model_control_mode=ControlMode.POLL,
                               repository_poll_secs=0.2)
    return httpclient.InferenceServerClient(running.url), repo


def test_poll_loads_new_folders_and_unloads_removed_ones(polled) -> None:  # type: ignore[no-untyped-def]
    client, repo = polled
    assert client.is_model_ready("identity")
    shutil.copytree(ENGINES / "add_sub", repo / "add_sub")
    wait_for(lambda: client.is_model_ready("add_sub"))
    shutil.rmtree(repo / "add_sub")
    wait_for(lambda: not client.is_model_ready("add_sub"))
    assert client.is_server_ready()  # a removed model is no longer expected


def test_poll_reloads_a_changed_config_and_keeps_serving_a_broken_one(polled) -> None:  # type: ignore[no-untyped-def]
    client, repo = polled
    config = repo / "identity" / "config.toml"
    config.write_text(config.read_text().replace("max_batch_size = 256", "max_batch_size = 32"))
    wait_for(lambda: client.get_model_config("identity")["max_batch_size"] == 32)
    broken = config.with_suffix(".new")
    broken.write_text("backend = \"identity\"\nmax_batch_size = 'many'\n")
    broken.replace(config)  # whole, as a careful deployment writes it
    wait_for(lambda: "max_batch_size" in client.get_model_repository_index()[0].get("reason", ""))
    (entry,) = client.get_model_repository_index()
    assert entry["state"] == "READY" and "reload failed" in entry["reason"]
    x = httpclient.InferInput("INPUT0", [1, 16], "FP32")
    x.set_data_from_numpy(np.ones((1, 16), np.float32))
    assert client.infer("identity", [x]).as_numpy("OUTPUT0").sum() == 16
    assert client.get_model_config("identity")["max_batch_size"] == 32


def test_poll_adds_a_new_version_folder(polled) -> None:  # type: ignore[no-untyped-def]
    client, repo = polled
    shutil.copytree(repo / "identity" / "1", repo / "identity" / "2")
    wait_for(lambda: client.get_model_metadata("identity")["versions"] == ["2"])
    assert client.is_model_ready("identity", "2")
    assert not client.is_model_ready("identity", "1")  # latest 1: version 1 unloaded
