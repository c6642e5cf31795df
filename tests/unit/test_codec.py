"""The v2 codec against tritonclient's own encoder and decoder: every datatype both ways, JSON
data flat and nested, requested outputs, binary_data_output, FP16/BF16 forced binary.

Tests that take the `path` fixture run twice: through the hot path (`accept_*` in the compiled
module or its twin) and through the general path alone, which must decode the same."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import orjson
import pytest
import tritonclient.http as th
from tritonclient.utils import serialize_byte_tensor

from pyserver.errors import InternalError, InvalidRequest
from pyserver.protocol import (
    InferRequest,
    RequestedOutput,
    codec,
    decode_request,
    encode_error,
    encode_response,
)
from pyserver.types import DataType, ModelSignature, TensorSpec

RNG = np.random.default_rng(7)
ALL_TYPES = list(DataType)


@pytest.fixture(params=["hot", "general"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through the hot path, then with it turned off (the general path alone)."""
    if request.param == "general":
        monkeypatch.setattr(codec, "_accept_binary_inputs", lambda *args: None)
        monkeypatch.setattr(codec, "_accept_outputs", lambda *args: None)
    return str(request.param)


def signature(datatype: DataType, max_batch_size: int = 4) -> ModelSignature:
    """One input 'x' and one output 'y' of `datatype`, any inner size."""
    return ModelSignature(
        "m",
        max_batch_size,
        (TensorSpec("x", datatype, (-1,)),),
        (TensorSpec("y", datatype, (-1,)),),
    )


def sample(datatype: DataType, shape: tuple[int, ...] = (2, 3)) -> np.ndarray:
    if datatype is DataType.BYTES:
        items = [b"", "h\u00e9llo \u2603".encode(), b"abc", b"x" * 300, b"0", b"\xe2\x82\xac"]
        return np.array(items[: int(np.prod(shape))], dtype=np.object_).reshape(shape)
    if datatype is DataType.BOOL:
        return RNG.integers(0, 2, shape).astype(bool)
    if datatype is DataType.BF16:
        return (RNG.standard_normal(shape) * 100).astype(ml_dtypes.bfloat16)
    dtype = datatype.numpy
    assert dtype is not None
    if dtype.kind == "f":
        return (RNG.standard_normal(shape) * 1e3).astype(dtype)
    info = np.iinfo(dtype)
    values = RNG.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    values.flat[0], values.flat[-1] = info.min, info.max
    return values


def triton_body(
    arrays: dict[str, np.ndarray],
    binary: bool,
    outputs: list[th.InferRequestedOutput] | None = None,
    **options: Any,
) -> tuple[bytes, int | None]:
    """A request body exactly as tritonclient writes it."""
    inputs = []
    for name, array in arrays.items():
        triton_type = "BYTES" if array.dtype == np.object_ else None
        item = th.InferInput(name, list(array.shape), triton_type or _triton_type(array))
        item.set_data_from_numpy(array, binary_data=binary)
        inputs.append(item)
    body, json_size = th.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, **options
    )
    return (body if isinstance(body, bytes) else body.encode()), json_size


def _triton_type(array: np.ndarray) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return str(np_to_triton_dtype(array.dtype))


def triton_result(chunks: list[Any], header_length: int | None) -> Any:
    """Our response as tritonclient reads it."""
    body = b"".join(chunks)
    return th.InferenceServerClient.parse_response_body(body, header_length=header_length)


def wire_body(doc: dict[str, Any], *tail: bytes) -> tuple[bytes, int]:
    header = orjson.dumps(doc)
    return header + b"".join(tail), len(header)


# --------------------------------------------------------------------------------------------
# round trips


BINARY_ONLY = (DataType.FP16, DataType.BF16)  # their JSON refusal: test_codec_validation.py
ROUND_TRIPS = [
    pytest.param(d, i, o, id=f"{d.name}-in-{'bin' if i else 'json'}-out-{'bin' if o else 'json'}")
    for d in ALL_TYPES
    for i in (True, False)
    for o in (True, False)
    if i or d not in BINARY_ONLY
]


@pytest.mark.parametrize(("datatype", "in_binary", "out_binary"), ROUND_TRIPS)
def test_every_datatype_round_trips(
    path: str, datatype: DataType, in_binary: bool, out_binary: bool
) -> None:
    sig = signature(datatype)
    array = sample(datatype)
    out = th.InferRequestedOutput("y", binary_data=out_binary)
    body, header_length = triton_body({"x": array}, in_binary, [out], request_id="r-1")

    request = decode_request(body, header_length, sig)
    ((shape, view),) = request.inputs
    assert shape == (2, 3)
    assert isinstance(view, memoryview) and view.format == "B" and view.contiguous
    wire = serialize_byte_tensor(array).item() if datatype is DataType.BYTES else array.tobytes()
    assert bytes(view) == wire
    if in_binary:
        assert view.obj is body, "binary inputs must be zero-copy slices of the body"

    chunks, response_length = encode_response(sig, "3", request, [(shape, view)])
    forced = datatype in BINARY_ONLY
    assert (response_length is not None) == (out_binary or forced)
    result = triton_result(chunks, response_length)
    assert result.get_response()["id"] == "r-1"
    assert result.get_response()["model_version"] == "3"
    got = result.as_numpy("y")
    assert got.shape == array.shape
    if datatype is DataType.BYTES and not out_binary:
        assert got.tolist() == [[e.decode() for e in row] for row in array.tolist()]
    else:
        np.testing.assert_array_equal(got, array)
        assert got.dtype == array.dtype


