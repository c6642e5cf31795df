"""The malformed-request gate: every request in fuzz/corpus/http/ (the project's own corpus,
grown by fuzzing) goes to a real server over a real socket and gets the 4xx its file expects,
with a JSON {"error": ...} that names the problem; never a 5xx (501 only for the unsupported
features the files named unsupported-* ask for). Good requests still answer correctly after.

File format (fuzz/README.md): `# expect <status> <fragment of the message>`, then the request
line `METHOD /path`, header lines, an empty line, and the body's raw bytes. The test adds Host,
Content-Length and Connection: close."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from fuzz.fuzz_decode import BUNDLED
from tests.conftest import RunningServer

CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus" / "http"
FILES = sorted(CORPUS.glob("*.http"))


def parse(data: bytes) -> tuple[int, str, str, str, list[tuple[str, str]], bytes]:
    head, _, body = data.partition(b"\n\n")
    lines = head.decode("latin-1").split("\n")
    expect = lines[0].split(" ", 3)
    assert expect[:2] == ["#", "expect"], lines[0]
    status = int(expect[2])
    fragment = expect[3] if len(expect) > 3 else ""
    method, path = lines[1].split(" ", 1)
    headers = [tuple(line.split(": ", 1)) for line in lines[2:]]
    return status, fragment, method, path, headers, body  # type: ignore[return-value]


def send(port: int, method: str, path: str, headers: list[tuple[str, str]],
         body: bytes) -> tuple[int, dict[str, str], bytes]:
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
            f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers]
    raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, dict(response.getheaders()), response.read()


def test_the_corpus_is_there() -> None:
    assert len(FILES) >= 80


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_malformed_request_gets_its_4xx(server: RunningServer, path: Path) -> None:
    expected, fragment, method, target, headers, body = parse(path.read_bytes())
    status, response_headers, answer = send(server.port, method, target, headers, body)
    assert status < 500 or (status == 501 and path.name.startswith("unsupported-")), (
        f"{path.name}: {status} {answer[:300]!r}"
    )
    assert status == expected, f"{path.name}: {status} {answer[:300]!r}"
    assert response_headers.get("Content-Type", "").startswith("application/json")
    message = json.loads(answer)["error"]
    assert isinstance(message, str) and message
    assert fragment in message, message


def test_good_requests_answer_correctly_after_the_corpus(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.url)
    try:
        x = np.arange(16, dtype=np.float32).reshape(1, 16)
        y = np.full((1, 16), 0.5, dtype=np.float32)

        def tensor(name: str, value: np.ndarray, datatype: str) -> httpclient.InferInput:
            t = httpclient.InferInput(name, list(value.shape), datatype)
            t.set_data_from_numpy(value)
            return t

        result = client.infer("identity", [tensor("INPUT0", x, "FP32")])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)
        result = client.infer("add_sub", [tensor("INPUT0", x, "FP32"), tensor("INPUT1", y, "FP32")])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x + y)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), x - y)
        text = np.array([[b"h\xc3\xa9llo"]], dtype=np.object_)
        result = client.infer("identity_bytes", [tensor("INPUT0", text, "BYTES")])
        assert result.as_numpy("OUTPUT0").tolist() == [[b"h\xc3\xa9llo"]]
        pixels = np.zeros((2, 64), dtype=np.float32)
        result = client.infer("digits", [tensor("pixels", pixels, "FP32")])
        assert result.as_numpy("label").shape == (2, 1)
        probabilities = result.as_numpy("probabilities")
        np.testing.assert_allclose(probabilities.sum(axis=1), [1.0, 1.0], rtol=1e-5)
    finally:
        client.close()


@pytest.mark.parametrize("model", sorted(BUNDLED))
def test_the_fuzzed_signatures_are_what_the_server_serves(server: RunningServer, model: str) -> None:
    """The decode fuzzer's signatures for the bundled models are the served ones (digits' come
    from its ONNX file, so only a running server can tell)."""
    signature = BUNDLED[model]
    status, _, body = send(server.port, "GET", f"/v2/models/{model}", [], b"")
    assert status == 200
    meta = json.loads(body)

    def described(tensors: object) -> list[dict[str, object]]:
        batch = [-1] if signature.max_batch_size > 0 else []
        return [{"name": t.name, "datatype": t.datatype.name, "shape": batch + list(t.dims)}
                for t in tensors]  # type: ignore[attr-defined]

    assert meta["inputs"] == described(signature.inputs)
    assert meta["outputs"] == described(signature.outputs)
