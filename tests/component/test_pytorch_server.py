"""PyTorch models (TorchScript and torch.export) on the CPU through a real server, over HTTP
with tritonclient: concurrent requests form one batch, and every answer equals the model called
directly on that request's inputs."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tritonclient.http as httpclient  # noqa: E402
import tritonclient.http.aio as aioclient  # noqa: E402

from tests.conftest import RunningServer  # noqa: E402

BATCH = 4


class Scorer(torch.nn.Module):
    """A small two-layer network with two outputs (scores and their argmax)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden = torch.nn.Linear(6, 16)
        self.out = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        scores = self.out(torch.relu(self.hidden(x)))
        return {"scores": scores, "label": torch.argmax(scores, dim=1, keepdim=True)}


CONFIG = f"""backend = "pytorch"
max_batch_size = {BATCH}
default_model_filename = "{{filename}}"
[[input]]
name = "x"
data_type = "TYPE_FP32"
dims = [6]
[[output]]
name = "scores"
data_type = "TYPE_FP32"
dims = [3]
[[output]]
name = "label"
data_type = "TYPE_INT64"
dims = [1]
[[instance_group]]
kind = "KIND_AUTO"
count = 2
[dynamic_batching]
max_queue_delay_microseconds = 2000000
"""


@pytest.fixture
def running(make_repository: Any, serve_repository: Any) -> RunningServer:
    repo: Path = make_repository({
        "scorer_script": CONFIG.format(filename="model.pt"),
        "scorer_export": CONFIG.format(filename="model.pt2"),
    })
    module = Scorer().eval()
    with warnings.catch_warnings():
        # TorchScript is deprecated in recent PyTorch; it is still what many models ship as.
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning
        )
        torch.jit.script(module).save(str(repo / "scorer_script" / "1" / "model.pt"))
    program = torch.export.export(
        module, (torch.randn(2, 6),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(repo / "scorer_export" / "1" / "model.pt2"))
    server: RunningServer = serve_repository(repo)
    return server


async def infer_concurrently(url: str, model: str, requests: list[np.ndarray]) -> list[Any]:
    client = aioclient.InferenceServerClient(url)
    try:
        calls = []
        for x in requests:
            inp = aioclient.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            outputs = [aioclient.InferRequestedOutput(n, binary_data=True) for n in ("scores", "label")]
            calls.append(client.infer(model, [inp], outputs=outputs))
        return list(await asyncio.gather(*calls))
    finally:
        await client.close()


@pytest.mark.parametrize("model", ["scorer_script", "scorer_export"])
def test_concurrent_requests_form_one_batch_and_match_the_model(
    running: RunningServer, model: str
) -> None:
    rng = np.random.default_rng(3)
    requests = [rng.standard_normal((1, 6), dtype=np.float32) for _ in range(BATCH)]
    # BATCH requests of one row fill max_batch_size: the batcher sends them at once as one batch
    # (the 2 s queue delay would only ever send a partial one, and would fail the timing below).
    results = asyncio.run(infer_concurrently(running.url, model, requests))
    reference = Scorer().eval()
    with torch.inference_mode():
        for x, result in zip(requests, results, strict=True):
            expected = reference(torch.from_numpy(x))
            assert torch.allclose(torch.tensor(result.as_numpy("scores")), expected["scores"],
                                  atol=1e-5)
            np.testing.assert_array_equal(result.as_numpy("label"), expected["label"].numpy())

    client = httpclient.InferenceServerClient(running.url)
    try:
        stats = client.get_inference_statistics(model)["model_stats"][0]
        config = client.get_model_config(model)
        meta = client.get_model_metadata(model)
    finally:
        client.close()
    assert stats["inference_count"] == BATCH
    assert stats["execution_count"] == 1
    assert [(b["batch_size"], b["compute_infer"]["count"]) for b in stats["batch_stats"]] == [(BATCH, 1)]
    # KIND_AUTO on a machine (or a PyTorch) without CUDA: CPU instances, as configured.
    assert config["platform"] == "pytorch_libtorch"
    assert meta["outputs"] == [
        {"name": "scores", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "label", "datatype": "INT64", "shape": [-1, 1]},
    ]


def test_requests_of_several_rows_share_a_batch(running: RunningServer) -> None:
    three = np.linspace(-1, 1, 18, dtype=np.float32).reshape(3, 6)
    one = np.full((1, 6), 0.5, dtype=np.float32)
    results = asyncio.run(infer_concurrently(running.url, "scorer_export", [three, one]))
    with torch.inference_mode():
        reference = Scorer().eval()
        for x, result in zip((three, one), results, strict=True):
            scores = result.as_numpy("scores")
            assert scores.shape == (len(x), 3)
            assert torch.allclose(torch.tensor(scores), reference(torch.from_numpy(x))["scores"],
                                  atol=1e-5)