@pytest.mark.parametrize("datatype", [d for d in ALL_TYPES if d.numpy and d not in BINARY_ONLY])
def test_nested_and_flat_json_data_decode_alike(datatype: DataType) -> None:
    sig = signature(datatype)
    array = sample(datatype)
    flat = {"name": "x", "shape": [2, 3], "datatype": datatype.name, "data": array.ravel().tolist()}
    nested = {**flat, "data": array.tolist()}
    for item in (flat, nested):
        request = decode_request(orjson.dumps({"inputs": [item]}), None, sig)
        assert bytes(request.inputs[0][1]) == array.tobytes()


def test_bytes_json_data_frames_strings_nested_empty_and_non_ascii() -> None:
    sig = signature(DataType.BYTES)
    doc = {
        "inputs": [
            {
                "name": "x",
                "shape": [2, 2],
                "datatype": "BYTES",
                "data": [["", "\u00e9t\u00e9"], ["\u2603", "a"]],
            }
        ]
    }
    request = decode_request(orjson.dumps(doc), None, sig)
    expected = b"".join(
        len(e).to_bytes(4, "little") + e
        for e in [b"", "\u00e9t\u00e9".encode(), "\u2603".encode(), b"a"]
    )
    assert bytes(request.inputs[0][1]) == expected


def test_bool_json_data_from_true_false() -> None:
    doc = {
        "inputs": [{"name": "x", "shape": [1, 3], "datatype": "BOOL", "data": [True, False, True]}]
    }
    request = decode_request(orjson.dumps(doc), None, signature(DataType.BOOL))
    assert bytes(request.inputs[0][1]) == b"\x01\x00\x01"


def test_inputs_come_back_in_signature_order_whatever_the_request_order(path: str) -> None:
    sig = ModelSignature(
        "m",
        0,
        (TensorSpec("a", DataType.INT32, (2,)), TensorSpec("b", DataType.FP64, (1,))),
        (TensorSpec("y", DataType.INT32, (2,)),),
    )
    a, b = np.array([1, 2], np.int32), np.array([0.5])
    body, header_length = wire_body(
        {
            "inputs": [
                {
                    "name": "b",
                    "shape": [1],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": 8},
                },
                {
                    "name": "a",
                    "shape": [2],
                    "datatype": "INT32",
                    "parameters": {"binary_data_size": 8},
                },
            ]
        },
        b.tobytes(),
        a.tobytes(),
    )
    request = decode_request(body, header_length, sig)
    assert [bytes(v) for _, v in request.inputs] == [a.tobytes(), b.tobytes()]
    assert [s for s, _ in request.inputs] == [(2,), (1,)]


def two_output_signature() -> ModelSignature:
    return ModelSignature(
        "m",
        8,
        (TensorSpec("x", DataType.FP32, (2,)),),
        (
            TensorSpec("p", DataType.FP32, (2,)),
            TensorSpec("h", DataType.FP16, (2,)),
            TensorSpec("q", DataType.INT64, (1,)),
        ),
    )


def results_for(sig: ModelSignature) -> list[tuple[tuple[int, ...], memoryview]]:
    out = []
    for spec in sig.outputs:
        array = np.arange(int(np.prod(spec.dims)), dtype=spec.datatype.numpy).reshape(1, -1)
        out.append(((1, *spec.dims), memoryview(array.tobytes())))
    return out


def decode_doc(sig: ModelSignature, **extra: Any) -> InferRequest:
    doc = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}
    return decode_request(orjson.dumps({**doc, **extra}), None, sig)


def test_requested_outputs_only_and_in_the_requested_order(path: str) -> None:
    sig = two_output_signature()
    request = decode_doc(
        sig, outputs=[{"name": "q"}, {"name": "p", "parameters": {"binary_data": True}}]
    )
    assert request.outputs == [RequestedOutput(2, False), RequestedOutput(0, True)]
    results = results_for(sig)
    chunks, header_length = encode_response(sig, "1", request, results)
    header = orjson.loads(chunks[0][:header_length] if header_length else chunks[0])
    assert [o["name"] for o in header["outputs"]] == ["q", "p"]
    assert header["outputs"][0] == {"name": "q", "datatype": "INT64", "shape": [1, 1], "data": [0]}
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 8}
    assert chunks[1] is results[0][1], "binary outputs go out as the caller's buffers"
    assert "id" not in header


