"""Every malformed request in docs/protocol.md's validation list gets its own message and status."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from pyserver.errors import InvalidRequest, ServerError, Unsupported
from pyserver.protocol import decode_request
from pyserver.types import DataType, ModelSignature, TensorSpec
from tests.unit.test_codec import signature, triton_body, wire_body

FP32_SIG = ModelSignature(
    "m",
    8,
    (TensorSpec("a", DataType.FP32, (3,)), TensorSpec("s", DataType.BYTES, (-1,))),
    (TensorSpec("y", DataType.FP32, (3,)),),
)
A_BYTES = np.zeros(3, np.float32).tobytes()
S_BYTES = b"\x01\0\0\0x\x02\0\0\0yz"


def a_item(**over: Any) -> dict[str, Any]:
    return {
        "name": "a",
        "shape": [1, 3],
        "datatype": "FP32",
        "parameters": {"binary_data_size": 12},
        **over,
    }


def s_item(**over: Any) -> dict[str, Any]:
    return {
        "name": "s",
        "shape": [1, 2],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(S_BYTES)},
        **over,
    }


def good(**extra: Any) -> tuple[bytes, int]:
    return wire_body({"inputs": [a_item(), s_item()], **extra}, A_BYTES, S_BYTES)


def with_inputs(
    *items: dict[str, Any], tail: bytes = A_BYTES + S_BYTES, **extra: Any
) -> tuple[bytes, int]:
    return wire_body({"inputs": list(items), **extra}, tail)


def test_the_well_formed_request_decodes() -> None:
    request = decode_request(*good(id="7"), FP32_SIG)
    assert request.id == "7"
    assert [bytes(v) for _, v in request.inputs] == [A_BYTES, S_BYTES]


BAD: dict[str, tuple[Any, type[ServerError], str]] = {
    # 1. header length
    "header not a number": (
        (good()[0], "12a"),
        InvalidRequest,
        "Inference-Header-Content-Length must be a non-negative integer, got '12a'",
    ),
    "header negative": (
        (good()[0], -1),
        InvalidRequest,
        "Inference-Header-Content-Length must be a non-negative integer, got -1",
    ),
    "header past body": (
        (b"{}", 3),
        InvalidRequest,
        "Inference-Header-Content-Length is 3, but the body has only 2 bytes",
    ),
    # 2. JSON and its structure
    "json broken": ((b'{"inputs": [', None), InvalidRequest, "the request's JSON does not parse"),
    "json not object": (
        (b"[1]", None),
        InvalidRequest,
        "the request's JSON must be an object, got an array",
    ),
    "no inputs": (
        (b"{}", None),
        InvalidRequest,
        "the request's JSON must have an 'inputs' list, got nothing",
    ),
    "inputs not list": (
        (b'{"inputs": {}}', None),
        InvalidRequest,
        "must have an 'inputs' list, got an object",
    ),
    "input not object": (
        (b'{"inputs": [3]}', None),
        InvalidRequest,
        "inputs[0] must be an object, got a number",
    ),
    "input no name": (
        with_inputs({"shape": [1], "datatype": "FP32"}),
        InvalidRequest,
        "inputs[0] needs a string 'name'",
    ),
    "input no shape": (
        with_inputs({"name": "a", "datatype": "FP32"}),
        InvalidRequest,
        "input 'a' needs a 'shape' list",
    ),
    "input no datatype": (
        with_inputs({"name": "a", "shape": [1, 3]}),
        InvalidRequest,
        "input 'a' needs a string 'datatype'",
    ),
    "id not string": (good(id=5), InvalidRequest, "request 'id' must be a string, got a number"),
    "parameters not object": (
        good(parameters=[1]),
        InvalidRequest,
        "request 'parameters' must be an object, got an array",
    ),
    "priority negative": (
        good(parameters={"priority": -1}),
        InvalidRequest,
        "request parameter 'priority' must be a non-negative integer, got -1",
    ),
    "priority bool": (
        good(parameters={"priority": True}),
        InvalidRequest,
        "'priority' must be a non-negative integer, got true",
    ),
    "priority null": (
        good(parameters={"priority": None}),
        InvalidRequest,
        "request parameter 'priority' must be a non-negative integer, got null",
    ),
    "timeout null": (
        good(parameters={"timeout": None}),
        InvalidRequest,
        "request parameter 'timeout' must be a non-negative integer, got null",
    ),
    "timeout float": (
        good(parameters={"timeout": 1.5}),
        InvalidRequest,
        "request parameter 'timeout' must be a non-negative integer, got 1.5",
    ),
    "binary_data_output not bool": (
        good(parameters={"binary_data_output": 1}),
        InvalidRequest,
        "'binary_data_output' must be true or false, got 1",
    ),
    # 3. presence
    "unknown input": (
        with_inputs(a_item(), s_item(), {"name": "zz", "shape": [1], "datatype": "FP32"}),
        InvalidRequest,
        "unknown input 'zz' for model 'm'; it takes 'a', 's'",
    ),
    "duplicate input": (
        with_inputs(a_item(), a_item(), s_item()),
        InvalidRequest,
        "input 'a' is given more than once",
    ),
    "missing input": (
        with_inputs(a_item(), tail=A_BYTES),
        InvalidRequest,
        "missing input(s) 's' for model 'm'; it takes 'a', 's'",
    ),
    # 4. datatype, shape, size
    "datatype": (
        with_inputs(a_item(datatype="FP64"), s_item()),
        InvalidRequest,
        "input 'a' has datatype FP64, but model 'm' expects FP32",
    ),
    "rank": (
        with_inputs(a_item(shape=[3]), s_item()),
        InvalidRequest,
        (
            "input 'a' has shape [3] of rank 1, but model 'm' expects rank 2: [-1, 3] "
            "(batch dimension first, max_batch_size 8)"
        ),
    ),
    "batch zero": (
        with_inputs(a_item(shape=[0, 3]), s_item()),
        InvalidRequest,
        "input 'a' has shape [0, 3]: batch size 0 is outside 1..8 (model 'm' has max_batch_size 8)",
    ),
    "batch too big": (
        with_inputs(a_item(shape=[9, 3]), s_item()),
        InvalidRequest,
        "batch size 9 is outside 1..8 (model 'm' has max_batch_size 8)",
    ),
    "dim": (
        with_inputs(a_item(shape=[1, 4]), s_item()),
        InvalidRequest,
        "input 'a' has shape [1, 4], but model 'm' expects [-1, 3]: dimension 1 is 4, expected 3",
    ),
    "negative dim": (
        with_inputs(a_item(), s_item(shape=[1, -2])),
        InvalidRequest,
        "input 's' has shape [1, -2]; dimensions must be non-negative integers",
    ),
    "float dim": (
        with_inputs(a_item(shape=[1, 3.0]), s_item()),
        InvalidRequest,
        "input 'a' has shape [1, 3.0]; dimensions must be non-negative integers",
    ),
    "binary size": (
        with_inputs(a_item(parameters={"binary_data_size": 8}), s_item()),
        InvalidRequest,
        "input 'a' has binary_data_size 8, but shape [1, 3] of FP32 needs 3 x 4 = 12 bytes",
    ),
    "binary size negative": (
        with_inputs(a_item(parameters={"binary_data_size": -12}), s_item()),
        InvalidRequest,
        "input 'a': binary_data_size must be a non-negative integer, got -12",
    ),
    "neither data nor binary": (
        with_inputs(a_item(parameters={}), s_item()),
        InvalidRequest,
        "input 'a' has neither 'data' nor binary_data_size",
    ),
    "both data and binary": (
        with_inputs(a_item(data=[1, 2, 3]), s_item()),
        InvalidRequest,
        "input 'a' has both 'data' and binary_data_size; give one of them",
    ),
    "input parameters not object": (
        with_inputs(a_item(parameters=3), s_item()),
        InvalidRequest,
        "input 'a': 'parameters' must be an object, got a number",
    ),
    "shared memory": (
        with_inputs(a_item(parameters={"shared_memory_region": "r"}), s_item()),
        Unsupported,
        "input 'a' uses shared memory",
    ),
    "json count": (
        with_inputs(a_item(parameters=None, data=[1, 2]), s_item(), tail=S_BYTES),
        InvalidRequest,
        "input 'a' has 2 data element(s), but its shape [1, 3] needs 3",
    ),
    "json nested count": (
        with_inputs(a_item(parameters=None, data=[[1, 2], [3, 4]]), s_item(), tail=S_BYTES),
        InvalidRequest,
        "input 'a' has 4 data element(s), but its shape [1, 3] needs 3",
    ),
    "json ragged": (
        with_inputs(a_item(parameters=None, data=[[1, 2], [3]]), s_item(), tail=S_BYTES),
        InvalidRequest,
        "input 'a': 'data' is not a regular nested list of numbers",
    ),
    "json strings for numbers": (
        with_inputs(a_item(parameters=None, data=["1", "2", "3"]), s_item(), tail=S_BYTES),
        InvalidRequest,
        "input 'a' is FP32, so its 'data' must hold numbers",
    ),
    "json data not list": (
        with_inputs(a_item(parameters=None, data=1), s_item(), tail=S_BYTES),
        InvalidRequest,
        "input 'a': 'data' must be a list, got a number",
    ),
    "json bytes not strings": (
        with_inputs(a_item(), s_item(parameters=None, data=["a", 1]), tail=A_BYTES),
        InvalidRequest,
        "input 's' is BYTES, so its 'data' must hold only strings",
    ),
    "json bytes count": (
        with_inputs(a_item(), s_item(parameters=None, data=[["a"], ["b"], ["c"]]), tail=A_BYTES),
        InvalidRequest,
        "input 's' has 3 data element(s), but its shape [1, 2] needs 2",
    ),
    # 5. the tail, then BYTES framing
    "tail short": (
        wire_body({"inputs": [a_item(), s_item()]}, A_BYTES, S_BYTES[:-1]),
        InvalidRequest,
        (
            "input 's' needs bytes 12..23 of the binary data, but the body has only 22 bytes "
            "after the JSON header (the inputs' binary_data_size add up to 23)"
        ),
    ),
    "tail long": (
        wire_body({"inputs": [a_item(), s_item()]}, A_BYTES, S_BYTES, b"!!"),
        InvalidRequest,
        (
            "the body has 25 bytes of binary data after the JSON header, but the inputs' "
            "binary_data_size add up to 23: 2 byte(s) left over"
        ),
    ),
    "binary without header": (
        (good()[0][: good()[1]], None),
        InvalidRequest,
        "input 'a' has binary_data_size 12, but the request has no Inference-Header-Content-Length",
    ),
    "tail without binary inputs": (
        wire_body(
            {
                "inputs": [
                    a_item(parameters=None, data=[1, 2, 3]),
                    s_item(parameters=None, data=["x", "yz"]),
                ]
            },
            b"junk",
        ),
        InvalidRequest,
        "the body has 4 byte(s) after the JSON header, but no input has a binary_data_size",
    ),
    "bytes too few elements": (
        with_inputs(a_item(), s_item(shape=[1, 3])),
        InvalidRequest,
        (
            "input 's' (BYTES, shape [1, 3]): holds 2 length-prefixed "
            "element(s), but its shape needs 3"
        ),
    ),
    "bytes overrun": (
        wire_body(
            {"inputs": [a_item(), s_item(parameters={"binary_data_size": 9})]},
            A_BYTES,
            b"\x01\0\0\0x\x09\0\0\0",
        ),
        InvalidRequest,
        (
            "input 's' (BYTES, shape [1, 2]): BYTES element 1 at byte 5 declares 9 bytes, "
            "but only 0 remain"
        ),
    ),
    # 6. requested outputs
    "unknown output": (
        good(outputs=[{"name": "nope"}]),
        InvalidRequest,
        "unknown output 'nope' requested from model 'm'; it has 'y'",
    ),
    "duplicate output": (
        good(outputs=[{"name": "y"}, {"name": "y"}]),
        InvalidRequest,
        "output 'y' is requested more than once",
    ),
    "outputs not list": (
        good(outputs={"name": "y"}),
        InvalidRequest,
        "request 'outputs' must be a list, got an object",
    ),
    "output not object": (
        good(outputs=["y"]),
        InvalidRequest,
        "outputs[0] must be an object, got a string",
    ),
    "output no name": (good(outputs=[{}]), InvalidRequest, "outputs[0] needs a string 'name'"),
    "output parameters": (
        good(outputs=[{"name": "y", "parameters": 1}]),
        InvalidRequest,
        "output 'y': 'parameters' must be an object, got a number",
    ),
    "output binary_data": (
        good(outputs=[{"name": "y", "parameters": {"binary_data": "yes"}}]),
        InvalidRequest,
        "output 'y': parameter 'binary_data' must be true or false",
    ),
    "classification": (
        good(outputs=[{"name": "y", "parameters": {"classification": 3}}]),
        Unsupported,
        "output 'y' asks for classification, which is not supported",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_request_gets_its_own_message(case: str) -> None:
    (body, header_length), error, message = BAD[case]
    with pytest.raises(ServerError) as caught:
        decode_request(body, header_length, FP32_SIG)
    assert type(caught.value) is error
    assert message in str(caught.value)


def test_messages_are_distinct() -> None:
    assert len({m for _, _, m in BAD.values()}) == len(BAD)


@pytest.mark.parametrize("datatype", ["FP16", "BF16"])
def test_fp16_and_bf16_in_json_are_refused(datatype: str) -> None:
    sig = signature(DataType[datatype])
    doc = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": datatype, "data": [1.0, 2.0]}]}
    with pytest.raises(
        InvalidRequest, match=f"input 'x' is {datatype}, which travels only as binary"
    ):
        decode_request(orjson.dumps(doc), None, sig)
    # tritonclient itself writes FP16 as JSON numbers when asked to: refused just the same
    body, header_length = triton_body({"x": np.ones((1, 2), np.float16)}, binary=False)
    with pytest.raises(InvalidRequest, match="travels only as binary"):
        decode_request(body, header_length, signature(DataType.FP16))


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("INT8", [1, 300], "input 'x': value 300 is out of range for INT8 (-128..127)"),
        ("UINT32", [-1, 2], "input 'x': value -1 is out of range for UINT32 (0..4294967295)"),
        ("INT32", [1.5, 2], "input 'x' is INT32, so its 'data' must hold integers"),
        ("INT32", [True, False], "input 'x' is INT32, so its 'data' must hold integers"),
        ("BOOL", [1, 0], "input 'x' is BOOL, so its 'data' must hold true/false values"),
        ("FP32", [None, 1.0], "input 'x' is FP32, so its 'data' must hold numbers"),
    ],
)
def test_json_data_of_the_wrong_kind(datatype: str, data: list[Any], message: str) -> None:
    doc = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": datatype, "data": data}]}
    with pytest.raises(InvalidRequest) as caught:
        decode_request(orjson.dumps(doc), None, signature(DataType[datatype]))
    assert message in str(caught.value)


def test_non_batching_model_shapes() -> None:
    sig = ModelSignature(
        "flat",
        0,
        (TensorSpec("x", DataType.INT8, (2, -1)),),
        (TensorSpec("y", DataType.INT8, (2, -1)),),
    )
    ok = {"inputs": [{"name": "x", "shape": [2, 0], "datatype": "INT8", "data": []}]}
    assert decode_request(orjson.dumps(ok), None, sig).inputs[0][0] == (2, 0)
    bad = {"inputs": [{"name": "x", "shape": [1, 2, 1], "datatype": "INT8", "data": [1, 2]}]}
    with pytest.raises(
        InvalidRequest, match=r"rank 3, but model 'flat' expects rank 2: \[2, -1\]$"
    ):
        decode_request(orjson.dumps(bad), None, sig)


def test_header_length_as_header_text_and_whole_body() -> None:
    body, header_length = good()
    assert decode_request(body, str(header_length), FP32_SIG).inputs[1][1].tobytes() == S_BYTES
    # perf_analyzer in JSON mode sends the header equal to the whole body
    doc = orjson.dumps(
        {
            "inputs": [
                a_item(parameters=None, data=[1, 2, 3]),
                s_item(parameters=None, data=["x", "yz"]),
            ]
        }
    )
    assert bytes(decode_request(doc, len(doc), FP32_SIG).inputs[1][1]) == S_BYTES
