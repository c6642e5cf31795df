"""Monitoring over real HTTP (GET .../monitoring and /metrics) on real models: exact histograms
and class counts for known data, drift of digits' held-out images against its training sample,
a collapsing classifier, NaN and infinities, warmup left out, the first window as reference."""

from __future__ import annotations

import http.client
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from onnx import TensorProto, helper
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_digits

from tests.conftest import ENGINES, RunningServer

BOUNDS = np.array([0, 2, 4, 8, 12, 16], np.float32)  # engines/digits/config.toml
DIGITS = load_digits().data.astype(np.float32)
TRAIN, HELD_OUT = DIGITS[:1437], DIGITS[-360:]


def request(port: int, method: str, path: str, body: object | None = None
            ) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body))
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        conn.close()


def infer(server: RunningServer, model: str, pixels: np.ndarray, **extra: Any) -> dict[str, Any]:
    body = {"inputs": [{"name": "pixels", "shape": list(pixels.shape), "datatype": "FP32",
                        "data": pixels.ravel().tolist()}], **extra}
    status, answer = request(server.port, "POST", f"/v2/models/{model}/infer", body)
    assert status == 200, answer
    return answer  # type: ignore[no-any-return]


def monitoring(server: RunningServer, model: str) -> dict[str, Any]:
    status, report = request(server.port, "GET", f"/v2/models/{model}/monitoring")
    assert status == 200, report
    return report  # type: ignore[no-any-return]


