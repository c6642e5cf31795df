"""Regression tests for what issue 12's probing and fuzzing found (fuzz/README.md lists each
finding): client input that reached a RecursionError, an unexpected exception or invalid
output. Each now gets a clear 4xx-class error, or an answer that is valid JSON."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from pyserver.config import load_config
from pyserver.errors import InvalidRequest, ModelLoadError
from pyserver.logs import LOGS, LogSettings
from pyserver.protocol.codec import MAX_DATA_DEPTH, decode_request, encode_response
from pyserver.types import DataType, ModelSignature, TensorSpec


def sig(datatype: DataType, dims: tuple[int, ...] = (-1,), batch: int = 4) -> ModelSignature:
    return ModelSignature(
        "m", batch, (TensorSpec("x", datatype, dims),), (TensorSpec("y", datatype, dims),)
    )


def body(data: str, shape: str, datatype: str, extra: str = "") -> bytes:
    return (
        f'{{"inputs":[{{"name":"x","shape":{shape},"datatype":"{datatype}","data":{data}}}]'
        f"{extra}}}"
    ).encode()


def deep(levels: int, inner: str = "") -> str:
    return "[" * levels + inner + "]" * levels


def refused(raw: bytes, signature: ModelSignature, header: str | None = None) -> str:
    with pytest.raises(InvalidRequest) as caught:
        decode_request(raw, header, signature)
    return str(caught.value)


# -- finding 1: JSON numbers beyond FP32's range became infinity (and went back out as null) --


@pytest.mark.parametrize("number", ["1e39", "-1e39", "3.5e38", "1" + "0" * 39, "1.7e308"])
def test_fp32_json_numbers_out_of_range_are_refused(number: str) -> None:
    message = refused(body(f"[1, {number}]", "[1,2]", "FP32"), sig(DataType.FP32))
    value = repr(float(number))
    assert message == (
        f"input 'x': value {value} is out of range for FP32 (-3.4028235e+38..3.4028235e+38)"
    )


def test_fp32_accepts_its_largest_value_as_json_writes_it() -> None:
    largest = np.finfo(np.float32).max
    # repr(np.float32 max) is "3.4028235e+38", which parses to a double slightly above it
    request = decode_request(body(f"[{float(largest)!r}, -3.4028235e+38]", "[1,2]", "FP32"),
                             None, sig(DataType.FP32))
    values = np.frombuffer(request.inputs[0][1], dtype=np.float32)
    assert values.tolist() == [largest, -largest]
    # the first double that would round to infinity is refused
    assert "out of range" in refused(body("[3.4028235677973366e+38]", "[1,1]", "FP32"),
                                     sig(DataType.FP32))


def test_fp64_json_keeps_large_numbers() -> None:
    request = decode_request(body("[1e308, -1e308, 18446744073709551615]", "[1,3]", "FP64"),
                             None, sig(DataType.FP64))
    values = np.frombuffer(request.inputs[0][1], dtype=np.float64)
    assert values.tolist() == [1e308, -1e308, 18446744073709551615.0]


def test_numbers_beyond_a_double_are_a_json_error() -> None:
    message = refused(body("[1e400]", "[1,1]", "FP64"), sig(DataType.FP64))
    assert message.startswith("the request's JSON does not parse: number is infinity")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(float("nan"), None), (float("inf"), None), (float("-inf"), None), (1.5, 1.5)],
)
def test_non_finite_outputs_go_out_as_null_in_valid_json(value: float, expected: Any) -> None:
    """The documented choice (pyserver/protocol/codec.py, encode_response): JSON has no NaN or
    infinity, so a model's non-finite outputs are written as null; binary keeps their bits."""
    signature = sig(DataType.FP32)
    request = decode_request(body("[1, 2]", "[1,2]", "FP32"), None, signature)
    output = np.array([value, 2.0], dtype=np.float32)
    chunks, header_length = encode_response(signature, "1", request, [((1, 2), output.tobytes())])
    assert header_length is None
    text = bytes(chunks[0])
    doc = json.loads(text, parse_constant=lambda token: pytest.fail(f"invalid JSON: {token}"))
    assert doc["outputs"][0]["data"] == [expected, 2.0]


