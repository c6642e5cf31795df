"""GPU benchmark: a ResNet-50 (the real architecture, random weights made here with a fixed seed;
nothing is downloaded) saved as TorchScript and served by `pyserver serve` with the PyTorch
backend on the GPU. Prints throughput (images/s) and p50/p99 latency by request size (rows per
request) and concurrency, the average batch the server formed, and beside them the in-process
ceiling: the same model file called directly on the GPU at the same batch sizes.

    python benchmarks/gpu_benchmark.py                       # on a GPU machine
    python benchmarks/gpu_benchmark.py --device cpu --quick  # a smoke test anywhere

--onnx also exports the model to ONNX (when the onnx package is installed) and measures it
served by the ONNX Runtime backend, which runs on the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import build_request, model_stats, new_loop, run_load  # noqa: E402
from server_process import free_port, start_server, stop_server  # noqa: E402

SEED = 0


def resnet50(torch: Any) -> Any:
    """ResNet-50 (He et al. 2015; bottleneck blocks [3, 4, 6, 3]) in plain torch.nn."""
    nn = torch.nn

    class Bottleneck(nn.Module):
        def __init__(self, inplanes: int, planes: int, stride: int) -> None:
            super().__init__()
            out = planes * 4
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = (
                nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False),
                              nn.BatchNorm2d(out))
                if stride != 1 or inplanes != out else nn.Identity()
            )

        def forward(self, x: Any) -> Any:
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            return self.relu(self.bn3(self.conv3(y)) + self.downsample(x))

    layers: list[Any] = [nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
                         nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    inplanes = 64
    for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(inplanes, planes, stride if i == 0 else 1))
            inplanes = planes * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)]
    torch.manual_seed(SEED)
    return nn.Sequential(*layers).eval()


def save_torchscript(torch: Any, model: Any, file: Path, image: int) -> None:
    with warnings.catch_warnings():
        # TorchScript is deprecated in recent PyTorch; it is what the backend's model.pt is.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        traced = torch.jit.trace(model, torch.randn(1, 3, image, image))
        traced.save(str(file))


def save_onnx(torch: Any, model: Any, file: Path, image: int) -> str | None:
    """Export to ONNX with a dynamic batch; returns why not when it cannot."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return "the onnx package is not installed"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter's notice
            torch.onnx.export(
                model, (torch.randn(1, 3, image, image),), str(file), input_names=["image"],
                output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                dynamo=False,
            )
    except Exception as exc:  # the exporters raise many kinds; the benchmark goes on without it
        return f"torch.onnx.export failed: {exc}"
    return None


def write_repository(root: Path, args: argparse.Namespace, torch: Any) -> list[str]:
    """The temporary model repository: resnet50 (PyTorch), and resnet50_onnx with --onnx."""
    model = resnet50(torch)
    kind = "KIND_GPU" if args.device == "cuda" else "KIND_CPU"
    tensors = (
        f'[[input]]\nname = "image"\ndata_type = "TYPE_FP32"\ndims = [3, {args.image}, {args.image}]\n'
        '[[output]]\nname = "logits"\ndata_type = "TYPE_FP32"\ndims = [1000]\n'
    )
    batching = f"[dynamic_batching]\nmax_queue_delay_microseconds = {args.delay_us}\n"
    folder = root / "resnet50"
    (folder / "1").mkdir(parents=True)
    (folder / "config.toml").write_text(
        f'backend = "pytorch"\nmax_batch_size = {args.max_batch_size}\n{tensors}'
        f'[[instance_group]]\nkind = "{kind}"\ncount = {args.instances}\n{batching}'
    )
    save_torchscript(torch, model, folder / "1" / "model.pt", args.image)
    models = ["resnet50"]
    if args.onnx:
        folder = root / "resnet50_onnx"
        (folder / "1").mkdir(parents=True)
        why = save_onnx(torch, model, folder / "1" / "model.onnx", args.image)
        if why is None:
            (folder / "config.toml").write_text(
                f'backend = "onnxruntime"\nmax_batch_size = {args.max_batch_size}\n'
                f'[[instance_group]]\nkind = "KIND_CPU"\ncount = 1\n{batching}'
            )
            models.append("resnet50_onnx")
        else:
            print(f"--onnx: skipped ({why})")
    return models


