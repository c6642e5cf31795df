"""Write the bundled ONNX models: engines/add_sub/1/model.onnx and engines/digits/1/model.onnx,
and digits' drift reference sample, engines/digits/reference/pixels.npy.

    python tools/make_models.py [--output-dir DIR]   # DIR defaults to the repository's engines/

Deterministic: fixed seeds, single-threaded BLAS, no timestamps in the files, so running it again
on the same machine and library versions writes byte-identical files. Nothing is downloaded: the
digits come from scikit-learn's bundled copy of the UCI handwritten digits.

digits is a one-hidden-layer MLP trained in plain numpy (Adam, cosine-decayed learning rate) on
the first 1,437 samples, with the last 360 held out. The last 360 are harder than a random split
(other writers); augmented copies of the training images (one- and half-pixel shifts, small random
rotations and scalings) lift the held-out accuracy from about 0.93 to about 0.96. The accuracy is
measured by running the exported file through onnxruntime, and the script refuses to write a
model below MIN_ACCURACY.

The reference sample is the training split as it is (the first 1,437 images, no augmented copies)
as uint8 (the pixels are whole numbers 0..16; 92 KB): what digits' [monitoring] table compares
the inputs it serves against (population stability index per pixel).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from scipy import ndimage
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parent.parent
OPSET = 17
IR_VERSION = 8  # onnxruntime >= 1.17 reads IR <= 9; opset 17 needs IR >= 8
N_TRAIN, N_HELD_OUT = 1437, 360
MIN_ACCURACY = 0.95
HIDDEN = 128
EPOCHS = 80
SEED = 0


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pyserver-make-models"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def add_sub_model() -> onnx.ModelProto:
    """OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, all FP32 [N, 16]."""

    def tensor(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 16])

    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"], name="add"),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"], name="sub"),
        ],
        "add_sub",
        [tensor("INPUT0"), tensor("INPUT1")],
        [tensor("OUTPUT0"), tensor("OUTPUT1")],
    )
    return _model(graph)


def _shift(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move each 8x8 image by (dy, dx) pixels, filling with zeros (the background)."""
    out = np.zeros_like(images)
    src_y, dst_y = slice(max(-dy, 0), 8 - max(dy, 0)), slice(max(dy, 0), 8 - max(-dy, 0))
    src_x, dst_x = slice(max(-dx, 0), 8 - max(dx, 0)), slice(max(dx, 0), 8 - max(-dx, 0))
    out[:, dst_y, dst_x] = images[:, src_y, src_x]
    return out


def augment(x: np.ndarray, copies: int, rng: np.random.Generator) -> np.ndarray:
    """The images, their one- and half-pixel shifts up/down/left/right, and `copies` copies each
    under a small random affine map (rotation <= 8 degrees, scale and shear <= 10%, shift <= 0.7
    pixel). Rows stay in blocks of len(x), so labels are np.tile(y, rows // len(x))."""
    images = x.reshape(-1, 8, 8)
    out = [images]
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        moved = _shift(images, dy, dx)
        out += [moved, (images + moved) / 2]
    center = np.array([3.5, 3.5])
    for _ in range(copies):
        block = np.empty_like(images)
        for i, image in enumerate(images):
            angle = np.deg2rad(rng.uniform(-8, 8))
            scale = 1 + rng.uniform(-0.1, 0.1)
            shear = rng.uniform(-0.1, 0.1)
            rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            matrix = rotation @ np.array([[1.0, shear], [0.0, 1.0]]) / scale
            offset = center - matrix @ center + rng.uniform(-0.7, 0.7, 2)
            block[i] = ndimage.affine_transform(image, matrix, offset=offset, order=1)
        out.append(block)
    return np.concatenate(out).reshape(-1, 64)