# -- finding 2: data nested a thousand levels deep reached Python's recursion limit (500) ------


def test_bytes_data_nested_a_thousand_levels_is_refused() -> None:
    message = refused(body(deep(1000, '"a"'), "[1,1]", "BYTES"), sig(DataType.BYTES))
    assert message == (
        f"input 'x': 'data' is nested more than {MAX_DATA_DEPTH} levels deep "
        "(give it flat, or nested one level per dimension)"
    )


@pytest.mark.parametrize("datatype", ["BYTES", "FP32", "INT64", "BOOL"])
def test_data_nesting_limit(datatype: str) -> None:
    inner = {"BYTES": '"a"', "BOOL": "true"}.get(datatype, "1")
    signature = sig(DataType[datatype])
    shape = "[1" + ",1" * (MAX_DATA_DEPTH - 1) + "]"
    signature = ModelSignature(
        "m", 4, (TensorSpec("x", DataType[datatype], (-1,) * (MAX_DATA_DEPTH - 1)),),
        signature.outputs,
    )
    request = decode_request(body(deep(MAX_DATA_DEPTH, inner), shape, datatype), None, signature)
    assert request.inputs[0][0] == (1,) * MAX_DATA_DEPTH
    message = refused(body(deep(MAX_DATA_DEPTH + 1, inner), shape, datatype), signature)
    assert f"nested more than {MAX_DATA_DEPTH} levels deep" in message


def test_deep_bytes_data_after_a_shallow_element_is_refused() -> None:
    data = '["a", ' + deep(500, '"b"') + "]"
    assert "nested more than" in refused(body(data, "[1,2]", "BYTES"), sig(DataType.BYTES))


def test_deep_numeric_data_after_a_shallow_element_is_refused() -> None:
    data = "[1, " + deep(500, "2") + "]"
    message = refused(body(data, "[1,2]", "FP32"), sig(DataType.FP32))
    assert message == "input 'x': 'data' is not a regular nested list of numbers"


TOO_DEEP = deep(300)  # orjson parses up to 1024 levels but writes only 255


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"parameters":{"priority":%s},"inputs":[]}',
         "request parameter 'priority' must be a non-negative integer, got an array nested too "
         "deeply to show"),
        ('{"parameters":{"timeout":%s},"inputs":[]}',
         "request parameter 'timeout' must be a non-negative integer, got an array nested too "
         "deeply to show"),
        ('{"parameters":{"binary_data_output":%s},"inputs":[]}',
         "request parameter 'binary_data_output' must be true or false, got an array nested too "
         "deeply to show"),
        ('{"inputs":[{"name":"x","shape":[1,%s],"datatype":"FP32","data":[1]}]}',
         "input 'x' has shape an array nested too deeply to show; dimensions must be "
         "non-negative integers"),
        ('{"inputs":[{"name":"x","shape":[1,1],"datatype":"FP32",'
         '"parameters":{"binary_data_size":%s}}]}',
         "input 'x': binary_data_size must be a non-negative integer, got an array nested too "
         "deeply to show"),
        ('{"inputs":[{"name":"x","shape":[1,1],"datatype":"FP32","data":[1]}],'
         '"outputs":[{"name":"y","parameters":{"binary_data":%s}}]}',
         "output 'y': parameter 'binary_data' must be true or false, got an array nested too "
         "deeply to show"),
    ],
    ids=["priority", "timeout", "binary_data_output", "shape", "binary_data_size", "binary_data"],
)
def test_deep_values_quoted_in_messages(raw: str, message: str) -> None:
    assert refused((raw % TOO_DEEP).encode(), sig(DataType.FP32)) == message


