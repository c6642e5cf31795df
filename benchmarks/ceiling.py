"""The in-process ceiling: the same ONNX model called directly through ONNX Runtime, no server.

    python benchmarks/ceiling.py --model engines/digits/1/model.onnx --batch 1 16 64 128
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort


def session_for(path: str, intra_op_threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def ceiling(path: str, batch: int, seconds: float = 2.0, intra_op_threads: int = 1) -> float:
    """Rows per second when one thread calls the model back to back with `batch` rows."""
    session = session_for(path, intra_op_threads)
    feed = {}
    for node in session.get_inputs():
        shape = [batch] + [d if isinstance(d, int) else 1 for d in node.shape[1:]]
        feed[node.name] = (np.random.default_rng(0).random(shape) * 16).astype(np.float32)
    for _ in range(20):
        session.run(None, feed)
    calls = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, feed)
        calls += 1
    return calls * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="engines/digits/1/model.onnx")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64, 128])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()
    for b in args.batch:
        print(f"in-process batch {b:4d}: {ceiling(args.model, b, args.seconds, args.threads):10.0f} infer/s")


if __name__ == "__main__":
    main()