def ceiling(torch: Any, file: Path, device: str, batch: int, image: int,
            seconds: float) -> tuple[float, float]:
    """Images/s calling the model directly: (inputs already on the device, with the copies
    from pinned host memory and back included)."""
    target = torch.device(device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.load`", category=DeprecationWarning)
        model = torch.jit.load(str(file), map_location=target).eval()
    host = torch.randn(batch, 3, image, image)
    if device == "cuda":
        host = host.pin_memory()
    on_device = host.to(target)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def rate(step: Any) -> float:
        # Warm-up: TorchScript's profiling executor optimizes the graph over the first calls,
        # and cuDNN picks its algorithms on the first of each shape.
        calls, start = 0, time.perf_counter()
        while calls < 5 or time.perf_counter() - start < seconds / 4:
            step()
            calls += 1
        sync()
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            step()
            calls += 1
        sync()
        return calls * batch / (time.perf_counter() - start)

    with torch.inference_mode():
        compute = rate(lambda: model(on_device))
        copied = rate(lambda: model(host.to(target, non_blocking=True)).cpu())
    return compute, copied


@dataclass
class Row:
    model: str
    rows: int
    concurrency: int
    images: float
    p50_ms: float
    p99_ms: float
    batch: float
    errors: int


def sweep(url: str, model: str, args: argparse.Namespace) -> list[Row]:
    out = []
    with asyncio.Runner(loop_factory=new_loop) as runner:
        for rows in args.rows:
            payload = build_request(url, model, rows, seed=SEED)
            for c in args.concurrency:
                runs, batches = [], []
                for _ in range(args.repeats):
                    before = model_stats(url, model)
                    r = runner.run(run_load(url, payload, c, args.duration, args.warmup))
                    after = model_stats(url, model)
                    runs.append(r)
                    batches.append((after["inference_count"] - before["inference_count"])
                                   / max(1, after["execution_count"] - before["execution_count"]))
                row = Row(model, rows, c, statistics.median(r.rate * rows for r in runs),
                          statistics.median(r.percentile(50) for r in runs) / 1e3,
                          statistics.median(r.percentile(99) for r in runs) / 1e3,
                          statistics.median(batches), sum(r.errors for r in runs))
                print(f"  {model} rows={rows:<3d} c={c:<3d} {row.images:9.1f} images/s   "
                      f"p50 {row.p50_ms:8.2f} ms   p99 {row.p99_ms:8.2f} ms   "
                      f"batch {row.batch:5.1f}   errors {row.errors}", flush=True)
                out.append(row)
    return out


def model_ready(url: str, model: str) -> str | None:
    """None when the model is ready, else what the server says about it."""
    try:
        with urllib.request.urlopen(f"{url}/v2/models/{model}/ready", timeout=10) as r:
            return None if r.status == 200 else f"HTTP {r.status}"
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        try:
            return str(json.loads(body).get("error", body))
        except ValueError:
            return body or f"HTTP {exc.code}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: small images, few sizes, short runs")
    parser.add_argument("--rows", type=int, nargs="+", help="rows (images) per request")
    parser.add_argument("--concurrency", type=int, nargs="+")
    parser.add_argument("--max-batch-size", type=int)
    parser.add_argument("--instances", type=int, default=2, help="instances on the GPU")
    parser.add_argument("--delay-us", type=int, default=2000, help="max queue delay")
    parser.add_argument("--image", type=int, help="image side (224 unless --quick)")
    parser.add_argument("--duration", type=float)
    parser.add_argument("--warmup", type=float)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--onnx", action="store_true",
                        help="also the model exported to ONNX, on the ONNX Runtime backend (CPU)")
    args = parser.parse_args()
    quick = args.quick
    defaults = {
        "rows": [1, 4] if quick else [1, 8, 32],
        "concurrency": [1, 4] if quick else [1, 4, 16, 64],
        "max_batch_size": 8 if quick else 64,
        "image": 64 if quick else 224,
        "duration": 1.0 if quick else 3.0,
        "warmup": 0.5 if quick else 1.0,
        "repeats": 1 if quick else 3,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if quick:
        args.instances = 1
    if max(args.rows) > args.max_batch_size:
        parser.error(f"--rows {max(args.rows)} exceeds --max-batch-size {args.max_batch_size}")
    return args


def main() -> None:
    args = parse_args()
    try:
        import torch
    except ImportError:
        raise SystemExit("gpu_benchmark: PyTorch is not installed (pip install 'pyserver[pytorch]')") from None
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"gpu_benchmark: no GPU here: PyTorch {torch.__version__} cannot use CUDA "
            f"(no NVIDIA driver, no GPU, or a CPU-only build). Run it on a GPU machine, or smoke-"
            f"test it with --device cpu --quick."
        )
    where = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    print(f"ResNet-50, {args.image}x{args.image} FP32, random weights (seed {SEED}), on {where}; "
          f"max_batch_size {args.max_batch_size}, {args.instances} instance(s), queue delay "
          f"{args.delay_us} us; medians of {args.repeats} run(s) of {args.duration:.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="pyserver-gpu-bench-") as tmp:
        repo = Path(tmp)
        models = write_repository(repo, args, torch)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        # Pinned staging for every instance's largest batch, twice over (inputs and outputs).
        batch_bytes = args.max_batch_size * 3 * args.image * args.image * 4
        pool = max(256 << 20, 2 * args.instances * batch_bytes)
        proc = start_server(port, "--pinned-memory-pool-byte-size", str(pool), repository=repo)
        try:
            for model in models:
                problem = model_ready(url, model)
                if problem is not None:
                    raise SystemExit(f"gpu_benchmark: model '{model}' did not load: {problem}")
            rows = [row for model in models for row in sweep(url, model, args)]
        finally:
            stop_server(proc)
        file = repo / "resnet50" / "1" / "model.pt"
        batches = sorted({*args.rows, args.max_batch_size})
        ceilings = {b: ceiling(torch, file, args.device, b, args.image, args.duration)
                    for b in batches}

    print(f"\n{'model':<14} {'rows':>4} {'conc':>4} {'images/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'avg batch':>9} {'errors':>6}")
    for r in rows:
        print(f"{r.model:<14} {r.rows:>4} {r.concurrency:>4} {r.images:>10.1f} {r.p50_ms:>8.2f} "
              f"{r.p99_ms:>8.2f} {r.batch:>9.1f} {r.errors:>6}")
    print(f"\nin-process ceiling (the same TorchScript file called directly on {args.device}):")
    print(f"{'batch':>5} {'images/s, on device':>20} {'with copies':>12}")
    for b, (compute, copied) in ceilings.items():
        print(f"{b:>5} {compute:>20.1f} {copied:>12.1f}")
    best = max((r for r in rows if r.model == "resnet50"), key=lambda r: r.images)
    top = max(c for c, _ in ceilings.values())
    print(f"\nbest served: {best.images:.1f} images/s (rows {best.rows}, c={best.concurrency}, "
          f"avg batch {best.batch:.1f}); server / best ceiling: {best.images / top:.2f}")
    if any(r.errors for r in rows):
        raise SystemExit("gpu_benchmark: some requests failed (see the errors column)")


if __name__ == "__main__":
    main()