def test_long_values_quoted_in_messages_are_shortened() -> None:
    raw = '{"parameters":{"priority":"%s"},"inputs":[]}' % ("x" * 10_000)
    message = refused(raw.encode(), sig(DataType.FP32))
    assert message == (
        "request parameter 'priority' must be a non-negative integer, got \"" + "x" * 196 + "..."
    )
    shape = "[1, " + ", ".join(["1"] * 1000) + "]"
    message = refused(body("[1]", shape, "FP32"), sig(DataType.FP32))
    assert len(message) < 400 and "..." in message


# -- finding 3: POST /v2/logging with a deep value (RecursionError in repr) or a NUL in
# log_file (ValueError from open) answered 500 -----------------------------------------------


@pytest.fixture
def logs() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    LOGS.configure(LogSettings())
    try:
        yield
    finally:
        LOGS.close()
        LOGS.settings = LogSettings()
        root.setLevel(level)


@pytest.mark.parametrize("key", ["log_file", "log_info", "log_verbose_level", "log_format"])
def test_log_settings_with_deep_values_are_refused(logs: None, key: str) -> None:
    before = LOGS.settings
    with pytest.raises(InvalidRequest, match=f"'{key}' must .* got a value nested too deeply"):
        LOGS.update({key: orjson.loads(deep(1000))})
    assert LOGS.settings == before


def test_a_log_file_with_a_nul_byte_is_refused(logs: None) -> None:
    before = LOGS.settings
    with pytest.raises(InvalidRequest) as caught:
        LOGS.update({"log_file": "a\x00b", "log_info": False})
    assert str(caught.value) == 'cannot open log_file "a\\u0000b": embedded null byte'
    assert LOGS.settings == before


def test_unknown_log_settings_quote_a_shortened_key(logs: None) -> None:
    with pytest.raises(InvalidRequest) as caught:
        LOGS.update({"k" * 5000: 1})
    assert str(caught.value).startswith("unknown log setting '" + "k" * 97 + "...' (known: ")


# -- finding 4: config.toml nested a few hundred levels deep (tomllib's RecursionError) ------


@pytest.mark.parametrize(
    "text",
    [f"backend = 'identity'\nmax_batch_size = {deep(1000)}\n",
     "backend = 'identity'\nparameters = " + "{a=" * 1000 + "1" + "}" * 1000 + "\n"],
    ids=["array", "inline-table"],
)
def test_a_deeply_nested_config_is_a_load_error(tmp_path: Path, text: str) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.toml").write_text(text)
    with pytest.raises(ModelLoadError) as caught:
        load_config(model)
    assert str(caught.value) == (
        f"{model / 'config.toml'}: invalid TOML: arrays or tables nested too deeply"
    )


# -- finding 5 (fuzz_decode, structured mode): the compiled shape check, once a dimension
# overflowed 64 bits, multiplied the rest without checking them --------------------------------


@pytest.mark.parametrize(
    ("shape", "dims", "max_batch_size"),
    [
        ([1, 2**63, 0], (-1, 3), 4),  # 0 elements, so empty data "fitted" a wrong shape
        ([1, 2**63, 5], (-1, 3), 4),
        ([2**63, 2.0], (-1, -1), 0),  # a float dimension
        ([2**63, -1], (-1, -1), 0),
        ([2**64, 2**64, True], (-1, -1, -1), 0),
    ],
)
def test_an_overflowing_dimension_does_not_excuse_the_others(
    shape: list[Any], dims: tuple[int, ...], max_batch_size: int
) -> None:
    from pyserver.protocol import _codec

    assert _codec.shape_elements(shape, dims, max_batch_size) == -1


def test_an_overflowing_shape_with_no_elements_is_refused() -> None:
    signature = ModelSignature(
        "m", 2, (TensorSpec("x", DataType.FP32, (-1, 3)),), (TensorSpec("y", DataType.FP32, (-1, 3)),)
    )
    message = refused(body("[]", "[1,9223372036854775808,0]", "FP32"), signature)
    assert message == (
        "input 'x' has shape [1, 9223372036854775808, 0], but model 'm' expects [-1, -1, 3]: "
        "dimension 2 is 0, expected 3"
    )
