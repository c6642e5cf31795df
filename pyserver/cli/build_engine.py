"""`pyserver build-engine MODEL.onnx`: an ONNX model into a TensorRT plan the server can load.

It writes `<repository>/<name>/<version>/model.plan` (or --output) and, when the model folder has
none, a config.toml that serves it: backend "tensorrt", the largest batch, dynamic batching and
one GPU instance per optimization profile. A dynamic first dimension is the batch; the profiles
(--profiles K, all alike) give it min/opt/max sizes, so that K execution contexts can run at once.

Precision: TensorRT 10 builds weakly typed networks by default, so --fp16/--bf16/--int8 let it
pick lower-precision kernels (--int8 is for graphs quantized with Q/DQ nodes: nothing here
calibrates). TensorRT 11 builds strongly typed networks only: the ONNX graph's own types decide,
and those flags are refused with a message saying so.

Nothing here reaches the network: the ONNX file, the timing cache and the GPU are all local.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from pyserver import _core
from pyserver.backends.tensorrt import import_tensorrt, logger, tensorrt_major
from pyserver.config import CONFIG_FILENAME, MAX_BATCH_SIZE_LIMIT
from pyserver.errors import ModelLoadError

DEFAULT_MAX_BATCH = 8
USAGE_ERROR = 2  # as argparse: the command line (or the installation) cannot work
BUILD_ERROR = 1  # the model or TensorRT refused

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kib|mib|gib|tib)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
# flag -> the BuilderFlag member it sets (TensorRT 10's weak typing)
_PRECISIONS = {"fp16": "FP16", "bf16": "BF16", "int8": "INT8"}


class BuildError(Exception):
    """A message for stderr and the exit code that goes with it."""

    def __init__(self, message: str, code: int = BUILD_ERROR) -> None:
        super().__init__(message)
        self.code = code


def byte_size(text: str) -> int:
    """A size in bytes: 1073741824, 512MiB, 4GiB (binary units; B, KiB, MiB, GiB, TiB)."""
    match = _SIZE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a size in bytes such as 1073741824, 512MiB or 4GiB, got {text!r}")
    value = int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a size above 0, got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _ordinal(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a GPU index (an integer >= 0), got {text!r}")
    return int(text)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `build-engine` on the `pyserver` command's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "build-engine",
        help="build a TensorRT plan from an ONNX model (needs TensorRT and a GPU)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", type=Path, metavar="MODEL.onnx", help="the ONNX model")
    parser.add_argument("--name", help="model name (default: the ONNX file's stem)")
    parser.add_argument("--version", type=_positive, default=1,
                        help="version folder to write (default 1)")
    parser.add_argument("--repository", type=Path, default=Path("engines"),
                        help="model repository (default: ./engines)")
    parser.add_argument("--output", type=Path,
                        help="write the plan here instead of <repository>/<name>/<version>/"
                        "model.plan")
    batch = parser.add_argument_group("batch sizes (the dynamic first dimension)")
    batch.add_argument("--min-batch", type=_positive, help="smallest batch (default 1)")
    batch.add_argument("--opt-batch", type=_positive,
                       help="batch TensorRT tunes kernels for (default: --max-batch)")
    batch.add_argument("--max-batch", type=_positive,
                       help=f"largest batch, the model's max_batch_size (default "
                       f"{DEFAULT_MAX_BATCH})")
    parser.add_argument("--profiles", type=_positive, default=1, metavar="K",
                        help="identical optimization profiles, one per concurrent execution "
                        "context: the instance count the model can have on one GPU (default 1)")
    parser.add_argument("--workspace", type=byte_size,
                        help="TensorRT's workspace memory pool limit (bytes, or e.g. 512MiB, "
                        "4GiB; default: TensorRT's)")
    parser.add_argument("--timing-cache", type=Path, metavar="FILE",
                        help="read TensorRT's timing cache from FILE (when it exists) and write "
                        "it back after the build, so that rebuilds are faster")
    precision = parser.add_argument_group(
        "precision (TensorRT 10 only; on 11 the ONNX graph's types decide)")
    precision.add_argument("--fp16", action="store_true", help="allow FP16 kernels")
    precision.add_argument("--bf16", action="store_true", help="allow BF16 kernels")
    precision.add_argument("--int8", action="store_true",
                           help="allow INT8 kernels (for graphs with Q/DQ nodes; no calibration)")
    precision.add_argument("--strongly-typed", action="store_true",
                           help="build a strongly typed network: the graph's types decide "
                           "(always so on TensorRT 11)")
    parser.add_argument("--gpu", type=_ordinal, default=0, help="GPU to build on (default 0)")
    return parser


@dataclass(frozen=True)
class _Batch:
    min: int
    opt: int
    max: int


def _batch_sizes(args: argparse.Namespace) -> _Batch:
    high = args.max_batch or max(DEFAULT_MAX_BATCH, args.min_batch or 1, args.opt_batch or 1)
    low = args.min_batch or 1
    opt = args.opt_batch or high
    if not low <= opt <= high:
        raise BuildError(
            f"--min-batch {low}, --opt-batch {opt}, --max-batch {high}: expected "
            f"min <= opt <= max", USAGE_ERROR)
    if high > MAX_BATCH_SIZE_LIMIT:
        raise BuildError(
            f"--max-batch {high}: expected at most {MAX_BATCH_SIZE_LIMIT} (the server's "
            f"max_batch_size limit)", USAGE_ERROR)
    return _Batch(low, opt, high)


def _precision_flags(trt: ModuleType, args: argparse.Namespace) -> list[str]:
    wanted = [flag for flag in _PRECISIONS if getattr(args, flag)]
    if not wanted:
        return []
    listed = ", ".join(f"--{flag}" for flag in wanted)
    if tensorrt_major(trt) >= 11:
        raise BuildError(
            f"{listed}: TensorRT {trt.__version__} builds strongly typed networks only, so "
            f"precision comes from the ONNX graph's types; convert the model itself (FP16/BF16 "
            f"with ModelOpt AutoCast, INT8 with Q/DQ nodes) and build without {listed}",
            USAGE_ERROR)
    if args.strongly_typed:
        raise BuildError(
            f"{listed} with --strongly-typed: a strongly typed network takes its precision "
            f"from the ONNX graph; leave out one or the other", USAGE_ERROR)
    missing = [f"--{f}" for f in wanted if not hasattr(trt.BuilderFlag, _PRECISIONS[f])]
    if missing:
        raise BuildError(
            f"{', '.join(missing)}: TensorRT {trt.__version__} has no such precision flag",
            USAGE_ERROR)
    return [_PRECISIONS[f] for f in wanted]


def _use_gpu(gpu: int) -> str:
    """Make `gpu` current when there is a driver; return a hint for TensorRT's failures when
    there is none (TensorRT itself then says little more than that CUDA failed)."""
    driver = _core.cuda_driver()
    if not driver["available"]:
        return f" (no CUDA driver was found: {driver['error']})"
    visible = [int(d["index"]) for d in driver["devices"]]
    if gpu not in visible:
        raise BuildError(
            f"--gpu {gpu}: expected a visible GPU ({', '.join(map(str, visible)) or 'none'})",
            USAGE_ERROR)
    _core.cuda_make_current(gpu)
    return ""


def _profile_inputs(network: Any, model: Path) -> tuple[list[tuple[str, tuple[int, ...]]], bool]:
    """The network's inputs (name, shape) and whether their first dimension is a dynamic batch.
    A dynamic dimension beyond the first cannot be given one size per profile here."""
    inputs = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        inputs.append((str(tensor.name), tuple(int(d) for d in tensor.shape)))
    for name, shape in inputs:
        if -1 in shape[1:]:
            raise BuildError(
                f"{model}: input '{name}' has shape {list(shape)}: dynamic dimensions beyond the "
                f"first (batch) one are not supported; export the ONNX model with static "
                f"non-batch dimensions")
    dynamic = [name for name, shape in inputs if shape and shape[0] == -1]
    if dynamic and len(dynamic) != len(inputs):
        static = [name for name, _ in inputs if name not in dynamic]
        raise BuildError(
            f"{model}: inputs {', '.join(dynamic)} have a dynamic first (batch) dimension but "
            f"{', '.join(static)} do not; expected every input to batch, or none")
    return inputs, bool(dynamic)


def _write(path: Path, data: Any) -> None:
    """Write through a temporary file and rename, so that a server never reads half a plan."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as f:
        f.write(memoryview(data))
    os.replace(partial, path)