def scrape(server: RunningServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def per_pixel_histograms(pixels: np.ndarray) -> np.ndarray:
    """[64, 7] counts: bucket k holds values <= BOUNDS[k] (above the previous bound); the last
    those above 16. NaN and infinities in none (as the core counts)."""
    finite = np.isfinite(pixels)
    index = np.searchsorted(BOUNDS, pixels, side="left")
    return np.stack([np.bincount(index[finite[:, f], f], minlength=7) for f in range(64)])


def digits_copy(root: Path, name: str, extra: str = "") -> None:
    shutil.copytree(ENGINES / "digits", root / name)
    if extra:
        with open(root / name / "config.toml", "a") as config:
            config.write(extra)


@pytest.fixture
def digits(tmp_path: Path, serve_repository: Any) -> RunningServer:
    """The bundled digits (config, model, reference sample) copied under several names, so
    each test's window starts empty."""
    for name in ("counts", "held_out", "scaled", "shifted", "nan"):
        digits_copy(tmp_path, name)
    server: RunningServer = serve_repository(tmp_path)
    return server


def test_exact_counts_over_http(digits: RunningServer) -> None:
    rng = np.random.default_rng(7)
    batches = [rng.integers(0, 17, (rows, 64)).astype(np.float32) for rows in (1, 5, 12)]
    batches[0][0, :7] = [0, 2, 4, 8, 12, 16, 16.5]  # each bound, and above the last
    labels, tops = [], []
    # One request through tritonclient's binary tensors, the rest as JSON.
    client = httpclient.InferenceServerClient(digits.url)
    pixels = httpclient.InferInput("pixels", list(batches[0].shape), "FP32")
    pixels.set_data_from_numpy(batches[0])
    answer = client.infer("counts", [pixels])
    labels.append(answer.as_numpy("label").ravel())
    tops.append(answer.as_numpy("probabilities").max(axis=1))
    client.close()
    for batch in batches[1:]:
        outputs = {o["name"]: o for o in infer(digits, "counts", batch)["outputs"]}
        labels.append(np.array(outputs["label"]["data"]))
        tops.append(np.array(outputs["probabilities"]["data"], np.float32).reshape(-1, 10).max(1))
    sent = np.concatenate(batches)
    label, top = np.concatenate(labels), np.concatenate(tops)

    report = monitoring(digits, "counts")
    assert report["batches"]["seen"] == report["batches"]["sampled"] == 3
    (inputs,) = report["inputs"]
    expected = per_pixel_histograms(sent)
    assert inputs["window"]["features"] == expected.tolist()
    assert inputs["total"]["histogram"] == expected.sum(axis=0).tolist()
    assert inputs["total"]["count"] == sent.size and inputs["total"]["nan"] == 0
    assert math.isclose(inputs["total"]["mean"], float(sent.astype(np.float64).mean()))
    label_report, probabilities = report["outputs"]
    assert label_report["window"]["classes"] == np.bincount(label, minlength=10).tolist()
    assert label_report["window"]["count"] == len(sent)
    # The top probability of each row, and the class it belongs to (= label).
    assert probabilities["window"]["classes"] == label_report["window"]["classes"]
    top_bounds = np.array([0.5, 0.9, 0.99], np.float32)
    expected_top = np.bincount(np.searchsorted(top_bounds, top, side="left"), minlength=4)
    assert probabilities["window"]["values"]["histogram"] == expected_top.tolist()

    samples = scrape(digits)
    base = {("model", "counts"), ("version", "1")}
    for feature in (0, 5, 63):
        labels_ = frozenset(base | {("input", "pixels"), ("feature", str(feature)),
                                    ("le", "8.0")})
        cumulative = int(expected[feature][:4].sum())
        assert samples[("pyserver_input_value_bucket", labels_)] == cumulative
    for cls in range(10):
        key = ("pyserver_prediction_class_total",
               frozenset(base | {("output", "label"), ("class", str(cls))}))
        assert samples[key] == int(np.sum(label == cls))


def test_drift_of_held_out_scaled_and_shifted_digits(digits: RunningServer) -> None:
    """digits' reference is its training split (the first 1,437 images). Population stability
    index per pixel, averaged over the 64 pixels:
      - the 360 held-out images (other writers, same task): about 0.03. Random 360-image subsets
        of the training split itself score about 0.01 (sampling noise alone), so 0.03 is a
        little real difference between writers. The threshold, 0.1, is the usual line below
        which a PSI means "no significant shift";
      - the same images with every pixel doubled (about 3.0), or moved 4 pixels right (about
        4.9): far beyond 0.25, the usual line for "significant shift"; the test asks for 1.0,
        ten times the threshold, so the separation is not a matter of tuning."""
    shifted = np.zeros_like(HELD_OUT).reshape(-1, 8, 8)
    shifted[:, :, 4:] = HELD_OUT.reshape(-1, 8, 8)[:, :, :4]
    for model, pixels in (("held_out", HELD_OUT), ("scaled", HELD_OUT * 2),
                          ("shifted", shifted.reshape(-1, 64))):
        for start in range(0, 360, 40):
            infer(digits, model, pixels[start:start + 40])
    scores = {}
    for model in ("held_out", "scaled", "shifted"):
        (pixels,) = monitoring(digits, model)["inputs"]
        assert pixels["reference"]["source"] == "file"
        assert pixels["reference"]["file"] == "reference/pixels.npy"
        assert pixels["reference"]["count"] == TRAIN.size
        assert pixels["window"]["count"] == HELD_OUT.size
        scores[model] = pixels["drift"]["score"]
        assert len(pixels["drift"]["features"]) == 64
    assert scores["held_out"] < 0.1, scores
    assert scores["scaled"] > 1.0 and scores["shifted"] > 1.0, scores
    # The gauge per pixel, and the endpoint's mean of it.
    samples = scrape(digits)
    gauges = [value for (name, labels), value in samples.items()
              if name == "pyserver_input_drift" and ("model", "held_out") in labels]
    assert len(gauges) == 64 and math.isclose(sum(gauges) / 64, scores["held_out"])
    # A healthy classifier spreads its answers: no class takes more than a fifth.
    label = monitoring(digits, "held_out")["outputs"][0]
    assert label["window"]["top_class_share"] < 0.2


def test_nan_and_inf_are_counted_and_answered_as_the_model_does(digits: RunningServer) -> None:
    pixels = HELD_OUT[:4].copy()
    pixels[0, 3] = np.nan
    pixels[1, [5, 6]] = np.inf
    pixels[2, 7] = -np.inf
    # Binary tensors: JSON has no NaN or infinity.
    client = httpclient.InferenceServerClient(digits.url)
    tensor = httpclient.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    answer = client.infer("nan", [tensor])
    client.close()
    session = ort.InferenceSession(str(ENGINES / "digits" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"pixels": pixels})
    np.testing.assert_array_equal(answer.as_numpy("label"), label)
    np.testing.assert_array_equal(answer.as_numpy("probabilities"), probabilities)  # NaN alike

    (report,) = monitoring(digits, "nan")["inputs"]
    assert (report["total"]["nan"], report["total"]["inf"]) == (1, 3)
    assert report["total"]["count"] == pixels.size - 4
    assert report["total"]["elements"] == pixels.size
    samples = scrape(digits)
    labels = frozenset({("model", "nan"), ("version", "1"), ("input", "pixels")})
    assert samples[("pyserver_input_nan_total", labels)] == 1
    assert samples[("pyserver_input_inf_total", labels)] == 3


def test_a_collapsing_classifier_shows_in_the_class_shares(
    tmp_path: Path, serve_repository: Any
) -> None:
    """A classifier that answers class 3 whatever it is asked: the label's window has one class
    with all of it, and so do the top scores."""
    folder = tmp_path / "collapsed"
    (folder / "1").mkdir(parents=True)
    zeros = helper.make_tensor("zeros", TensorProto.FLOAT, [4, 1], [0.0] * 4)
    three = helper.make_tensor("three", TensorProto.INT64, [], [3])
    onehot = helper.make_tensor("onehot", TensorProto.FLOAT, [1, 5], [0, 0, 0, 1, 0])
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "zeros"], ["nothing"]),  # [N, 1] of 0
            helper.make_node("Cast", ["nothing"], ["nothing64"], to=TensorProto.INT64),
            helper.make_node("Add", ["nothing64", "three"], ["label"]),
            helper.make_node("Add", ["nothing", "onehot"], ["scores"]),  # [N, 5]
        ],
        "collapsed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N", 1]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 5])],
        initializer=[zeros, three, onehot],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (folder / "1" / "model.onnx").write_bytes(model.SerializeToString())
    (folder / "config.toml").write_text(
        'backend = "onnxruntime"\nmax_batch_size = 8\n[dynamic_batching]\n'
        "[monitoring]\n"
        '[[monitoring.input]]\nname = "x"\nbuckets = [0]\n'
        '[[monitoring.output]]\nname = "label"\nclasses = 5\n'
        '[[monitoring.output]]\nname = "scores"\ntop = true\nbuckets = [0.5]\n')
    server: RunningServer = serve_repository(tmp_path)
    rng = np.random.default_rng(3)
    for _ in range(20):
        x = rng.normal(size=(2, 4)).astype(np.float32)
        body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                            "data": x.ravel().tolist()}]}
        status, answer = request(server.port, "POST", "/v2/models/collapsed/infer", body)
        assert status == 200 and answer["outputs"][0]["data"] == [3, 3]
    label, scores = monitoring(server, "collapsed")["outputs"]
    for output in (label, scores):
        window = output["window"]
        assert window["count"] == 40
        assert window["classes"] == [0, 0, 0, 40, 0]
        assert (window["top_class"], window["top_class_share"]) == (3, 1.0)
        assert window["shares"] == [0.0, 0.0, 0.0, 1.0, 0.0]
    samples = scrape(server)
    share = ("pyserver_prediction_top_class_share",
             frozenset({("model", "collapsed"), ("version", "1"), ("output", "label")}))
    assert samples[share] == 1.0


