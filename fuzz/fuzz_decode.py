#!/usr/bin/env python3
"""Fuzz the inference request decoder (JSON and binary) and the response encoder.

Input layout (so that a corpus file is a readable request with a few bytes in front):

    byte 0      which signature (SIGNATURES[b % len]): the bundled models', then synthetic ones
                covering every datatype, a model without batching and one without inputs
    byte 1      how Inference-Header-Content-Length arrives (b % 8):
                0 absent (the whole body is JSON); 1 the text of the next 4 bytes' little-endian
                uint32 (what the HTTP layer passes); 2 that number as an int; 3 raw header text:
                the next byte is its length n, then n bytes read as latin-1;
                4-7 structured: the rest is not a body but choices from which `_structured`
                builds one (inputs, names, datatypes, shapes, sizes, JSON values, outputs,
                parameters, header length), so that mutations explore what the request says
                rather than JSON syntax
    the rest    the request body

Properties checked for every input (any failure is a finding):

- decoding either succeeds or raises a pyserver.errors.ServerError with status 4xx or 501;
  nothing else escapes (no RecursionError, TypeError, numpy warning, 500);
- two decoders agree exactly, result or error message: the compiled fast path (`_codec`) and
  the general path alone (the fast path switched off through codec's module globals, as
  tests/unit/test_codec_fastpath.py does): so the fast path never
  accepts what the general path refuses, and returns the same tensors when both accept;
- a decoded request has one tensor per declared input, each a flat contiguous byte view whose
  shape fits the signature; byte sizes equal elements x itemsize; BYTES framing holds exactly
  the shape's element count; binary tensors are views of the body that lie inside its binary
  tail, in order, without overlap, covering it exactly; JSON float data is finite;
- encoding a response to the decoded request (outputs made from the body's bytes, NaN and
  infinity included) gives valid JSON whose float data is null exactly where the value is not
  finite, binary_data_size values that match the chunks, and a correct header length; the only
  error it may raise is the 400 for BYTES output that is not UTF-8 asked for as JSON.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson

from pyserver.errors import InvalidRequest, ServerError
from pyserver.protocol import _codec as _compiled
from pyserver.protocol import codec
from pyserver.types import DataType, ModelSignature, TensorSpec


def _spec(name: str, datatype: DataType, *dims: int) -> TensorSpec:
    return TensorSpec(name, datatype, tuple(dims))


FP32, INT64, BYTES = DataType.FP32, DataType.INT64, DataType.BYTES

# The bundled models (engines/*/config.toml; digits' tensors come from its ONNX file, so they are
# written out here: tests/unit/test_fuzz_corpus.py checks these against the configs).
BUNDLED = {
    "add_sub": ModelSignature(
        "add_sub", 64,
        (_spec("INPUT0", FP32, 16), _spec("INPUT1", FP32, 16)),
        (_spec("OUTPUT0", FP32, 16), _spec("OUTPUT1", FP32, 16)),
    ),
    "digits": ModelSignature(
        "digits", 128,
        (_spec("pixels", FP32, 64),),
        (_spec("label", INT64, 1), _spec("probabilities", FP32, 10)),
    ),
    "identity": ModelSignature(
        "identity", 256, (_spec("INPUT0", FP32, 16),), (_spec("OUTPUT0", FP32, 16),)
    ),
    "identity_bytes": ModelSignature(
        "identity_bytes", 64, (_spec("INPUT0", BYTES, 1),), (_spec("OUTPUT0", BYTES, 1),)
    ),
}
_INTS = (
    _spec("i8", DataType.INT8, 2), _spec("u16", DataType.UINT16, -1),
    _spec("i64", INT64, 2), _spec("u64", DataType.UINT64, 1), _spec("b", DataType.BOOL, 2),
    _spec("u8", DataType.UINT8, 1), _spec("i16", DataType.INT16, 1),
    _spec("i32", DataType.INT32, 1), _spec("u32", DataType.UINT32, 1),
)
_FLOATS = (
    _spec("h", DataType.FP16, 2, -1), _spec("bf", DataType.BF16, 2),
    _spec("d", DataType.FP64, -1), _spec("f", FP32, 3),
)
SYNTHETIC = {
    "ints": ModelSignature("ints", 4, _INTS, _INTS),
    "floats": ModelSignature("floats", 0, _FLOATS, _FLOATS),
    "strings": ModelSignature(
        "strings", 0, (_spec("s", BYTES, -1, -1), _spec("t", BYTES, 2)),
        (_spec("s", BYTES, -1, -1), _spec("t", BYTES, 2)),
    ),
    "no_inputs": ModelSignature("no_inputs", 0, (), (_spec("y", FP32, 1),)),
    # a variable dimension before a fixed one (the shape-overflow finding needed one)
    "mixed_dims": ModelSignature(
        "mixed_dims", 2, (_spec("x", FP32, -1, 3),), (_spec("y", FP32, -1, 3),)
    ),
}
SIGNATURES: tuple[ModelSignature, ...] = (*BUNDLED.values(), *SYNTHETIC.values())

HEADER_ABSENT, HEADER_TEXT, HEADER_INT, HEADER_RAW = range(4)


def pack(signature: str, body: bytes, header: int | str | None) -> bytes:
    """A fuzz input for this signature name, body and header-length value (for seeds)."""
    index = [s.name for s in SIGNATURES].index(signature)
    if header is None:
        return bytes([index, HEADER_ABSENT]) + body
    if isinstance(header, int):
        return bytes([index, HEADER_TEXT]) + header.to_bytes(4, "little") + body
    raw = header.encode("latin-1")
    return bytes([index, HEADER_RAW, len(raw)]) + raw + body


def unpack(data: bytes) -> tuple[ModelSignature, bytes, int | str | None] | None:
    """(signature, body, header-length value) from a fuzz input; None when too short."""
    if len(data) < 2:
        return None
    signature = SIGNATURES[data[0] % len(SIGNATURES)]
    mode = data[1] % 8
    rest = data[2:]
    if mode >= 4:
        body, header = _structured(signature, _Choices(rest))
        return signature, body, header
    if mode == HEADER_ABSENT:
        return signature, rest, None
    if mode in (HEADER_TEXT, HEADER_INT):
        if len(rest) < 4:
            return None
        value = int.from_bytes(rest[:4], "little")
        return signature, rest[4:], str(value) if mode == HEADER_TEXT else value
    if not rest:
        return None
    n = rest[0]
    return signature, rest[1 + n:], rest[1:1 + n].decode("latin-1")


class _Choices:
    """Reads choices from fuzz bytes (zeros once they run out, so every input is complete)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        self.pos += 1
        return self.data[self.pos - 1] if self.pos <= len(self.data) else 0

    def pick(self, options: Sequence[Any]) -> Any:
        return options[self.byte() % len(options)]

    def take(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out


_DATATYPES = [d.name for d in DataType]
_DIMS = [0, 1, 2, 3, 16, 64, -1, 10**20, 2**63, 2.0, True, "1", None, [1]]
_NUMBERS: list[Any] = [0, 1, -1, 7, 0.5, -0.0, 255, 256, -129, 65536, 2**31, 2**63 - 1, 2**63, 2**64 - 1,
            -(2**63), -(2**63) - 1, 1e38, 3.4028235e38, 3.5e38, 1e39, -1e39, 1e308, True, False,
            None, "x", "\u00e9", [], [1], {}]
_PARAMETERS: list[Any] = [None, {}, {"priority": 1}, {"timeout": 10}, {"binary_data_output": True},
               {"priority": -1}, {"priority": 1.0}, {"timeout": 2**64 - 1},
               {"binary_data_output": "yes"}, [], "x"]


def _value(choose: _Choices, spec: TensorSpec) -> Any:
    """One JSON element: usually right for the datatype, sometimes any value at all."""
    kind = choose.byte() % 4
    if kind == 0:
        return choose.pick(_NUMBERS)
    if spec.datatype is BYTES:
        return choose.take(choose.byte() % 4).decode("latin-1")
    if spec.datatype is DataType.BOOL:
        return bool(choose.byte() & 1)
    number = int.from_bytes(choose.take(2), "little", signed=True)
    return number if kind == 1 or spec.datatype.name.startswith(("INT", "UINT")) else number / 8


def _structured(signature: ModelSignature, choose: _Choices) -> tuple[bytes, int | str | None]:
    """A request built from choices: mostly the right names, datatypes, shapes and sizes, with
    one thing or another wrong."""
    names = [s.name for s in signature.inputs] + ["bogus"]
    count = len(signature.inputs)
    if choose.byte() % 4 == 0:
        count = choose.byte() % (count + 2)
    items: list[Any] = []
    tail = b""
    for i in range(count):
        spec = (signature.inputs[i % len(signature.inputs)] if signature.inputs
                else _spec("bogus", FP32, 1))
        item: dict[str, Any] = {"name": spec.name if choose.byte() % 8 else choose.pick(names)}
        item["datatype"] = spec.datatype.name if choose.byte() % 8 else choose.pick(_DATATYPES)
        shape: list[Any] = [1 + choose.byte() % 3] if signature.max_batch_size > 0 else []
        shape += [2 if d == -1 else d for d in spec.dims]
        if choose.byte() % 4 == 0:
            shape = [choose.pick(_DIMS) for _ in range(choose.byte() % 4)]
        item["shape"] = shape
        elements = math.prod(d for d in shape if type(d) is int and 0 <= d < 64)
        if choose.byte() % 2:  # binary
            if spec.datatype is BYTES:
                raw = b"".join(len(e).to_bytes(4, "little") + e
                               for e in (choose.take(choose.byte() % 3) for _ in range(elements)))
            else:
                raw = choose.take(elements * max(spec.datatype.itemsize, 1))
            size: Any = len(raw)
            if choose.byte() % 4 == 0:
                size = choose.pick([size + 1, size - 1, 0, -1, 2**64, 1.0, "8", None, True])
            item["parameters"] = {"binary_data_size": size}
            tail += raw[:max(0, len(raw) - choose.byte() % 2)]
        else:
            values = [_value(choose, spec) for _ in range(elements + choose.byte() % 3 // 2)]
            if values and choose.byte() % 4 == 0:  # nested one level per dimension
                values = [values[j:j + 2] for j in range(0, len(values), 2)]
            item["data"] = values
        if choose.byte() % 16 == 0:
            item["parameters"] = choose.pick(_PARAMETERS)
        items.append(item)
    doc: dict[str, Any] = {"inputs": items}
    if choose.byte() % 4 == 0:
        doc["parameters"] = choose.pick(_PARAMETERS)
    if choose.byte() % 4 == 0:
        doc["id"] = choose.pick(["r", 1, None, ""])
    if choose.byte() % 3 == 0:
        outputs = [s.name for s in signature.outputs] + ["nope"]
        doc["outputs"] = [
            {"name": choose.pick(outputs),
             "parameters": choose.pick([None, {}, {"binary_data": True}, {"binary_data": False},
                                        {"binary_data": 1}, {"classification": 1}, []])}
            for _ in range(choose.byte() % 3)
        ]
    # the standard library's writer: it writes integers beyond 64 bits, which orjson refuses
    header = json.dumps(doc, separators=(",", ":")).encode()
    mode = choose.byte() % 8
    if mode == 0 or not tail and mode < 6:
        return header + tail, None if not tail else len(header)
    return header + tail, choose.pick([len(header), len(header) + 1, str(len(header)),
                                       f" {len(header)}", len(header) - 1])


# --------------------------------------------------------------------------------------------
# the three decoders

def _no_fast_path(*args: object) -> None:
    return None


_CONFIGS: dict[str, tuple[Any, Callable[..., Any], Callable[..., Any]]] = {
    "compiled": (_compiled, _compiled.accept_binary_inputs, _compiled.accept_outputs),
    "general": (_compiled, _no_fast_path, _no_fast_path),
}


def _decode(config: str, body: bytes, header: int | str | None,
            signature: ModelSignature) -> codec.InferRequest | ServerError:
    saved = (codec._fast, codec._accept_binary_inputs, codec._accept_outputs)
    codec._fast, codec._accept_binary_inputs, codec._accept_outputs = _CONFIGS[config]
    try:
        return codec.decode_request(body, header, signature)
    except ServerError as exc:
        status = exc.http_status
        assert 400 <= status < 500 or status == 501, f"{config}: {status} {exc!r}"
        return exc
    finally:
        codec._fast, codec._accept_binary_inputs, codec._accept_outputs = saved


def _outcome(result: codec.InferRequest | ServerError) -> tuple[Any, ...]:
    if isinstance(result, ServerError):
        return ("error", type(result).__name__, str(result))
    return (
        "ok", result.id, result.parameters,
        [(shape, bytes(view)) for shape, view in result.inputs], result.outputs,
    )


# --------------------------------------------------------------------------------------------
# properties of a decoded request

def _address(buf: Any) -> int:
    return int(np.frombuffer(buf, dtype=np.uint8).ctypes.data)


def _fits(spec: TensorSpec, shape: tuple[int, ...], max_batch_size: int) -> int:
    """The element count of a shape that fits spec (checked here independently of the codec)."""
    dims = spec.dims
    if max_batch_size > 0:
        assert len(shape) == len(dims) + 1, (spec, shape)
        assert 1 <= shape[0] <= max_batch_size, (spec, shape)
        rest = shape[1:]
    else:
        assert len(shape) == len(dims), (spec, shape)
        rest = shape
    for got, want in zip(rest, dims, strict=True):
        assert type(got) is int and got >= 0 and want in (-1, got), (spec, shape)
    return math.prod(shape)


def _check_request(request: codec.InferRequest, body: bytes, header: int | str | None,
                   signature: ModelSignature) -> None:
    assert len(request.inputs) == len(signature.inputs)
    total = len(body)
    json_end = total if header is None else int(str(header).strip())
    binary: list[tuple[int, int]] = []
    for spec, (shape, view) in zip(signature.inputs, request.inputs, strict=True):
        assert type(view) is memoryview and view.format == "B" and view.ndim == 1, spec
        assert view.c_contiguous
        count = _fits(spec, shape, signature.max_batch_size)
        if spec.datatype is BYTES:
            assert _compiled.count_bytes_elements(view) == count, (spec, shape)
        else:
            assert view.nbytes == count * spec.datatype.itemsize, (spec, shape, view.nbytes)
        if view.obj is body:
            binary.append((_address(view) - _address(body), view.nbytes))
        elif view.nbytes and spec.datatype in (FP32, DataType.FP64):
            # JSON numbers are finite, and those beyond FP32's range are refused
            assert np.isfinite(np.frombuffer(view, dtype=spec.datatype.numpy)).all(), spec
    # the binary tensors tile the tail exactly: body[json_end:], in order, no overlap
    position = json_end
    for offset, size in sorted(binary):
        assert offset == position, (offset, position)
        position += size
    assert position == total, (position, total)
    if header is None:  # the whole body is JSON: no binary tensor has a byte (an empty one may)
        assert all(size == 0 for _, size in binary), "binary data without a header length"
    indices = [r.index for r in request.outputs]
    assert len(set(indices)) == len(indices)
    assert all(0 <= i < len(signature.outputs) for i in indices)


# --------------------------------------------------------------------------------------------
# the response to it

def _results(signature: ModelSignature, request: codec.InferRequest,
             body: bytes) -> list[tuple[tuple[int, ...], bytes]]:
    """One output per declared output, its bytes cut from the body (any bit pattern: NaN,
    infinity, invalid UTF-8), its shape from the first input's batch size."""
    batch = request.inputs[0][0][0] if signature.max_batch_size > 0 and request.inputs else 1
    source = body or b"\x00"
    out = []
    for i, spec in enumerate(signature.outputs):
        shape = ((batch,) if signature.max_batch_size > 0 else ()) + tuple(
            2 if d == -1 else d for d in spec.dims
        )
        count = math.prod(shape)
        if spec.datatype is BYTES:
            elements = [source[(i + k) % len(source):][:3] for k in range(count)]
            out.append((shape, _compiled.frame_bytes(elements)))
        else:
            size = count * spec.datatype.itemsize
            data = (source * (size // len(source) + 1))[i % len(source):][:size]
            out.append((shape, data.ljust(size, b"\x00")))
    return out


def _check_response(signature: ModelSignature, request: codec.InferRequest,
                    body: bytes) -> None:
    results = _results(signature, request, body)
    try:
        chunks, header_length = codec.encode_response(signature, "1", request, results)
    except InvalidRequest as exc:
        assert "not valid UTF-8" in str(exc), exc
        return
    header = bytes(chunks[0])
    doc = orjson.loads(header)  # strict JSON: no NaN or Infinity tokens
    assert (header_length is None) == (len(chunks) == 1)
    if header_length is not None:
        assert header_length == len(header)
    binary_chunks = iter(chunks[1:])
    assert len(doc["outputs"]) == len(request.outputs)
    for described, requested in zip(doc["outputs"], request.outputs, strict=True):
        spec = signature.outputs[requested.index]
        shape, data = results[requested.index]
        assert described["name"] == spec.name and tuple(described["shape"]) == shape
        if "data" in described:
            values = described["data"]
            assert "parameters" not in described
            if spec.datatype is BYTES:
                assert [v.encode() for v in values] == _compiled.unframe_bytes(data)
                continue
            expected = np.frombuffer(data, dtype=spec.datatype.numpy)
            assert len(values) == expected.size
            if expected.dtype.kind == "f":
                finite = np.isfinite(expected)
                # the documented choice: NaN and infinity go out as null
                assert all((v is None) == (not ok) for v, ok in zip(values, finite, strict=True))
        else:
            assert described["parameters"] == {"binary_data_size": len(data)}
            assert bytes(next(binary_chunks)) == data
    assert next(binary_chunks, None) is None


# --------------------------------------------------------------------------------------------

def check_input(data: bytes) -> None:
    """The property function (libFuzzer's TestOneInput)."""
    unpacked = unpack(data)
    if unpacked is None:
        return
    signature, body, header = unpacked
    outcomes = {config: _decode(config, body, header, signature) for config in _CONFIGS}
    reference = _outcome(outcomes["general"])
    for config, result in outcomes.items():
        assert _outcome(result) == reference, (
            f"{config} and the general path disagree:\n{_outcome(result)}\n{reference}"
        )
    result = outcomes["compiled"]
    if isinstance(result, codec.InferRequest):
        _check_request(result, body, header, signature)
        _check_response(signature, result, body)


if __name__ == "__main__":
    from _runner import run

    warnings.simplefilter("error")  # as under pytest: a numpy overflow warning is a finding
    run(check_input)
    sys.exit(0)