def _config_text(trt: ModuleType, model: Path, plan: Path, max_batch: int, count: int) -> str:
    lines = [
        f"# Written by `pyserver build-engine` from {model.name} (TensorRT {trt.__version__}).",
        'backend = "tensorrt"',
    ]
    if plan.name != "model.plan":
        lines.append(f'default_model_filename = "{plan.name}"')
    lines.append(f"max_batch_size = {max_batch}")
    if max_batch:
        lines += ["", "[dynamic_batching]",
                  "# max_queue_delay_microseconds = 100  # wait a little for fuller batches"]
    lines += ["", "# one execution context per optimization profile the plan has",
              "[[instance_group]]", 'kind = "KIND_GPU"', f"count = {count}", ""]
    return "\n".join(lines)


def build(args: argparse.Namespace) -> list[str]:
    """Build the plan; return what to report. Raises BuildError."""
    model: Path = args.model
    if not model.is_file():
        raise BuildError(f"{model}: ONNX model not found", USAGE_ERROR)
    name = args.name or model.stem
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise BuildError(f"--name {name!r}: expected a folder name", USAGE_ERROR)
    output: Path = args.output or args.repository / name / str(args.version) / "model.plan"
    batch = _batch_sizes(args)
    explicit_batch = any(v is not None for v in (args.min_batch, args.opt_batch, args.max_batch))
    try:
        trt = import_tensorrt(model)
    except ModelLoadError as exc:
        raise BuildError(str(exc), USAGE_ERROR) from None
    precisions = _precision_flags(trt, args)
    hint = _use_gpu(args.gpu)
    log = logger(trt)
    try:
        builder = trt.Builder(log)
    except Exception as exc:  # no GPU: the bindings' factory returns nullptr (TypeError)
        raise BuildError(f"TensorRT could not create a builder: {exc}{hint}") from None
    flags = 0
    if args.strongly_typed and tensorrt_major(trt) < 11:  # 11: always, and the flag is deprecated
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, log)
    # The path lets the parser find weights stored beside the model (external data).
    if not parser.parse(model.read_bytes(), path=str(model)):
        lines = [f"{model}: TensorRT's ONNX parser failed ({parser.num_errors} errors):"]
        for i in range(parser.num_errors):
            lines.append(f"  {_parser_error(parser.get_error(i))}")
        raise BuildError("\n".join(lines))
    inputs, batched = _profile_inputs(network, model)
    if not batched and explicit_batch:
        raise BuildError(
            f"{model}: --min-batch/--opt-batch/--max-batch: the inputs have static shapes "
            f"({', '.join(f'{n} {list(s)}' for n, s in inputs)}), so there is no batch "
            f"dimension to size; export with a dynamic first dimension to batch", USAGE_ERROR)
    config = builder.create_builder_config()
    if args.workspace:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, args.workspace)
    for flag in precisions:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if batched:
        # K profiles alike: each concurrent execution context needs one of its own.
        for k in range(args.profiles):
            profile = builder.create_optimization_profile()
            for input_name, shape in inputs:
                rest = shape[1:]
                profile.set_shape(
                    input_name, (batch.min, *rest), (batch.opt, *rest), (batch.max, *rest))
            if config.add_optimization_profile(profile) < 0:
                raise BuildError(f"{model}: TensorRT refused optimization profile {k}")
    cache_file: Path | None = args.timing_cache
    if cache_file is not None:
        _load_timing_cache(config, cache_file)
    # Long (seconds to minutes): the bindings release the GIL while TensorRT builds.
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BuildError(f"{model}: TensorRT could not build the engine (its messages above "
                         f"say why){hint}")
    _write(output, plan)
    report = [f"wrote {output} ({memoryview(plan).nbytes / 2**20:.1f} MiB, TensorRT "
              f"{trt.__version__}, " + (
                  f"batch {batch.min}..{batch.max} (opt {batch.opt}), {args.profiles} "
                  f"profile{'s' if args.profiles > 1 else ''})" if batched else "static shapes)")]
    if cache_file is not None:
        cache = config.get_timing_cache()
        if cache is not None:
            _write(cache_file, cache.serialize())
            report.append(f"updated timing cache {cache_file}")
    model_dir = output.parent.parent
    if output.parent.name.isdigit() and not output.parent.name.startswith("0"):
        config_file = model_dir / CONFIG_FILENAME
        if config_file.exists():
            report.append(f"kept {config_file} (it exists)")
        else:
            config_file.write_text(_config_text(
                trt, model, output, batch.max if batched else 0, args.profiles))
            report.append(f"wrote {config_file}")
    else:
        report.append(f"no {CONFIG_FILENAME} written: {output.parent} is not a version folder")
    return report


