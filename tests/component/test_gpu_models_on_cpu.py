"""GPU models on a machine without a CUDA driver: each fails to load alone, saying that no CUDA
driver was found (or how to install TensorRT), and the server serves the rest."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from pyserver import _core
from tests.conftest import ENGINES

PYTORCH_GPU = """backend = "pytorch"
max_batch_size = 4
[[input]]
name = "x"
data_type = "TYPE_FP32"
dims = [4]
[[output]]
name = "y"
data_type = "TYPE_FP32"
dims = [4]
[[instance_group]]
kind = "KIND_GPU"
count = 2
"""

TENSORRT = """backend = "tensorrt"
max_batch_size = 4
[[instance_group]]
kind = "KIND_GPU"
"""


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_gpu_models_fail_alone_with_the_reason(make_repository, serve_repository) -> None:  # type: ignore[no-untyped-def]
    assert not _core.cuda_driver()["available"], "this test is for machines without a CUDA driver"
    repo = make_repository(
        {"on_gpu": PYTORCH_GPU, "plan": TENSORRT,
         "digits": (ENGINES / "digits" / "config.toml").read_text()},
        copy_from={"digits": "digits"},
    )
    # Placement is decided before the files are opened: their contents do not matter here.
    (repo / "on_gpu" / "1" / "model.pt").write_bytes(b"a TorchScript file")
    (repo / "plan" / "1" / "model.plan").write_bytes(b"a TensorRT plan")
    running = serve_repository(repo)

    status, body = get(f"{running.http}/v2/models/on_gpu")
    assert status == 404
    assert "model 'on_gpu' is not available: it failed to load" in body["error"]
    assert "needs a GPU: no CUDA driver was found" in body["error"]
    status, body = get(f"{running.http}/v2/models/plan")
    assert status == 404 and "pip install 'pyserver[tensorrt]'" in body["error"]

    # the CPU model beside them serves
    request = json.dumps({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32",
                                      "data": [0.0] * 64}]}).encode()
    post = urllib.request.Request(f"{running.http}/v2/models/digits/infer", data=request)
    with urllib.request.urlopen(post, timeout=30) as response:
        answer = json.loads(response.read())
    assert {o["name"] for o in answer["outputs"]} == {"label", "probabilities"}
