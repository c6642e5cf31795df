"""compute_infer of one ONNX Runtime batch in the core, with no server and no load.

A developer's tool (it drives the private `pyserver._core` directly, which benchmarks/ may not):
one scheduler per engine, requests of B rows sent one at a time (each is one batch), and the
core's mean compute_infer per batch over N batches, against the same model's
InferenceSession.run called in-process back to back. Engines: the native engine with outputs of
fixed shape pre-allocated by the engine (the default) and with every output allocated by ONNX
Runtime, and the Python engine.

    python tools/ort_engine_microbench.py --model engines/digits/1/model.onnx --batch 1 16 64
"""

from __future__ import annotations

import argparse
import select
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pyserver import _core
from pyserver.backends.onnxruntime import OnnxRuntimeEngine, _model_tensors, library_path


def python_session(model: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(model), sess_options=options,
                                providers=["CPUExecutionProvider"])


def per_batch_us(engine: _core.Engine, model: Path, feed: dict[str, np.ndarray], n: int) -> float:
    session = python_session(model)
    inputs = _model_tensors([(i.name, i.type, i.shape) for i in session.get_inputs()], True, model)
    outputs = _model_tensors([(o.name, o.type, o.shape) for o in session.get_outputs()], True, model)
    cq = _core.CompletionQueue()
    options = _core.SchedulerOptions()
    options.model_name = model.parent.parent.name
    options.max_batch_size = 1024
    options.inputs = [(t.name, int(t.datatype), t.dims) for t in inputs]
    options.outputs = [(t.name, int(t.datatype), t.dims) for t in outputs]
    scheduler = _core.Scheduler(options, [engine], cq)
    arrays = [feed[t.name] for t in inputs]
    warmup = 200
    try:
        for i in range(warmup + n):
            scheduler.submit(i, [(a.shape, a) for a in arrays])
            while not (done := cq.drain()):
                select.select([cq.fileno()], [], [], 5)
            assert done[0][1] == 0, done
            if i == warmup - 1:
                (start,) = scheduler.stats()["batch_stats"]
        (end,) = scheduler.stats()["batch_stats"]
    finally:
        scheduler.stop()
        cq.close()
    count = end["compute_infer"]["count"] - start["compute_infer"]["count"]
    return float(end["compute_infer"]["ns"] - start["compute_infer"]["ns"]) / count / 1000


def native(model: Path, preallocate: bool) -> _core.Engine:
    options = _core.OnnxRuntimeSessionOptions()
    options.model_path = str(model)
    options.intra_op_num_threads = 1
    session = _core.onnxruntime_session(str(library_path()), options)
    return _core.onnxruntime_engine(session, [i[0] for i in session.inputs],
                                    [o[0] for o in session.outputs], True, preallocate)


def python(model: Path) -> _core.Engine:
    session = python_session(model)
    inputs = _model_tensors([(i.name, i.type, i.shape) for i in session.get_inputs()], True, model)
    outputs = _model_tensors([(o.name, o.type, o.shape) for o in session.get_outputs()], True, model)
    return _core.python_engine(OnnxRuntimeEngine(session, inputs, outputs))


def in_process_us(model: Path, feed: dict[str, np.ndarray], n: int) -> float:
    session = python_session(model)
    for _ in range(200):
        session.run(None, feed)
    start = time.perf_counter_ns()
    for _ in range(n):
        session.run(None, feed)
    return (time.perf_counter_ns() - start) / n / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("engines/digits/1/model.onnx"))
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("-n", type=int, default=3000, help="batches measured per cell")
    parser.add_argument("--repeats", type=int, default=5, help="medians of this many rounds")
    args = parser.parse_args()
    engines: list[tuple[str, Callable[[], _core.Engine]]] = [
        ("native", lambda: native(args.model, True)),
        ("native, ORT allocates", lambda: native(args.model, False)),
        ("python engine", lambda: python(args.model)),
    ]
    rng = np.random.default_rng(0)
    print(f"mean us per batch over {args.n} batches, median of {args.repeats} rounds "
          f"({args.model})")
    print(f"{'batch':>5} {'in-process':>11} " + " ".join(f"{name:>22}" for name, _ in engines))
    for b in args.batch:
        feed = {i.name: (rng.random([b] + list(i.shape[1:])) * 16).astype(np.float32)
                for i in python_session(args.model).get_inputs()}
        rounds = []
        for _ in range(args.repeats):  # the cells of one round measured side by side in time
            cells = [in_process_us(args.model, feed, args.n)]
            cells += [per_batch_us(make(), args.model, feed, args.n) for _, make in engines]
            rounds.append(cells)
        medians = [statistics.median(column) for column in zip(*rounds)]
        print(f"{b:5d} {medians[0]:11.1f} " + " ".join(f"{c:22.1f}" for c in medians[1:]))


if __name__ == "__main__":
    main()
