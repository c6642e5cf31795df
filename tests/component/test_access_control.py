"""--http-restricted-api and --grpc-restricted-protocol: each API group open by default and, when
restricted, refused without the header value (403 / PERMISSION_DENIED) and with no side effect;
values from the environment or a file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from pyserver.access import API_GROUPS, AccessPolicy, parse_restriction
from pyserver.dataplane import ControlMode
from pyserver.errors import Forbidden
from pyserver.http.routes import ROUTES
from tests.component.test_http_errors import request
from tests.conftest import ENGINES

SECRET = "s3cret-value"
BODIES = {
    "infer": json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                                     "data": [0.0] * 16}]}).encode(),
    "update_log_settings": b"{}",
    "load_model": b"{}",
    "unload_model": b"{}",
    "repository_index": b"",
}


def path_of(route) -> str:  # type: ignore[no-untyped-def]
    model = "digits" if route.handler == "model_monitoring" else "identity"
    return route.path.replace("{model}", model).replace("{version}", "1")


@pytest.fixture
def restricted(tmp_path: Path, serve_repository, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    repo = tmp_path / "models"
    for name in ("identity", "digits"):
        shutil.copytree(ENGINES / name, repo / name)
    monkeypatch.setenv("PYSERVER_TEST_SECRET", SECRET)
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    everything = [g for g in API_GROUPS if g not in ("shared-memory", "trace")]
    http = (
        parse_restriction("model-repository,logging:admin-key=env:PYSERVER_TEST_SECRET"),
        parse_restriction(f"{','.join(g for g in everything if g not in ('model-repository', 'logging'))}"
                          f":admin-key=file:{secret_file}"),
    )
    grpc_restricted = (parse_restriction(f"model-repository,inference:admin-key={SECRET}"),)
    return serve_repository(repo, model_control_mode=ControlMode.EXPLICIT,
                            load_models=("identity", "digits"), http_restricted=http,
                            grpc_restricted=grpc_restricted)


@pytest.mark.parametrize("route", [r for r in ROUTES if r.group], ids=lambda r: f"{r.method} {r.path}")
def test_every_group_refuses_without_the_header(restricted, route) -> None:  # type: ignore[no-untyped-def]
    body = BODIES.get(route.handler, b"") if route.method == "POST" else b""
    status, _, answer = request(restricted, route.method, path_of(route), body)
    assert status == 403, answer
    assert f"the {route.group} API is restricted" in json.loads(answer)["error"]
    assert "admin-key" in json.loads(answer)["error"] and SECRET not in answer.decode()
    status, _, answer = request(restricted, route.method, path_of(route), body,
                                {"admin-key": "wrong"})
    assert status == 403
    status, _, answer = request(restricted, route.method, path_of(route), body,
                                {"Admin-Key": SECRET})
    assert status != 403, answer


def test_the_repository_routes_are_one_group() -> None:
    """Triton's model-repository group is index, load and unload, over HTTP as over gRPC."""
    repository = {f"{r.method} {r.path}" for r in ROUTES if r.path.startswith("/v2/repository/")}
    assert len(repository) == 3
    assert {r.group for r in ROUTES if r.path.startswith("/v2/repository/")} == {"model-repository"}


def test_a_refused_request_has_no_side_effect(restricted) -> None:  # type: ignore[no-untyped-def]
    assert request(restricted, "POST", "/v2/repository/models/identity/unload", b"{}")[0] == 403
    assert request(restricted, "GET", "/v2/models/identity/ready", b"",
                   {"admin-key": SECRET})[0] == 200
    stats = json.loads(request(restricted, "GET", "/v2/models/identity/stats", b"",
                               {"admin-key": SECRET})[2])
    before = stats["model_stats"][0]["inference_stats"]["success"]["count"]
    assert request(restricted, "POST", "/v2/models/identity/infer", BODIES["infer"])[0] == 403
    stats = json.loads(request(restricted, "GET", "/v2/models/identity/stats", b"",
                               {"admin-key": SECRET})[2])
    assert stats["model_stats"][0]["inference_stats"]["success"]["count"] == before
    # /metrics is never restricted: Prometheus scrapes it as it is
    assert request(restricted, "GET", "/metrics")[0] == 200


def test_grpc_restricted_protocol(restricted) -> None:  # type: ignore[no-untyped-def]
    client = grpcclient.InferenceServerClient(restricted.grpc_url)
    try:
        assert client.is_server_live()  # health: not restricted over gRPC here
        assert client.get_model_metadata("identity", as_json=True)["name"] == "identity"
        with pytest.raises(InferenceServerException) as info:
            client.unload_model("identity")
        assert info.value.status() == "StatusCode.PERMISSION_DENIED"
        assert "model-repository API is restricted" in info.value.message()
        inp = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 16), np.float32))
        with pytest.raises(InferenceServerException) as info:
            client.infer("identity", [inp])
        assert info.value.status() == "StatusCode.PERMISSION_DENIED"
        assert client.infer("identity", [inp], headers={"admin-key": SECRET}).as_numpy(
            "OUTPUT0").shape == (1, 16)
        client.unload_model("identity", headers={"admin-key": SECRET})
        assert not client.is_model_ready("identity")
        stream_denied = []
        client.start_stream(callback=lambda result, error: stream_denied.append(error))
        pixels = grpcclient.InferInput("pixels", [1, 64], "FP32")
        pixels.set_data_from_numpy(np.zeros((1, 64), np.float32))
        try:  # the server refuses the stream as it opens: reported through the callback
            client.async_stream_infer("digits", [pixels])
        except InferenceServerException:
            pass
        client.stop_stream()
        assert stream_denied and "PERMISSION_DENIED" in str(stream_denied[0])
    finally:
        client.close()


def test_parsing_and_the_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = parse_restriction("metadata,model-config:X-Key=abc")
    assert r.groups == {"metadata"} and r.header == "x-key" and r.value == b"abc"
    for bad, words in [("metadata", "expected <api>"), ("nope:k=v", "unknown API group 'nope'"),
                       ("metadata:k=env:PYSERVER_UNSET_VAR", "is not set"),
                       (f"metadata:k=file:{tmp_path / 'missing'}", "cannot read"),
                       ("metadata:k=", "the value is empty")]:
        monkeypatch.delenv("PYSERVER_UNSET_VAR", raising=False)
        with pytest.raises(ValueError, match=words):
            parse_restriction(bad)
    with pytest.raises(ValueError, match="restricted twice"):
        AccessPolicy([parse_restriction("logging:a=1"), parse_restriction("logging:b=2")])
    policy = AccessPolicy([r])
    policy.check("inference", {}.get)  # open
    policy.check("metadata", {"x-key": "abc"}.get)
    with pytest.raises(Forbidden):
        policy.check("metadata", {"x-key": "abd"}.get)