def test_all_outputs_in_signature_order_when_none_requested(path: str) -> None:
    sig = two_output_signature()
    request = decode_doc(sig)
    # FP16 output 'h' is binary even though nothing asked for binary
    assert request.outputs == [
        RequestedOutput(0, False),
        RequestedOutput(1, True),
        RequestedOutput(2, False),
    ]
    chunks, header_length = encode_response(sig, "1", request, results_for(sig))
    assert header_length == len(chunks[0]) and len(chunks) == 2
    result = triton_result(chunks, header_length)
    for spec, (shape, data) in zip(sig.outputs, results_for(sig), strict=True):
        expected = np.frombuffer(data, dtype=spec.datatype.numpy).reshape(shape)
        np.testing.assert_array_equal(result.as_numpy(spec.name), expected)
    json_outputs = [o for o in result.get_response()["outputs"] if o["name"] != "h"]
    assert all("parameters" not in o for o in json_outputs)


def test_binary_data_output_with_an_explicit_false_override(path: str) -> None:
    sig = two_output_signature()
    request = decode_doc(
        sig,
        parameters={"binary_data_output": True},
        outputs=[
            {"name": "p"},
            {"name": "q", "parameters": {"binary_data": False}},
            {"name": "h", "parameters": {"binary_data": False}},
        ],
    )
    assert [(o.index, o.binary) for o in request.outputs] == [(0, True), (2, False), (1, True)]
    request = decode_doc(sig, parameters={"binary_data_output": True})
    assert all(o.binary for o in request.outputs)


def test_all_json_response_has_no_header_length() -> None:
    sig = signature(DataType.INT32)
    request = decode_doc_json_int(sig)
    chunks, header_length = encode_response(
        sig, "1", request, [((1, 2), memoryview(b"\x01\0\0\0\x02\0\0\0"))]
    )
    assert header_length is None and len(chunks) == 1
    assert orjson.loads(chunks[0]) == {
        "model_name": "m",
        "model_version": "1",
        "id": "abc",
        "outputs": [{"name": "y", "datatype": "INT32", "shape": [1, 2], "data": [1, 2]}],
    }


def decode_doc_json_int(sig: ModelSignature) -> InferRequest:
    doc = {
        "id": "abc",
        "inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT32", "data": [1, 2]}],
    }
    return decode_request(orjson.dumps(doc), None, sig)


def test_request_parameters_are_kept(path: str) -> None:
    sig = signature(DataType.INT32)
    array = np.array([[1, 2]], np.int32)
    body, header_length = triton_body({"x": array}, True, priority=2, timeout=500)
    request = decode_request(body, header_length, sig)
    assert request.parameters == {"priority": 2, "timeout": 500, "binary_data_output": True}
    assert request.id is None


def test_non_utf8_bytes_output_as_json_asks_for_binary_data() -> None:
    sig = signature(DataType.BYTES)
    request = decode_request(
        orjson.dumps(
            {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "BYTES", "data": ["a"]}]}
        ),
        None,
        sig,
    )
    with pytest.raises(InvalidRequest, match="not valid UTF-8.*binary_data: true"):
        encode_response(sig, "1", request, [((1, 1), memoryview(b"\x01\0\0\0\xff"))])


def test_a_result_of_the_wrong_size_is_an_internal_error() -> None:
    sig = signature(DataType.FP32)
    request = decode_doc(sig)
    with pytest.raises(
        InternalError, match="'y' of shape \\[1, 2\\] \\(FP32\\) needs 8 bytes, but 4"
    ):
        encode_response(sig, "1", request, [((1, 2), memoryview(b"\0" * 4))])
    with pytest.raises(InternalError, match="produced 0 output"):
        encode_response(sig, "1", request, [])


def test_encode_error() -> None:
    assert orjson.loads(encode_error('bad "thing"')) == {"error": 'bad "thing"'}


@pytest.mark.parametrize("out_binary", [True, False])
def test_empty_tensors_round_trip(path: str, out_binary: bool) -> None:
    sig = signature(DataType.FP32)
    array = np.zeros((1, 0), np.float32)
    out = th.InferRequestedOutput("y", binary_data=out_binary)
    body, header_length = triton_body({"x": array}, True, [out], request_id="\u00e9")
    request = decode_request(body, header_length, sig)
    assert request.inputs[0][0] == (1, 0) and request.inputs[0][1].nbytes == 0
    chunks, response_length = encode_response(sig, "1", request, [request.inputs[0]])
    result = triton_result(chunks, response_length)
    assert result.as_numpy("y").shape == (1, 0)
    assert result.get_response()["id"] == "\u00e9"
