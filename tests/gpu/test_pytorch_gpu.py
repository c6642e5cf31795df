"""The PyTorch engine on a real GPU through the whole server (HTTP, batching, pinned staging,
the instance's stream, the copies back): outputs against the model run directly on the GPU;
several instances sharing one GPU; and the core's host-to-device copies against the device's
pinned-copy bandwidth as PyTorch measures it.

    python -m pytest tests/gpu -m gpu -s
"""

from __future__ import annotations

import asyncio
import json
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import RunningServer

torch = pytest.importorskip("torch")

from pyserver import _core  # noqa: E402
from pyserver.backends import pytorch as pytorch_backend  # noqa: E402


@pytest.fixture(autouse=True)
def exact_float32() -> Iterator[None]:
    """TF32 off (the server runs in this process, so for it too): the server's batches and the
    reference's single requests then differ only by kernel choice, not by 10-bit mantissas."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class ConvNet(torch.nn.Module):
    """A small image classifier with outputs of three datatypes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.bn = torch.nn.BatchNorm2d(32)
        self.fc = torch.nn.Linear(32, 10)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.relu(self.bn(self.conv2(torch.relu(self.conv1(image)))))
        logits = self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(h, 1), 1))
        return {
            "logits": logits,
            "label": torch.argmax(logits, dim=1, keepdim=True),
            "half": logits.half(),
        }


class Deep(torch.nn.Module):
    """Enough GPU work per batch (a chain of matrix products) that batches overlap."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.layer = torch.nn.Linear(1024, 1024)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(48):
            x = torch.tanh(self.layer(x))
        return x


class RowSum(torch.nn.Module):
    """A large input, a tiny output: the batch's time is its host-to-device copy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1, keepdim=True)


def save(module: torch.nn.Module, kind: str, file: Path, example: torch.Tensor) -> None:
    module = module.eval()
    if kind == "export":
        program = torch.export.export(
            module, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)
        )
        torch.export.save(program, str(file))
        return
    with warnings.catch_warnings():
        # TorchScript is deprecated in recent PyTorch; it is still what many models ship as.
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning
        )
        torch.jit.script(module).save(str(file))


def config(inputs: str, outputs: str, *, max_batch_size: int, count: int = 1,
           delay_us: int = 0, filename: str = "model.pt") -> str:
    return (
        f'backend = "pytorch"\nmax_batch_size = {max_batch_size}\n'
        f'default_model_filename = "{filename}"\n{inputs}{outputs}'
        f'[[instance_group]]\nkind = "KIND_GPU"\ncount = {count}\ngpus = [0]\n'
        f"[dynamic_batching]\nmax_queue_delay_microseconds = {delay_us}\n"
    )


def tensor(kind: str, name: str, datatype: str, dims: list[int]) -> str:
    return f'[[{kind}]]\nname = "{name}"\ndata_type = "{datatype}"\ndims = {dims}\n'


_NUMPY_TYPES = {"FP32": np.float32, "FP16": np.float16, "INT64": np.int64}


