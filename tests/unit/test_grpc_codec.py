"""The gRPC codec (pyserver.protocol.grpc_codec), sans-IO: ModelInferRequest messages in,
InferRequest out; results in, ModelInferResponse bytes out. The rules the HTTP codec also has
must give the same error, class and message, over both (`test_same_rule_same_message`)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from pyserver.errors import InternalError, InvalidRequest, ServerError, Unsupported
from pyserver.grpc import messages as pb
from pyserver.protocol import decode_request
from pyserver.protocol.codec import InferRequest, RequestedOutput
from pyserver.protocol.grpc_codec import (
    decode_infer_request,
    encode_infer_response,
    encode_stream_error,
    encode_stream_response,
)
from pyserver.types import DataType, ModelSignature, TensorSpec

SIG = ModelSignature(
    "m", 8,
    (TensorSpec("a", DataType.FP32, (3,)), TensorSpec("s", DataType.BYTES, (-1,))),
    (TensorSpec("y", DataType.FP32, (3,)), TensorSpec("t", DataType.BYTES, (-1,))),
)
A = np.arange(3, dtype=np.float32)
S_FRAMED = b"\x01\0\0\0x\x02\0\0\0yz"


def message(inputs: list[dict[str, Any]], raw: list[bytes] | None = None, **fields: Any) -> Any:
    """A ModelInferRequest: inputs as {name, datatype, shape, contents?, parameters?}."""
    parameters = fields.pop("parameters", {})
    outputs = fields.pop("outputs", [])
    m = pb.ModelInferRequest(**fields)
    for spec in inputs:
        t = m.inputs.add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
        for field, values in spec.get("contents", {}).items():
            getattr(t.contents, field).extend(values)
        _set_parameters(t.parameters, spec.get("parameters", {}))
    for spec in outputs:
        o = m.outputs.add(name=spec["name"])
        _set_parameters(o.parameters, spec.get("parameters", {}))
    _set_parameters(m.parameters, parameters)
    m.raw_input_contents.extend(raw or [])
    return pb.ModelInferRequest.FromString(m.SerializeToString())  # as it arrives


def _set_parameters(target: Any, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, int):
            target[key].int64_param = value
        elif isinstance(value, float):
            target[key].double_param = value
        else:
            target[key].string_param = value


def a_in(**over: Any) -> dict[str, Any]:
    return {"name": "a", "datatype": "FP32", "shape": [1, 3], **over}


def s_in(**over: Any) -> dict[str, Any]:
    return {"name": "s", "datatype": "BYTES", "shape": [1, 2], **over}


def good_raw(**fields: Any) -> Any:
    return message([a_in(), s_in()], [A.tobytes(), S_FRAMED], **fields)


def error_of(fn: Any, *args: Any) -> ServerError:
    with pytest.raises(ServerError) as info:
        fn(*args)
    return info.value


# --------------------------------------------------------------------------------------------
# decode


def test_raw_contents_decode_as_views_of_the_message() -> None:
    request = decode_infer_request(good_raw(id="7"), SIG)
    assert request.id == "7" and request.parameters == {}
    assert [shape for shape, _ in request.inputs] == [(1, 3), (1, 2)]
    assert [bytes(v) for _, v in request.inputs] == [A.tobytes(), S_FRAMED]
    assert all(type(v) is memoryview for _, v in request.inputs)
    # every output, raw
    assert request.outputs == [RequestedOutput(0, True), RequestedOutput(1, True)]


def test_inputs_in_any_order_land_in_signature_order() -> None:
    m = message([s_in(), a_in()], [S_FRAMED, A.tobytes()])
    assert [bytes(v) for _, v in decode_infer_request(m, SIG).inputs] == [A.tobytes(), S_FRAMED]


@pytest.mark.parametrize(
    ("datatype", "field", "values", "dtype"),
    [
        ("BOOL", "bool_contents", [True, False, True], np.bool_),
        ("UINT8", "uint_contents", [0, 7, 255], np.uint8),
        ("UINT16", "uint_contents", [0, 7, 65535], np.uint16),
        ("UINT32", "uint_contents", [0, 7, 2**32 - 1], np.uint32),
        ("UINT64", "uint64_contents", [0, 7, 2**64 - 1], np.uint64),
        ("INT8", "int_contents", [-128, 0, 127], np.int8),
        ("INT16", "int_contents", [-32768, 0, 32767], np.int16),
        ("INT32", "int_contents", [-(2**31), 0, 2**31 - 1], np.int32),
        ("INT64", "int64_contents", [-(2**63), 0, 2**63 - 1], np.int64),
        ("FP32", "fp32_contents", [0.5, -1.25, 3.0], np.float32),
        ("FP64", "fp64_contents", [0.1, -1e300, 3.0], np.float64),
    ],
)
def test_typed_contents_of_every_datatype(datatype: str, field: str, values: list[Any], dtype: Any) -> None:
    sig = ModelSignature("m", 0, (TensorSpec("x", DataType[datatype], (3,)),), ())
    m = message([{"name": "x", "datatype": datatype, "shape": [3], "contents": {field: values}}])
    (shape, view), = decode_infer_request(m, sig).inputs
    assert shape == (3,)
    np.testing.assert_array_equal(np.frombuffer(view, dtype=dtype), np.array(values, dtype=dtype))


def test_typed_bytes_contents_are_framed() -> None:
    m = message([a_in(contents={"fp32_contents": [0.0, 1.0, 2.0]}),
                 s_in(contents={"bytes_contents": [b"x", b"yz"]})])
    request = decode_infer_request(m, SIG)
    assert bytes(request.inputs[1][1]) == S_FRAMED
    assert bytes(request.inputs[0][1]) == A.tobytes()


def test_parameters_and_requested_outputs() -> None:
    m = good_raw(parameters={"priority": 2, "timeout": 1000, "binary_data_output": False},
                 outputs=[{"name": "t"}, {"name": "y", "parameters": {"binary_data": False}}])
    request = decode_infer_request(m, SIG)
    assert request.parameters == {"priority": 2, "timeout": 1000, "binary_data_output": False}
    # gRPC answers raw whatever binary_data says, in the order asked
    assert request.outputs == [RequestedOutput(1, True), RequestedOutput(0, True)]


def test_uint64_priority_is_accepted() -> None:
    m = good_raw()
    m.parameters["priority"].uint64_param = 3
    assert decode_infer_request(m, SIG).parameters["priority"] == 3


def test_an_empty_tensor_needs_no_contents() -> None:
    sig = ModelSignature("m", 4, (TensorSpec("x", DataType.FP32, (-1,)),), ())
    (shape, view), = decode_infer_request(message([{"name": "x", "datatype": "FP32", "shape": [1, 0]}]), sig).inputs
    assert shape == (1, 0) and view.nbytes == 0


GRPC_ONLY = [
    ("both", message([a_in(contents={"fp32_contents": [1.0, 2.0, 3.0]}), s_in()], [A.tobytes(), S_FRAMED]),
     InvalidRequest, "input 'a' has both contents and raw_input_contents; give one of them"),
    ("neither", message([a_in(), s_in()]), InvalidRequest,
     "input 'a' has neither contents nor raw_input_contents"),
    ("too-few-raw", message([a_in(), s_in()], [A.tobytes()]), InvalidRequest,
     "input 's' is inputs[1], but raw_input_contents has only 1 entries; give one per input, in the order of inputs"),
    ("too-many-raw", message([a_in(), s_in()], [A.tobytes(), S_FRAMED, b"x"]), InvalidRequest,
     "raw_input_contents has 3 entries, but the request has 2 input(s): 1 left over"),
    ("raw-size", message([a_in(), s_in()], [A.tobytes()[:8], S_FRAMED]), InvalidRequest,
     "input 'a' has 8 bytes in raw_input_contents[0], but shape [1, 3] of FP32 needs 3 x 4 = 12 bytes"),
    ("wrong-field", message([a_in(contents={"int_contents": [1, 2, 3]}), s_in(contents={"bytes_contents": [b"", b""]})]),
     InvalidRequest, "input 'a' is FP32, so its contents belong in fp32_contents, not in int_contents"),
    ("shared-memory", message([a_in(parameters={"shared_memory_region": "r"}), s_in()], [A.tobytes(), S_FRAMED]),
     Unsupported, "input 'a' uses shared memory, which this server does not support; send the data in raw_input_contents"),
]


@pytest.mark.parametrize(("case", "m", "cls", "text"), GRPC_ONLY, ids=[c[0] for c in GRPC_ONLY])
def test_grpc_only_rules(case: str, m: Any, cls: type, text: str) -> None:
    error = error_of(decode_infer_request, m, SIG)
    assert type(error) is cls and str(error) == text


def test_fp16_travels_only_raw() -> None:
    sig = ModelSignature("m", 0, (TensorSpec("h", DataType.FP16, (2,)),), ())
    error = error_of(decode_infer_request, message([{"name": "h", "datatype": "FP16", "shape": [2]}]), sig)
    assert str(error) == "input 'h' has neither contents nor raw_input_contents"
    m = message([{"name": "h", "datatype": "FP16", "shape": [2], "contents": {"fp32_contents": [1.0, 2.0]}}])
    assert "travels only as raw data; send it in raw_input_contents" in str(error_of(decode_infer_request, m, sig))
    raw = np.array([1, 2], np.float16).tobytes()
    m = message([{"name": "h", "datatype": "FP16", "shape": [2]}], [raw])
    assert bytes(decode_infer_request(m, sig).inputs[0][1]) == raw


# --------------------------------------------------------------------------------------------
# one rule, one message: the same malformed request over HTTP and over gRPC


def http_body(inputs: list[dict[str, Any]], raw: list[bytes] | None, **doc: Any) -> tuple[bytes, int | None]:
    """The HTTP twin of message(): binary_data_size for raw inputs, JSON data for typed ones."""
    items = []
    for spec, data in zip(inputs, raw or [None] * len(inputs)):
        item = {k: spec[k] for k in ("name", "datatype", "shape")}
        parameters = dict(spec.get("parameters", {}))
        if data is not None:
            parameters["binary_data_size"] = len(data)
        else:
            (values,) = spec["contents"].values()
            item["data"] = [v.decode() if isinstance(v, bytes) else v for v in values]
        if parameters:
            item["parameters"] = parameters
        items.append(item)
    header = json.dumps({"inputs": items, **doc}).encode()
    tail = b"".join(raw or [])
    return header + tail, len(header) if raw else None


def both(inputs: list[dict[str, Any]], raw: list[bytes] | None = None, **doc: Any) -> tuple[Any, tuple[bytes, int | None]]:
    return message(inputs, raw, **doc), http_body(inputs, raw, **doc)


INT8 = ModelSignature("q", 0, (TensorSpec("x", DataType.INT8, (2,)),), (TensorSpec("y", DataType.INT8, (2,)),))
A_RAW, S_RAW = A.tobytes(), S_FRAMED
SAME = [
    ("unknown-input", SIG, both([a_in(), s_in(), {"name": "zz", "datatype": "FP32", "shape": [1]}], [A_RAW, S_RAW, b"\0" * 4])),
    ("missing-input", SIG, both([a_in()], [A_RAW])),
    ("duplicate-input", SIG, both([a_in(), a_in()], [A_RAW, A_RAW])),
    ("datatype", SIG, both([a_in(datatype="INT32"), s_in()], [A_RAW, S_RAW])),
    ("rank", SIG, both([a_in(shape=[3]), s_in()], [A_RAW, S_RAW])),
    ("batch", SIG, both([a_in(shape=[9, 3]), s_in(shape=[9, 2])], [A_RAW * 3, S_RAW])),
    ("dimension", SIG, both([a_in(shape=[1, 4]), s_in()], [A_RAW + b"\0" * 4, S_RAW])),
    ("negative", SIG, both([a_in(shape=[1, -3]), s_in()], [A_RAW, S_RAW])),
    ("framing", SIG, both([a_in(), s_in()], [A_RAW, b"\x09\0\0\0xy"])),
    ("framing-count", SIG, both([a_in(), s_in(shape=[1, 3])], [A_RAW, S_RAW])),
    ("count", INT8, both([{"name": "x", "datatype": "INT8", "shape": [2], "contents": {"int_contents": [1, 2, 3]}}])),
    ("range", INT8, both([{"name": "x", "datatype": "INT8", "shape": [2], "contents": {"int_contents": [1, 300]}}])),
    ("priority", SIG, both([a_in(), s_in()], [A_RAW, S_RAW], parameters={"priority": -1})),
    ("timeout-type", SIG, both([a_in(), s_in()], [A_RAW, S_RAW], parameters={"timeout": "soon"})),
    ("binary-output-type", SIG, both([a_in(), s_in()], [A_RAW, S_RAW], parameters={"binary_data_output": 1})),
    ("unknown-output", SIG, both([a_in(), s_in()], [A_RAW, S_RAW], outputs=[{"name": "nope"}])),
    ("duplicate-output", SIG, both([a_in(), s_in()], [A_RAW, S_RAW], outputs=[{"name": "y"}, {"name": "y"}])),
    ("output-binary-type", SIG, both([a_in(), s_in()], [A_RAW, S_RAW], outputs=[{"name": "y", "parameters": {"binary_data": "yes"}}])),
    ("classification", SIG, both([a_in(), s_in()], [A_RAW, S_RAW], outputs=[{"name": "y", "parameters": {"classification": 2}}])),
]


@pytest.mark.parametrize(("case", "sig", "pair"), SAME, ids=[c[0] for c in SAME])
def test_same_rule_same_message(case: str, sig: ModelSignature, pair: tuple[Any, tuple[bytes, int | None]]) -> None:
    grpc_message, (body, header_length) = pair
    over_http = error_of(decode_request, body, header_length, sig)
    over_grpc = error_of(decode_infer_request, grpc_message, sig)
    assert (type(over_grpc), str(over_grpc)) == (type(over_http), str(over_http))


# --------------------------------------------------------------------------------------------
# encode


def decoded_request(**over: Any) -> InferRequest:
    fields = {"id": "r1", "parameters": {}, "inputs": [],
              "outputs": [RequestedOutput(0, True), RequestedOutput(1, True)], **over}
    return InferRequest(**fields)


def test_the_response_parses_as_model_infer_response() -> None:
    y = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = S_FRAMED + b"\x00\0\0\0"
    results = [((2, 3), memoryview(y).cast("B")), ((2, 1), memoryview(t))]
    answer = pb.ModelInferResponse.FromString(encode_infer_response(SIG, "4", decoded_request(), results))
    assert (answer.model_name, answer.model_version, answer.id) == ("m", "4", "r1")
    assert [(o.name, o.datatype, list(o.shape)) for o in answer.outputs] == [
        ("y", "FP32", [2, 3]), ("t", "BYTES", [2, 1])]
    assert list(answer.raw_output_contents) == [y.tobytes(), t]
    assert not answer.outputs[0].HasField("contents") and not answer.parameters


def test_only_the_requested_outputs_in_their_order_and_no_empty_id() -> None:
    y = np.zeros(3, np.float32)
    results = [((1, 3), y), ((1, 1), memoryview(b"\x01\0\0\0z"))]
    request = decoded_request(id=None, outputs=[RequestedOutput(1, True)])
    answer = pb.ModelInferResponse.FromString(encode_infer_response(SIG, "1", request, results))
    assert [o.name for o in answer.outputs] == ["t"] and answer.id == ""
    assert list(answer.raw_output_contents) == [b"\x01\0\0\0z"]


def test_large_outputs_and_long_shapes_round_trip() -> None:
    sig = ModelSignature("big", 0, (), (TensorSpec("w", DataType.UINT8, (-1, -1)),))
    data = np.random.default_rng(0).integers(0, 255, 300_000, dtype=np.uint8)
    request = decoded_request(outputs=[RequestedOutput(0, True)])
    answer = pb.ModelInferResponse.FromString(encode_infer_response(sig, "1", request, [((1000, 300), data)]))
    assert list(answer.outputs[0].shape) == [1000, 300]
    assert answer.raw_output_contents[0] == data.tobytes()


def test_a_short_output_is_an_internal_error() -> None:
    results = [((2, 3), np.zeros(5, np.float32)), ((1, 1), memoryview(b"\x01\0\0\0z"))]
    error = error_of(encode_infer_response, SIG, "1", decoded_request(), results)
    assert isinstance(error, InternalError) and "needs 24 bytes, but 20 were produced" in str(error)


def test_stream_responses() -> None:
    inner = encode_infer_response(SIG, "1", decoded_request(outputs=[RequestedOutput(0, True)]),
                                  [((1, 3), A), ((1, 1), memoryview(b"\0\0\0\0"))])
    streamed = pb.ModelStreamInferResponse.FromString(encode_stream_response(inner))
    assert streamed.error_message == "" and streamed.infer_response.id == "r1"
    assert streamed.infer_response.raw_output_contents[0] == A.tobytes()
    error = pb.ModelStreamInferResponse.FromString(encode_stream_error("bad \u00e9", "m", "", "r2"))
    assert error.error_message == "bad \u00e9"
    assert (error.infer_response.model_name, error.infer_response.id) == ("m", "r2")
    assert not error.infer_response.outputs

