"""`pyserver serve --model-repository DIR --model-name NAME` on one model's folder, as KServe's
storage initializer leaves /mnt/models: the bundled digits folder served as "mnist" by the CLI
as a subprocess, read through tritonclient, stopped with SIGTERM, and the temporary repository
gone afterwards while the model's own files stay."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from sklearn.datasets import load_digits

from tests.conftest import ENGINES, ROOT
from tests.e2e.test_serve import free_port, wait_ready

pytestmark = pytest.mark.e2e


def made_repositories(temporary: Path) -> list[Path]:
    # Only pyserver's own: other libraries may leave files of theirs in TMPDIR.
    return sorted(temporary.glob("pyserver-models-*"))


def test_one_models_folder_served_under_the_model_name(tmp_path: Path) -> None:
    storage = tmp_path / "mnt-models"
    shutil.copytree(ENGINES / "digits", storage)
    os.chmod(storage, 0o555)  # the storage initializer's volume may be read-only
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyserver", "serve", "--model-repository", str(storage),
         "--model-name=mnist", "--host", "127.0.0.1", "--http-port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(temporary)},
    )
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        wait_ready(proc, client)
        [made] = made_repositories(temporary)
        assert (made / "mnist").resolve() == storage.resolve()

        assert client.is_model_ready("mnist")
        assert not client.is_model_ready("digits")
        metadata = client.get_model_metadata("mnist")
        assert metadata["name"] == "mnist"
        assert [t["name"] for t in metadata["inputs"]] == ["pixels"]

        pixels = load_digits().data[-8:].astype(np.float32)
        want_label, want_prob = ort.InferenceSession(str(storage / "1" / "model.onnx")).run(
            None, {"pixels": pixels}
        )
        inp = httpclient.InferInput("pixels", [8, 64], "FP32")
        inp.set_data_from_numpy(pixels)
        result = client.infer("mnist", [inp])
        np.testing.assert_array_equal(result.as_numpy("label"), want_label)
        np.testing.assert_allclose(result.as_numpy("probabilities"), want_prob, rtol=1e-5, atol=1e-7)
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        os.chmod(storage, 0o755)
    assert proc.returncode == 0, out.decode()
    assert made_repositories(temporary) == [], "the temporary repository was left behind"
    assert (storage / "1" / "model.onnx").is_file()


def test_a_bare_model_file_is_completed_and_served(tmp_path: Path) -> None:
    """KServe's storage initializer may leave just the model file: /mnt/models/model.onnx."""
    storage = tmp_path / "mnt-models"
    storage.mkdir()
    shutil.copy(ENGINES / "digits" / "1" / "model.onnx", storage / "model.onnx")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyserver", "serve", "--model-repository", str(storage),
         "--model-name", "mnist", "--host", "127.0.0.1", "--http-port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path)},
    )
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        wait_ready(proc, client)
        config = client.get_model_config("mnist")
        assert config["max_batch_size"] == 4  # --backend-config default-max-batch-size
        pixels = load_digits().data[-4:].astype(np.float32)
        inp = httpclient.InferInput("pixels", [4, 64], "FP32")
        inp.set_data_from_numpy(pixels)
        want = ort.InferenceSession(str(storage / "model.onnx")).run(["label"], {"pixels": pixels})[0]
        np.testing.assert_array_equal(client.infer("mnist", [inp]).as_numpy("label"), want)
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()