def _parser_error(error: Any) -> str:
    """One parser error on one line, with its node: index, name and operator where TensorRT
    reports them (node_name and node_operator came in TensorRT 10)."""
    node = error.node()
    where = []
    if node >= 0:
        where.append(f"node {node}")
    for attribute in ("node_name", "node_operator"):
        method = getattr(error, attribute, None)
        value = method() if method is not None else ""
        if value:
            where.append(f"{attribute.removeprefix('node_')} {value!s}")
    prefix = f"[{', '.join(where)}] " if where else ""
    return f"{prefix}{error.desc()}"


def _load_timing_cache(config: Any, cache_file: Path) -> None:
    try:
        data = cache_file.read_bytes() if cache_file.exists() else b""
    except OSError as exc:
        raise BuildError(f"--timing-cache {cache_file}: cannot be read: {exc}", USAGE_ERROR) from None
    cache = config.create_timing_cache(data)
    if cache is None:
        raise BuildError(f"--timing-cache {cache_file}: not a TensorRT timing cache; delete it "
                         f"or name another file", USAGE_ERROR)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise BuildError(f"--timing-cache {cache_file}: made by another TensorRT version or GPU; "
                         f"delete it or name another file", USAGE_ERROR)


def run(args: argparse.Namespace) -> int:
    """The command: 0 when the plan was written, 1 when the build failed, 2 for a command line
    or installation that cannot work (TensorRT missing among them)."""
    try:
        report = build(args)
    except BuildError as exc:
        print(f"pyserver build-engine: {exc}", file=sys.stderr)
        return exc.code
    except (_core.CudaUnavailable, _core.CudaError) as exc:
        print(f"pyserver build-engine: GPU {args.gpu}: {exc}", file=sys.stderr)
        return BUILD_ERROR
    for line in report:
        print(line)
    return 0