def train_mlp(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """x (scaled to 0..1) -> Relu(x W1 + b1) W2 + b2 = logits; softmax cross-entropy, Adam with a
    cosine-decayed step, small L2. Returns [W1, b1, W2, b2] in float64."""
    w1 = rng.normal(0.0, np.sqrt(2 / 64), (64, HIDDEN))
    w2 = rng.normal(0.0, np.sqrt(1 / HIDDEN), (HIDDEN, 10))
    params = [w1, np.zeros(HIDDEN), w2, np.zeros(10)]
    moment1 = [np.zeros_like(p) for p in params]
    moment2 = [np.zeros_like(p) for p in params]
    onehot = np.eye(10)[y]
    batch, lr, weight_decay = 128, 2e-3, 1e-4
    total_steps = EPOCHS * -(-len(x) // batch)
    step = 0
    for _ in range(EPOCHS):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            xb, w1, b1, w2, b2 = x[idx], *params
            hidden = np.maximum(xb @ w1 + b1, 0.0)
            logits = hidden @ w2 + b2
            prob = np.exp(logits - logits.max(axis=1, keepdims=True))
            prob /= prob.sum(axis=1, keepdims=True)
            g_logits = (prob - onehot[idx]) / len(idx)
            g_hidden = (g_logits @ w2.T) * (hidden > 0)
            grads = [xb.T @ g_hidden + weight_decay * w1, g_hidden.sum(axis=0),
                     hidden.T @ g_logits + weight_decay * w2, g_logits.sum(axis=0)]
            step += 1
            rate = lr * 0.5 * (1 + np.cos(np.pi * step / total_steps))
            for p, g, m, v in zip(params, grads, moment1, moment2, strict=True):
                m *= 0.9
                m += 0.1 * g
                v *= 0.999
                v += 0.001 * g * g
                p -= rate * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    return params


def _float32(array: np.ndarray, name: str) -> onnx.TensorProto:
    # Weights of never-lit pixels and dead hidden units decay to exactly zero, and whether that
    # zero is +0.0 or -0.0 depends on the BLAS kernel the CPU picks; adding +0.0 turns -0.0 into
    # +0.0, so the file's bytes do not depend on the CPU.
    return numpy_helper.from_array(array.astype(np.float32) + np.float32(0.0), name)


def digits_model(params: list[np.ndarray]) -> onnx.ModelProto:
    """pixels FP32 [N, 64] (raw 0..16) -> label INT64 [N, 1], probabilities FP32 [N, 10]. The
    1/16 input scaling is folded into the first layer's weights."""
    w1, b1, w2, b2 = params
    initializers = [
        _float32(w1 / 16, "w1"), _float32(b1, "b1"), _float32(w2, "w2"), _float32(b2, "b2")
    ]
    nodes = [
        helper.make_node("Gemm", ["pixels", "w1", "b1"], ["hidden_pre"], name="dense1"),
        helper.make_node("Relu", ["hidden_pre"], ["hidden"], name="relu1"),
        helper.make_node("Gemm", ["hidden", "w2", "b2"], ["logits"], name="dense2"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
        # ArgMax of the probabilities (not the logits), so label == argmax(probabilities) holds
        # exactly, ties included (both take the first maximum).
        helper.make_node("ArgMax", ["probabilities"], ["label"], name="argmax", axis=1,
                         keepdims=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 64])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N", 1]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10]),
        ],
        initializer=initializers,
    )
    graph.doc_string = "MLP 64-128-10 on scikit-learn's 8x8 digits; inputs are raw 0..16 values"
    return _model(graph)


def held_out_accuracy(model_bytes: bytes) -> float:
    """Accuracy of the serialized model on the last 360 digits, run through onnxruntime."""
    digits = load_digits()
    x = digits.data[-N_HELD_OUT:].astype(np.float32)
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    (label,) = session.run(["label"], {"pixels": x})
    return float(np.mean(label[:, 0] == digits.target[-N_HELD_OUT:]))


def reference_sample() -> bytes:
    """The training split's pixels as a .npy file (uint8 [1437, 64])."""
    pixels = load_digits().data[:N_TRAIN]
    assert np.array_equal(pixels, np.round(pixels)) and pixels.min() >= 0 and pixels.max() <= 16
    out = io.BytesIO()
    np.save(out, pixels.astype(np.uint8), allow_pickle=False)
    return out.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    print(f"wrote {path} ({len(data):,} bytes)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=REPO / "engines",
                        help="model repository to write into (default: %(default)s)")
    args = parser.parse_args(argv)
    out: Path = args.output_dir

    # One BLAS thread: multi-threaded reductions may sum in a different order from run to run.
    with threadpool_limits(limits=1):
        digits = load_digits()
        assert len(digits.data) == N_TRAIN + N_HELD_OUT
        rng = np.random.default_rng(SEED)
        x = augment(digits.data[:N_TRAIN], copies=10, rng=rng)
        y = np.tile(digits.target[:N_TRAIN], len(x) // N_TRAIN)
        params = train_mlp(x / 16.0, y, rng)

    digits_bytes = digits_model(params).SerializeToString()
    accuracy = held_out_accuracy(digits_bytes)
    print(f"digits: held-out accuracy {accuracy:.4f} on the last {N_HELD_OUT} samples")
    if accuracy < MIN_ACCURACY:
        print(f"digits: below {MIN_ACCURACY}; not writing the model", file=sys.stderr)
        return 1
    _write(out / "add_sub" / "1" / "model.onnx", add_sub_model().SerializeToString())
    _write(out / "digits" / "1" / "model.onnx", digits_bytes)
    _write(out / "digits" / "reference" / "pixels.npy", reference_sample())
    return 0


if __name__ == "__main__":
    sys.exit(main())
