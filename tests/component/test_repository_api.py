"""Triton's model repository extension over HTTP, with the real tritonclient: index, load (with
and without config and files), unload, per-version control, and what bad requests get."""

from __future__ import annotations

import base64
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from pyserver.dataplane import ControlMode
from tests.conftest import ENGINES, RunningServer


def post(running: RunningServer, path: str, body: object | bytes | None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    request = urllib.request.Request(running.http + path, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def repository(tmp_path: Path, *names: str) -> Path:
    repo = tmp_path / "models"
    for name in names:
        shutil.copytree(ENGINES / name, repo / name)
    return repo


def identity_input(values: np.ndarray) -> httpclient.InferInput:
    inp = httpclient.InferInput("INPUT0", list(values.shape), "FP32")
    inp.set_data_from_numpy(values)
    return inp


@pytest.fixture
def explicit(tmp_path: Path, serve_repository):  # type: ignore[no-untyped-def]
    repo = repository(tmp_path, "identity", "add_sub", "digits")
    running = serve_repository(repo, model_control_mode=ControlMode.EXPLICIT,
                               load_models=("identity",))
    return running, repo


def test_index_load_unload_with_tritonclient(explicit) -> None:  # type: ignore[no-untyped-def]
    running, _ = explicit
    client = httpclient.InferenceServerClient(running.url)
    index = client.get_model_repository_index()
    assert {"name": "identity", "version": "1", "state": "READY"} in index
    assert {"name": "add_sub"} in index  # never loaded: the name alone
    assert {"name": "digits"} in index
    assert not client.is_model_ready("add_sub")

    client.load_model("add_sub")
    assert client.is_model_ready("add_sub")
    a = np.arange(16, dtype=np.float32).reshape(1, 16)
    inputs = [httpclient.InferInput(n, [1, 16], "FP32") for n in ("INPUT0", "INPUT1")]
    for inp in inputs:
        inp.set_data_from_numpy(a)
    result = client.infer("add_sub", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + a)

    client.unload_model("add_sub")
    assert not client.is_model_ready("add_sub")
    with pytest.raises(InferenceServerException, match="add_sub"):
        client.infer("add_sub", inputs)
    index = client.get_model_repository_index()
    assert {"name": "add_sub", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"} in index
    ready_only = post(running, "/v2/repository/index", {"ready": True})[1]
    assert ready_only == [{"name": "identity", "version": "1", "state": "READY"}]


def test_kserve_agent_posts_an_empty_object(explicit) -> None:  # type: ignore[no-untyped-def]
    running, _ = explicit
    assert post(running, "/v2/repository/models/digits/load", {}) == (200, None)
    assert post(running, "/v2/repository/models/digits/unload", {}) == (200, None)
    assert post(running, "/v2/repository/models/digits/load", b"") == (200, None)


def test_server_metadata_lists_the_extension(explicit) -> None:  # type: ignore[no-untyped-def]
    running, _ = explicit
    extensions = httpclient.InferenceServerClient(running.url).get_server_metadata()["extensions"]
    assert "model_repository" in extensions
    assert "model_repository(unload_dependents)" in extensions


def test_load_with_config_and_files(explicit) -> None:  # type: ignore[no-untyped-def]
    """A model that is not in the repository at all, from a config and its file."""
    running, _ = explicit
    client = httpclient.InferenceServerClient(running.url)
    config = json.dumps({"backend": "onnxruntime", "max_batch_size": 8,
                         "dynamic_batching": {}})
    onnx_bytes = (ENGINES / "digits" / "1" / "model.onnx").read_bytes()
    client.load_model("uploaded", config=config, files={"file:1/model.onnx": onnx_bytes})
    assert client.is_model_ready("uploaded")
    served = client.get_model_config("uploaded")
    assert served["max_batch_size"] == 8
    assert [t["name"] for t in served["input"]] == ["pixels"]
    pixels = httpclient.InferInput("pixels", [1, 64], "FP32")
    pixels.set_data_from_numpy(np.zeros((1, 64), np.float32))
    assert client.infer("uploaded", [pixels]).as_numpy("label").shape == (1, 1)


def test_config_override_reloads_the_model(explicit) -> None:  # type: ignore[no-untyped-def]
    running, _ = explicit
    client = httpclient.InferenceServerClient(running.url)
    assert client.get_model_config("identity")["max_batch_size"] == 256
    config = to_override(client.get_model_config("identity"), max_batch_size=32)
    client.load_model("identity", config=json.dumps(config))
    assert client.get_model_config("identity")["max_batch_size"] == 32
    x = np.ones((2, 16), np.float32)
    np.testing.assert_array_equal(client.infer("identity", [identity_input(x)]).as_numpy("OUTPUT0"), x)


def to_override(triton_config: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return triton_config | changes


def test_one_version_at_a_time(tmp_path: Path, serve_repository) -> None:  # type: ignore[no-untyped-def]
    """pyserver's own: {"parameters": {"version": "N"}} loads or unloads one version beside the
    others (a canary), whatever the version policy says."""
    repo = repository(tmp_path, "identity")
    shutil.copytree(repo / "identity" / "1", repo / "identity" / "2")
    shutil.copytree(repo / "identity" / "1", repo / "identity" / "3")
    running = serve_repository(repo, model_control_mode=ControlMode.EXPLICIT,
                               load_models=("identity",))
    client = httpclient.InferenceServerClient(running.url)
    assert client.get_model_metadata("identity")["versions"] == ["3"]  # latest 1
    assert post(running, "/v2/repository/models/identity/load",
                {"parameters": {"version": "1"}}) == (200, None)
    assert client.get_model_metadata("identity")["versions"] == ["1", "3"]
    assert client.is_model_ready("identity", "1") and client.is_model_ready("identity", "3")
    assert not client.is_model_ready("identity", "2")
    x = np.ones((1, 16), np.float32)
    assert client.infer("identity", [identity_input(x)], model_version="1").get_response()[
        "model_version"] == "1"
    assert client.infer("identity", [identity_input(x)]).get_response()["model_version"] == "3"
    assert post(running, "/v2/repository/models/identity/unload",
                {"parameters": {"version": "3"}}) == (200, None)
    assert client.get_model_metadata("identity")["versions"] == ["1"]
    assert client.infer("identity", [identity_input(x)]).get_response()["model_version"] == "1"
    status, body = post(running, "/v2/repository/models/identity/load",
                        {"parameters": {"version": "7"}})
    assert status == 400 and "no version folder '7'" in body["error"]
    status, body = post(running, "/v2/repository/models/identity/unload",
                        {"parameters": {"version": "2"}})
    assert status == 404 and "no version '2' loaded" in body["error"]


def test_mode_none_refuses_load_and_unload(tmp_path: Path, serve_repository) -> None:  # type: ignore[no-untyped-def]
    running = serve_repository(repository(tmp_path, "identity"))
    for action in ("load", "unload"):
        status, body = post(running, f"/v2/repository/models/identity/{action}", {})
        assert status == 400
        assert "--model-control-mode none" in body["error"]
    # the index answers in every mode
    assert post(running, "/v2/repository/index", None)[1] == [
        {"name": "identity", "version": "1", "state": "READY"}]


ONNX_CONFIG = json.dumps({"backend": "onnxruntime", "max_batch_size": 8})


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"parameters": {"config": "{not json"}}, 400, "not valid JSON"),
    ({"parameters": {"config": '{"max_batch_size": 8}'}}, 400, "backend: expected one of"),
    ({"parameters": {"config": '{"backend": "onnxruntime", "max_batch_sise": 8}'}}, 400,
     "max_batch_sise"),
    ({"parameters": {"config": ONNX_CONFIG, "file:1/model.onnx": "%%% not base64"}}, 400,
     "not valid base64"),
    ({"parameters": {"file:1/model.onnx": base64.b64encode(b"x").decode()}}, 400,
     "need a 'config' parameter"),
    ({"parameters": {"config": ONNX_CONFIG,
                     "file:../escape/model.onnx": base64.b64encode(b"x").decode()}}, 400,
     "no '..'"),
    ({"parameters": {"config": ONNX_CONFIG,
                     "file:/etc/model.onnx": base64.b64encode(b"x").decode()}}, 400,
     "no absolute path"),
    ({"parameters": {"config": ONNX_CONFIG,
                     "file:1/model.onnx": base64.b64encode(b"not onnx").decode()}}, 400,
     "onnxruntime could not load it"),
    ({"parameters": {"version": "x"}}, 400, "version must be a positive integer"),
    ({"parameters": {"surprise": 1}}, 400, "unknown parameter 'surprise'"),
    ({"parameters": []}, 400, "'parameters' must be a JSON object"),
    ([1, 2], 400, "must be a JSON object"),
    (b"{oops", 400, "not valid JSON"),
])
def test_bad_load_requests(explicit, body: object, status: int, words: str) -> None:  # type: ignore[no-untyped-def]
    running, _ = explicit
    before = post(running, "/v2/repository/index", None)[1]
    got, answer = post(running, "/v2/repository/models/digits/load", body)
    assert got == status, answer
    assert words in answer["error"], answer
    # nothing half-loaded: digits is not ready, and what served still serves
    client = httpclient.InferenceServerClient(running.url)
    assert not client.is_model_ready("digits")
    assert client.is_model_ready("identity")
    after = post(running, "/v2/repository/index", None)[1]
    assert [e for e in after if e["name"] != "digits"] == [e for e in before if e["name"] != "digits"]