def test_warmup_is_not_counted_and_unmonitored_models_answer_404(
    tmp_path: Path, serve_repository: Any
) -> None:
    digits_copy(tmp_path, "warm", "\n[[model_warmup]]\nname = \"w\"\nbatch_size = 4\ncount = 3\n"
                "[model_warmup.inputs.pixels]\ndata_type = \"TYPE_FP32\"\ndims = [64]\n"
                "zero_data = true\n")
    shutil.copytree(ENGINES / "identity", tmp_path / "identity")
    server: RunningServer = serve_repository(tmp_path)
    report = monitoring(server, "warm")
    assert report["batches"] == {"seen": 0, "sampled": 0, "failed": 0}
    assert report["inputs"][0]["total"]["count"] == 0
    stats = request(server.port, "GET", "/v2/models/warm/stats")[1]
    assert stats["model_stats"][0]["execution_count"] >= 1  # the warmup did run
    infer(server, "warm", HELD_OUT[:2])
    assert monitoring(server, "warm")["inputs"][0]["total"]["count"] == 128
    assert monitoring(server, "warm")["model"] == "warm"
    status, error = request(server.port, "GET", "/v2/models/warm/versions/1/monitoring")
    assert status == 200 and error["version"] == "1"
    status, error = request(server.port, "GET", "/v2/models/identity/monitoring")
    assert status == 404 and "has no monitoring" in error["error"]
    status, error = request(server.port, "GET", "/v2/models/nope/monitoring")
    assert status == 404 and "unknown model 'nope'" in error["error"]
    status, error = request(server.port, "GET", "/v2/models/warm/versions/7/monitoring")
    assert status == 404


def test_first_window_as_reference(tmp_path: Path, serve_repository: Any) -> None:
    config = (ENGINES / "digits" / "config.toml").read_text()
    config = config.replace('reference = "reference/pixels.npy"', "reference_first_window = true")
    config = config.replace("window_seconds = 300", "window_seconds = 1")
    digits_copy(tmp_path, "first")
    (tmp_path / "first" / "config.toml").write_text(config)
    server: RunningServer = serve_repository(tmp_path)
    infer(server, "first", HELD_OUT[:100])
    (pixels,) = monitoring(server, "first")["inputs"]
    assert pixels["reference"] is None and pixels["drift"] is None  # the window still runs
    time.sleep(1.2)
    (pixels,) = monitoring(server, "first")["inputs"]
    assert pixels["reference"]["source"] == "first_window"
    assert pixels["reference"]["features"] == per_pixel_histograms(HELD_OUT[:100]).tolist()
    assert pixels["window"]["count"] == 0  # the first window's data aged out of the window
    infer(server, "first", HELD_OUT[:100] * 2)
    (pixels,) = monitoring(server, "first")["inputs"]
    assert pixels["drift"]["score"] > 1.0
