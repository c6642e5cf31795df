"""The v2 codec for gRPC: a `ModelInferRequest` message in, an `InferRequest` out; a finished
inference's results in, the bytes of a `ModelInferResponse` out.

Sans-IO, like the HTTP codec beside it: no sockets, no event loop, no grpc. The request is any
object shaped like Triton's `inference.ModelInferRequest` message (protobuf's parsed message in
the server); the response is written as protobuf wire bytes directly, so an output goes from the
batch's output buffer into the answer with one copy and no message objects.

The same rules, in the same order and with the same messages as over HTTP (docs/protocol.md),
from the same functions (`codec.match_inputs`, `codec.check_tensor`, `_checks`): request
parameters; every declared input present once and no unknown one; per input, in the request's
order, datatype, shape, then its data (raw contents of the right size, or typed contents of the
right field and count); raw contents one per input, none left over; the BYTES framing of raw
BYTES inputs; requested outputs known and named once. What differs is only where the data
travels: `raw_input_contents[i]` belongs to `inputs[i]` (Triton's rule: raw contents for every
input or for none), and typed `contents` take the place of JSON `data`.

Outputs always go back as `raw_output_contents`, whatever `binary_data_output` or an output's
`binary_data` say (as Triton's gRPC endpoint does; those parameters are still checked).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pyserver.errors import InternalError, InvalidRequest
from pyserver.protocol import _checks
from pyserver.protocol._codec import frame_bytes
from pyserver.protocol.codec import (
    InferRequest,
    RequestedOutput,
    _InputPlan,
    _plan_for,
    check_bytes_framing,
    check_distinct_outputs,
    check_output_size,
    check_tensor,
    match_inputs,
    output_index,
)
from pyserver.types import DataType, ModelSignature

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "decode_infer_request",
    "encode_infer_response",
    "encode_stream_error",
    "encode_stream_response",
    "parameter_values",
]

# The typed-contents field of each datatype (FP16 and BF16 have none: raw contents only).
_CONTENTS_FIELD = {
    DataType.BOOL: "bool_contents",
    DataType.UINT8: "uint_contents",
    DataType.UINT16: "uint_contents",
    DataType.UINT32: "uint_contents",
    DataType.UINT64: "uint64_contents",
    DataType.INT8: "int_contents",
    DataType.INT16: "int_contents",
    DataType.INT32: "int_contents",
    DataType.INT64: "int64_contents",
    DataType.FP32: "fp32_contents",
    DataType.FP64: "fp64_contents",
    DataType.BYTES: "bytes_contents",
}
_FIELDS = tuple(dict.fromkeys(_CONTENTS_FIELD.values()))
# Fields wider than the datatype they carry: the values are range-checked.
_NARROW = frozenset(
    {DataType.UINT8, DataType.UINT16, DataType.INT8, DataType.INT16}
)


def parameter_values(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """A protobuf parameter map (InferParameter, ModelRepositoryParameter, ...: one oneof named
    `parameter_choice`) as plain values; None for a parameter with no value set."""
    out: dict[str, Any] = {}
    for key, value in parameters.items():
        which = value.WhichOneof("parameter_choice")
        out[key] = None if which is None else getattr(value, which)
    return out


# --------------------------------------------------------------------------------------------
# decode


def decode_infer_request(message: Any, signature: ModelSignature) -> InferRequest:
    """Parse and validate one `ModelInferRequest` for `signature`. Raw inputs come back as
    memoryviews of the message's `raw_input_contents` entries (no copy of their bytes); typed
    contents are packed into fresh buffers. Raises InvalidRequest (400 / INVALID_ARGUMENT) or
    Unsupported (501 / UNIMPLEMENTED) with a message for the client."""
    plan = _plan_for(signature)
    params = message.parameters
    parameters = _checks.request_parameters(parameter_values(params)) if params else {}

    tensors = message.inputs
    ordered = match_inputs(plan, ((t.name, (i, t)) for i, t in enumerate(tensors)))

    raw = message.raw_input_contents
    n_raw = len(raw)
    inputs: list[Any] = [None] * len(plan.inputs)
    framed: list[tuple[_InputPlan, memoryview, int, tuple[int, ...]]] = []
    for p, (i, t) in ordered:
        dims = list(t.shape)
        count = check_tensor(plan, p, t.datatype, dims)
        shape = tuple(dims)
        if t.parameters:
            _checks.input_parameters(p, parameter_values(t.parameters), "raw_input_contents")
        if n_raw:
            if t.HasField("contents"):
                raise InvalidRequest(
                    f"input {p.name!r} has both contents and raw_input_contents; give one of them"
                )
            if i >= n_raw:
                raise InvalidRequest(
                    f"input {p.name!r} is inputs[{i}], but raw_input_contents has only {n_raw} "
                    "entries; give one per input, in the order of inputs"
                )
            view = memoryview(raw[i])
            if p.is_bytes:
                framed.append((p, view, count, shape))
            elif view.nbytes != count * p.itemsize:
                raise _checks.size_error(
                    p, f"{view.nbytes} bytes in raw_input_contents[{i}]", dims, count
                )
            inputs[p.index] = (shape, view)
        elif t.HasField("contents") or count == 0:
            inputs[p.index] = (shape, _typed_tensor(p, t.contents, count, dims))
        else:
            raise InvalidRequest(f"input {p.name!r} has neither contents nor raw_input_contents")
    if n_raw > len(tensors):
        raise InvalidRequest(
            f"raw_input_contents has {n_raw} entries, but the request has {len(tensors)} "
            f"input(s): {n_raw - len(tensors)} left over"
        )
    for p, view, count, shape in framed:
        check_bytes_framing(p, view, count, shape)

    outputs = _requested_outputs(plan, message.outputs)
    return InferRequest(message.id or None, parameters, inputs, outputs)


def _typed_tensor(p: _InputPlan, contents: Any, count: int, shape: list[int]) -> memoryview:
    """The bytes of an input given in typed `contents` (flat, row-major)."""
    datatype = DataType[p.datatype]
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidRequest(
            f"input {p.name!r} is {p.datatype}, which travels only as raw data; "
            "send it in raw_input_contents"
        )
    for other in _FIELDS:
        if other != field and len(getattr(contents, other)):
            raise InvalidRequest(
                f"input {p.name!r} is {p.datatype}, so its contents belong in {field}, "
                f"not in {other}"
            )
    values = getattr(contents, field)
    if len(values) != count:
        raise _checks.count_error(p, len(values), count, shape)
    if p.is_bytes:
        return memoryview(frame_bytes(values))
    if datatype in _NARROW and count:
        wide = np.fromiter(values, dtype=np.int64, count=count)
        _checks.check_range(p, int(wide.min()), int(wide.max()))
        array = wide.astype(p.dtype)
    else:
        array = np.fromiter(values, dtype=p.dtype, count=count)
    return array.data.cast("B")


def _requested_outputs(plan: Any, tensors: Sequence[Any]) -> list[RequestedOutput]:
    if not tensors:
        return plan.all_outputs[True].copy()  # type: ignore[no-any-return]
    out: list[RequestedOutput] = []
    for t in tensors:
        index = output_index(plan, t.name)
        if t.parameters:
            _checks.output_binary(t.name, {"parameters": parameter_values(t.parameters)}, True)
        out.append(plan.requested[index][True])
    check_distinct_outputs(plan, out)
    return out


# --------------------------------------------------------------------------------------------
# encode: protobuf wire format, written by hand (field tags are (number << 3) | wire type 2)

_MODEL_NAME, _MODEL_VERSION, _ID = b"\x0a", b"\x12", b"\x1a"
_OUTPUTS, _RAW_OUTPUT = b"\x2a", b"\x32"
_TENSOR_NAME, _TENSOR_DATATYPE, _TENSOR_SHAPE = b"\x0a", b"\x12", b"\x1a"
_STREAM_ERROR, _STREAM_RESPONSE = b"\x0a", b"\x12"
_SMALL = [bytes([n]) for n in range(128)]


def _varint(value: int) -> bytes:
    if 0 <= value < 128:
        return _SMALL[value]
    value &= 0xFFFFFFFFFFFFFFFF  # an int64 below zero goes out as its 64-bit two's complement
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _text_field(tag: bytes, text: str) -> bytes:
    data = text.encode()
    return tag + _varint(len(data)) + data


def _packed(values: Iterable[int]) -> bytes:
    return b"".join(_varint(v) for v in values)


def encode_infer_response(
    signature: ModelSignature,
    model_version: str,
    request: InferRequest,
    results: Sequence[tuple[tuple[int, ...], Buffer]],
    stream: bool = False,
) -> bytes:
    """The serialized `ModelInferResponse` for `request`: the outputs it asked for, in its order,
    each described in `outputs` and its bytes in `raw_output_contents` (BYTES in the 4-byte
    length framing, as the model produced them). `results` holds one (shape, flat bytes) per
    signature output, in signature order. With `stream`, the `ModelStreamInferResponse` carrying
    it (what `encode_stream_response` makes of it), the outputs still copied only once."""
    plan = _plan_for(signature)
    if len(results) != len(plan.out_info):
        raise InternalError(
            f"model {signature.name!r} produced {len(results)} output(s), "
            f"but its signature declares {len(plan.out_info)}"
        )
    parts: list[Any] = [_text_field(_MODEL_NAME, signature.name)]
    parts.append(_text_field(_MODEL_VERSION, model_version))
    if request.id:
        parts.append(_text_field(_ID, request.id))
    raws: list[Any] = []
    raw_size = 0
    for requested in request.outputs:
        name, datatype, itemsize, _forced = plan.out_info[requested.index]
        shape, buf = results[requested.index]
        view = buf if type(buf) is memoryview else memoryview(buf)
        nbytes = view.nbytes
        if itemsize:
            check_output_size(name, datatype, itemsize, shape, nbytes)
        dims = _packed(shape)
        tensor = (
            _text_field(_TENSOR_NAME, name)
            + _text_field(_TENSOR_DATATYPE, datatype)
            + _TENSOR_SHAPE + _varint(len(dims)) + dims
        )
        parts += (_OUTPUTS, _varint(len(tensor)), tensor)
        length = _varint(nbytes)
        raws += (_RAW_OUTPUT, length, view)
        raw_size += 1 + len(length) + nbytes
    if stream:
        parts[:0] = (_STREAM_RESPONSE, _varint(sum(map(len, parts)) + raw_size))
    return b"".join(parts + raws)


def encode_stream_response(infer_response: bytes) -> bytes:
    """A `ModelStreamInferResponse` carrying a serialized `ModelInferResponse`."""
    return _STREAM_RESPONSE + _varint(len(infer_response)) + infer_response


def encode_stream_error(
    message: str, model_name: str, model_version: str, request_id: str
) -> bytes:
    """A `ModelStreamInferResponse` for a request that failed: `error_message`, and the request's
    model, version and id in `infer_response` so that the client can tell which one it was."""
    header = _text_field(_MODEL_NAME, model_name) + _text_field(_MODEL_VERSION, model_version)
    if request_id:
        header += _text_field(_ID, request_id)
    return _text_field(_STREAM_ERROR, message) + encode_stream_response(header)