async def infer_all(url: str, model: str, requests: list[np.ndarray], input_name: str,
                    outputs: list[str]) -> list[dict[str, np.ndarray]]:
    """Send every request at once (binary tensors, aiohttp: the GPU machines need not have
    tritonclient); each answer as {output name: array}."""
    import aiohttp

    async def one(session: aiohttp.ClientSession, x: np.ndarray) -> dict[str, np.ndarray]:
        header = json.dumps({
            "inputs": [{"name": input_name, "shape": list(x.shape), "datatype": "FP32",
                        "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in outputs],
        }).encode()
        async with session.post(
            f"http://{url}/v2/models/{model}/infer", data=header + x.tobytes(),
            headers={"Inference-Header-Content-Length": str(len(header))},
        ) as response:
            body = await response.read()
            assert response.status == 200, body[:500]
            length = int(response.headers["Inference-Header-Content-Length"])
        position, answer = length, {}
        for out in json.loads(body[:length])["outputs"]:
            size = out["parameters"]["binary_data_size"]
            raw = body[position : position + size]
            answer[out["name"]] = np.frombuffer(raw, _NUMPY_TYPES[out["datatype"]]).reshape(
                out["shape"])
            position += size
        return answer

    connector = aiohttp.TCPConnector(limit=len(requests))
    async with aiohttp.ClientSession(connector=connector) as session:
        return list(await asyncio.gather(*(one(session, x) for x in requests)))


def model_of(running: RunningServer, name: str) -> Any:
    return running.server.models.get(name)  # type: ignore[attr-defined]


def batch_stats(running: RunningServer, name: str) -> dict[int, dict[str, Any]]:
    return {b["batch_size"]: b for b in model_of(running, name).stats()["batch_stats"]}


@pytest.mark.parametrize("kind", ["script", "export"])
def test_the_model_runs_on_the_gpu_through_the_server(
    make_repository: Any, serve_repository: Any, kind: str
) -> None:
    filename = "model.pt2" if kind == "export" else "model.pt"
    outputs = (tensor("output", "logits", "TYPE_FP32", [10])
               + tensor("output", "label", "TYPE_INT64", [1])
               + tensor("output", "half", "TYPE_FP16", [10]))
    repo = make_repository({"convnet": config(
        tensor("input", "image", "TYPE_FP32", [3, 32, 32]), outputs, max_batch_size=8,
        delay_us=2_000_000, filename=filename)})
    file = repo / "convnet" / "1" / filename
    save(ConvNet(), kind, file, torch.randn(2, 3, 32, 32))
    before = _core.memory_stats()
    running = serve_repository(repo)
    (engine,) = model_of(running, "convnet").engines
    assert engine.gpu == 0

    rng = np.random.default_rng(0)
    # 8 one-row requests fill max_batch_size (one batch at once); then 5 + 3 rows fill another.
    requests = [rng.standard_normal((1, 3, 32, 32), dtype=np.float32) for _ in range(8)]
    requests += [rng.standard_normal((r, 3, 32, 32), dtype=np.float32) for r in (5, 3)]
    answers = asyncio.run(infer_all(running.url, "convnet", requests[:8], "image",
                                    ["logits", "label", "half"]))
    answers += asyncio.run(infer_all(running.url, "convnet", requests[8:], "image",
                                     ["logits", "label", "half"]))

    # The reference: the same file on the same GPU, one request at a time.
    device = torch.device("cuda", 0)
    if kind == "export":
        from torch.export.passes import move_to_device_pass

        reference = move_to_device_pass(torch.export.load(str(file)), device).module()
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated",
                                    category=DeprecationWarning)
            reference = torch.jit.load(str(file), map_location=device).eval()
    with torch.inference_mode():
        for x, got in zip(requests, answers, strict=True):
            expected = {k: v.cpu() for k, v in reference(torch.from_numpy(x).to(device)).items()}
            assert got["logits"].shape == (len(x), 10)
            assert torch.allclose(torch.tensor(got["logits"]), expected["logits"], rtol=1e-4, atol=1e-4)
            assert torch.allclose(torch.tensor(got["half"]).float(), expected["half"].float(),
                                  rtol=1e-2, atol=1e-2)
            np.testing.assert_array_equal(got["label"], expected["label"].numpy())

    stats = batch_stats(running, "convnet")
    assert stats[8]["compute_infer"]["count"] == 2, stats
    after = _core.memory_stats()
    print(f"\n[{kind}] stream {engine.stream:#x}, device buffers {engine.device_memory_bytes} B, "
          f"memory {after}")
    assert engine.stream != 0
    assert engine.device_memory_bytes > 0
    # The inputs were gathered into pinned memory, not the heap fallback.
    assert after["pinned_allocations"] > before["pinned_allocations"]
    assert after["fallback_allocations"] == before["fallback_allocations"]


def test_several_instances_share_one_gpu(
    make_repository: Any, serve_repository: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repository({"deep": config(
        tensor("input", "x", "TYPE_FP32", [1024]), tensor("output", "y", "TYPE_FP32", [1024]),
        max_batch_size=2, count=3)})
    save(Deep(), "script", repo / "deep" / "1" / "model.pt", torch.randn(2, 1024))

    # Which instance (engine object), stream, thread and model copy ran each batch.
    calls: list[tuple[int, int, int, int]] = []
    lock = threading.Lock()
    original = pytorch_backend.TorchGpuEngine.execute

    def recording(self: Any, stream: int, inputs: Any, outputs: Any) -> None:
        with lock:
            calls.append((id(self), stream, threading.get_ident(), id(self._model)))
        original(self, stream, inputs, outputs)

    monkeypatch.setattr(pytorch_backend.TorchGpuEngine, "execute", recording)
    running = serve_repository(repo)
    engines = model_of(running, "deep").engines
    assert len(engines) == 3 and {e.gpu for e in engines} == {0}

    rng = np.random.default_rng(2)
    requests = [rng.standard_normal((1, 1024), dtype=np.float32) for _ in range(96)]
    answers = asyncio.run(infer_all(running.url, "deep", requests, "x", ["y"]))

    device = torch.device("cuda", 0)
    reference = Deep().eval().to(device)
    with torch.inference_mode():
        for x, got in zip(requests, answers, strict=True):
            expected = reference(torch.from_numpy(x).to(device)).cpu()
            assert torch.allclose(torch.tensor(got["y"]), expected, rtol=1e-4, atol=1e-4)

    streams = {e.stream for e in engines}
    by_instance: dict[int, set[int]] = {}
    for instance, stream, _, _ in calls:
        by_instance.setdefault(instance, set()).add(stream)
    counts = {hex(next(iter(s))): sum(1 for c in calls if c[0] == i) for i, s in by_instance.items()}
    print(f"\nbatches per instance stream: {counts}")
    assert len(streams) == 3 and 0 not in streams, "each instance has a stream of its own"
    assert all(len(s) == 1 for s in by_instance.values()), "an instance keeps its stream"
    assert len(by_instance) >= 2, f"96 concurrent requests used only one instance: {counts}"
    assert len({c[2] for c in calls}) == len(by_instance), "one worker thread per instance"
    assert len({c[3] for c in calls}) == 1, "the instances share one copy of the model"


def test_pinned_copies_reach_the_device_bandwidth(
    make_repository: Any, serve_repository: Any
) -> None:
    row_floats = 256 * 1024  # 1 MiB a row
    rows_per_request, batch = 16, 64  # 4 requests fill a 64 MiB batch
    row_bytes = row_floats * 4

    # The device's practical peak: PyTorch copying a pinned 64 MiB buffer to the GPU.
    device = torch.device("cuda", 0)
    host = torch.empty(batch * row_bytes, dtype=torch.uint8, pin_memory=True)
    target = torch.empty_like(host, device=device)
    for _ in range(3):
        target.copy_(host, non_blocking=True)
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    reps = 20
    for _ in range(reps):
        target.copy_(host, non_blocking=True)
    stop.record()
    stop.synchronize()
    peak = reps * host.numel() / (start.elapsed_time(stop) / 1e3)
    del host, target

    repo = make_repository({"rowsum": config(
        tensor("input", "x", "TYPE_FP32", [row_floats]), tensor("output", "s", "TYPE_FP32", [1]),
        max_batch_size=batch, delay_us=1_000_000)})
    save(RowSum(), "script", repo / "rowsum" / "1" / "model.pt", torch.randn(2, row_floats))
    running = serve_repository(repo)
    rng = np.random.default_rng(4)
    requests = [rng.standard_normal((rows_per_request, row_floats), dtype=np.float32)
                for _ in range(batch // rows_per_request)]
    answers = asyncio.run(infer_all(running.url, "rowsum", requests, "x", ["s"]))  # warm-up
    for x, got in zip(requests, answers, strict=True):
        np.testing.assert_allclose(got["s"][:, 0], x.sum(axis=1), rtol=1e-3, atol=0.1)

    (engine,) = model_of(running, "rowsum").engines
    before, memory_before = engine.copy_stats(), _core.memory_stats()
    stats_before = batch_stats(running, "rowsum")[batch]
    rounds = 6
    for _ in range(rounds):
        asyncio.run(infer_all(running.url, "rowsum", requests, "x", ["s"]))
    after, memory_after = engine.copy_stats(), _core.memory_stats()
    stats_after = batch_stats(running, "rowsum")[batch]

    batches = stats_after["compute_infer"]["count"] - stats_before["compute_infer"]["count"]
    assert batches == rounds, "every round ran as one full batch"
    moved = after["htod_bytes"] - before["htod_bytes"]
    assert moved == batches * batch * row_bytes
    # The core's host-to-device copies, timed by events on the instance's stream.
    copy = moved / ((after["htod_ns"] - before["htod_ns"]) / 1e9)
    # compute_input: the gather into pinned memory (host) plus those copies (device).
    staged = moved / ((stats_after["compute_input"]["ns"] - stats_before["compute_input"]["ns"]) / 1e9)
    print(f"\npinned host-to-device peak (PyTorch) {peak / 1e9:6.1f} GB/s\n"
          f"core: host-to-device copies          {copy / 1e9:6.1f} GB/s ({copy / peak:.0%} of peak)\n"
          f"core: gather + copies (compute_input) {staged / 1e9:6.1f} GB/s\n"
          f"memory {memory_after}")
    assert memory_after["fallback_allocations"] == memory_before["fallback_allocations"], (
        "a batch was staged in ordinary memory: the pinned pool was exhausted")
    assert memory_after["pinned_allocations"] > memory_before["pinned_allocations"]
    assert copy >= 0.7 * peak, f"the core's copies reach {copy / peak:.0%} of the device's peak"
