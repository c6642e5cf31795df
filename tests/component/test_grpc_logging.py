"""Logs of gRPC calls: nothing per call at the default level; at verbose level one line per call
carrying the request's id and the status it ended with (as over HTTP, test_logging.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.component.test_logging import captured, lines  # noqa: F401  (fixture)
from tests.conftest import RunningServer


def infer(client: grpcclient.InferenceServerClient, width: int, request_id: str = "") -> None:
    inp = grpcclient.InferInput("INPUT0", [1, width], "FP32")
    inp.set_data_from_numpy(np.zeros((1, width), np.float32))
    client.infer("identity", [inp], request_id=request_id)


def test_grpc_call_lines(server: RunningServer, captured: io.StringIO) -> None:  # noqa: F811
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        infer(client, 16, "quiet")
        assert lines(captured) == []  # default level: nothing per call
        client.update_log_settings({"log_verbose_level": 1})
        infer(client, 16, "g-1")
        with pytest.raises(grpcclient.InferenceServerException):
            infer(client, 15, "g-2")
        client.update_log_settings({"log_verbose_level": 0})
        infer(client, 16, "quiet-again")
    finally:
        client.close()
    calls = [line for line in lines(captured) if line["logger"] == "pyserver.grpc.request"]
    infers = [line for line in calls if "ModelInfer" in str(line["message"])]
    assert [(line["request_id"], line["level"]) for line in infers] == [("g-1", "DEBUG"), ("g-2", "DEBUG")]
    assert "ModelInfer -> OK in" in str(infers[0]["message"])
    assert "ModelInfer -> INVALID_ARGUMENT in" in str(infers[1]["message"])
    assert not any("quiet" in str(line.get("request_id")) for line in calls)