def test_a_file_that_climbs_out_writes_nothing(explicit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    running, _ = explicit
    target = tmp_path / "escaped.txt"
    body = {"parameters": {"config": ONNX_CONFIG,
                           "file:1/model.onnx": base64.b64encode(b"ok").decode(),
                           f"file:../../../../../../..{target}": base64.b64encode(b"pwned").decode()}}
    status, answer = post(running, "/v2/repository/models/x/load", body)
    assert status == 400 and "no '..'" in answer["error"]
    assert not target.exists()


def test_unknown_model(explicit) -> None:  # type: ignore[no-untyped-def]
    running, _ = explicit
    status, body = post(running, "/v2/repository/models/nope/load", {})
    assert status == 400 and "unknown model 'nope'" in body["error"]
    status, body = post(running, "/v2/repository/models/nope/unload", {})
    assert status == 404 and "unknown model 'nope'" in body["error"]


def test_a_failed_reload_keeps_the_old_version(explicit) -> None:  # type: ignore[no-untyped-def]
    running, repo = explicit
    client = httpclient.InferenceServerClient(running.url)
    (repo / "identity" / "config.toml").write_text('backend = "identity"\nmax_batch_size = -3\n')
    status, body = post(running, "/v2/repository/models/identity/load", {})
    assert status == 400 and "max_batch_size" in body["error"]
    assert client.is_model_ready("identity")
    x = np.ones((1, 16), np.float32)
    np.testing.assert_array_equal(client.infer("identity", [identity_input(x)]).as_numpy("OUTPUT0"), x)
    (entry,) = [e for e in client.get_model_repository_index() if e["name"] == "identity"]
    assert entry["state"] == "READY"
    assert "reload failed" in entry["reason"] and "max_batch_size" in entry["reason"]


def test_strict_readiness(tmp_path: Path, serve_repository) -> None:  # type: ignore[no-untyped-def]
    repo = repository(tmp_path, "identity")
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "config.toml").write_text('backend = "identity"\n')  # no inputs
    strict = serve_repository(repo)
    assert not httpclient.InferenceServerClient(strict.url).is_server_ready()
    relaxed = serve_repository(repo, strict_readiness=False)
    assert httpclient.InferenceServerClient(relaxed.url).is_server_ready()
    status, body = post(strict, "/v2/repository/index", None)
    assert body[0] == {"name": "broken", "version": "1", "state": "UNAVAILABLE",
                       "reason": body[0]["reason"]}
    assert "needs its inputs declared" in body[0]["reason"]


def test_model_state_and_load_duration_metrics(explicit) -> None:  # type: ignore[no-untyped-def]
    running, _ = explicit
    post(running, "/v2/repository/models/add_sub/load", {})
    post(running, "/v2/repository/models/add_sub/unload", {})
    with urllib.request.urlopen(running.http + "/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'pyserver_model_state{model="identity",state="READY",version="1"} 1' in text
    assert 'pyserver_model_state{model="identity",state="LOADING",version="1"} 0' in text
    assert 'pyserver_model_state{model="add_sub",state="UNAVAILABLE",version="1"} 1' in text
    count = next(line for line in text.splitlines()
                 if line.startswith("pyserver_model_load_duration_seconds_count"))
    assert count.split()[-1] == "2"  # identity at start, add_sub through the API
