"""Write the benchmark MLP (FP32 256 -> 1024 -> 1024 -> 10, ReLU) into a model repository folder.

    python benchmarks/make_mlp.py                       # -> benchmarks/results/models/mlp/
    python benchmarks/make_mlp.py --repository /tmp/models --name mlp
    python benchmarks/make_mlp.py --link-engines   # engines/* linked beside it: one repository

The folder gets `config.toml` (ONNX Runtime with one intra-op thread, one KIND_CPU instance,
dynamic batching with no queue delay, max batch 128) and `1/model.onnx`, built with the onnx
helper API from weights drawn by numpy with a fixed seed, so every run writes the same bytes.
Nothing here is committed: the folder lies under benchmarks/results/ (git-ignored).

The model is there to have real compute per row (about 1.3 M multiply-adds over 5 MB of weights:
some 200 us for a batch of one on one idle core of the project's machine, 15 us per row in
batches of 64-128) with small tensors on the wire (1 KiB in, 40 bytes out), so batching pays and
the server's overhead and ONNX Runtime's time can be told apart.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REPOSITORY = ROOT / "benchmarks" / "results" / "models"
LAYERS = (256, 1024, 1024, 10)
OPSET = 17
IR_VERSION = 8  # as tools/make_models.py: onnxruntime >= 1.17 reads IR <= 9; opset 17 needs 8
SEED = 0
MAX_BATCH_SIZE = 128

CONFIG = """\
# mlp: the benchmark MLP of benchmarks/make_mlp.py (FP32 256 -> 1024 -> 1024 -> 10, ReLU).
# One ONNX Runtime thread, one instance, no queue delay: what the server adds shows plainly.
backend = "onnxruntime"
max_batch_size = {max_batch_size}

[[input]]
name = "INPUT0"
data_type = "TYPE_FP32"
dims = [{inputs}]

[[output]]
name = "OUTPUT0"
data_type = "TYPE_FP32"
dims = [{outputs}]

[dynamic_batching]
max_queue_delay_microseconds = 0

[[instance_group]]
kind = "KIND_CPU"
count = 1

[parameters]
intra_op_num_threads = 1
graph_optimization_level = "all"
"""


def mlp_model(layers: tuple[int, ...] = LAYERS, seed: int = SEED) -> onnx.ModelProto:
    """Gemm + ReLU per hidden layer, a Gemm to the outputs; He-scaled normal weights, so the
    activations stay of order one through the layers."""
    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    current = "INPUT0"
    for i, (fan_in, fan_out) in enumerate(zip(layers[:-1], layers[1:], strict=True)):
        w = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        initializers += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        last = i == len(layers) - 2
        gemm_out = "OUTPUT0" if last else f"dense{i}"
        nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [gemm_out],
                                      name=f"dense{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [gemm_out], [f"relu{i}"], name=f"relu{i}"))
            current = f"relu{i}"
    graph = helper.make_graph(
        nodes, "benchmark_mlp",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["N", layers[0]])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["N", layers[-1]])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pyserver-benchmarks"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def write_mlp(repository: Path = DEFAULT_REPOSITORY, name: str = "mlp",
              max_batch_size: int = MAX_BATCH_SIZE) -> Path:
    """Write `repository/name/` (config.toml and 1/model.onnx); return the model folder. The
    model file is rewritten only when its bytes differ, so servers reading it are not disturbed."""
    folder = repository / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    config = CONFIG.format(max_batch_size=max_batch_size, inputs=LAYERS[0], outputs=LAYERS[-1])
    data = mlp_model().SerializeToString()
    for path, content in ((folder / "config.toml", config.encode()),
                          (folder / "1" / "model.onnx", data)):
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
    return folder


def link_engines(repository: Path, engines: Path | None = None) -> list[Path]:
    """Link every model folder of the bundled engines/ (or of `engines`, another checkout's)
    into `repository` (existing names are left alone), so that one `--model-repository` serves
    them and the MLP together."""
    repository.mkdir(parents=True, exist_ok=True)
    linked = []
    for model in sorted(p for p in (engines or ROOT / "engines").iterdir() if p.is_dir()):
        link = repository / model.name
        if not link.exists() and not link.is_symlink():
            link.symlink_to(model.resolve(), target_is_directory=True)
            linked.append(link)
    return linked


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY,
                        help="model repository folder to write into (default: %(default)s)")
    parser.add_argument("--name", default="mlp", help="the model's name (its folder)")
    parser.add_argument("--max-batch-size", type=int, default=MAX_BATCH_SIZE)
    parser.add_argument("--link-engines", action="store_true",
                        help="also link the bundled engines/* models into the repository")
    args = parser.parse_args(argv)
    if args.link_engines:
        link_engines(args.repository)
    folder = write_mlp(args.repository, args.name, args.max_batch_size)
    size = (folder / "1" / "model.onnx").stat().st_size
    print(f"wrote {folder} (model.onnx {size:,} bytes)")


if __name__ == "__main__":
    main()
