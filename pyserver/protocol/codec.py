"""The v2 inference codec: request bytes in, `InferRequest` out; results in, response chunks out.

Sans-IO: no sockets, no event loop. The HTTP layer reads the body once and hands it here with the
`Inference-Header-Content-Length` value; binary input tensors come back as zero-copy memoryview
slices of that body, and binary outputs go back out as the caller's own buffers.

Validation follows docs/protocol.md's order, one message per failure, each naming the tensor, what
the model expects and what the request gave:

1. the header length parses and lies within the body;
2. the JSON parses and is an object; `id`, `parameters` (priority, timeout, binary_data_output)
   and the `inputs` list with name/shape/datatype in every item are well formed;
3. every input the model declares is present once, and no unknown or duplicate input is given;
4. per input, in the request's order: datatype, shape, byte size (binary_data_size equals
   elements x itemsize; JSON data holds exactly the shape's element count, nested at most
   MAX_DATA_DEPTH levels, each value in the datatype's range: integers exactly, FP32 numbers
   below the magnitude that would round to infinity);
5. the binary sizes add up exactly to the body's tail; then the BYTES framing of binary BYTES
   inputs (it can only be read once the tail is cut);
6. requested outputs name known outputs, once each.

Two paths, one answer. The hot path (`accept_binary_inputs`, `accept_outputs` in the compiled
`_codec`) takes the common request, every input binary and
everything in order, in one pass, and returns None at the first thing out of the ordinary. The
general path below then decodes the request (JSON data included) and words the first error. The
hot path accepts nothing the general path would refuse and returns what it would return; the
fast-path tests check that on a corpus of mutated requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import orjson

from pyserver.errors import InternalError, InvalidRequest
from pyserver.protocol import _checks

# The compiled hot path and the primitives both paths share (shape arithmetic, slicing the
# binary tail, BYTES framing); setup.py always builds it.
from pyserver.protocol import _codec as _fast
from pyserver.types import DataType, ModelSignature, TensorSpec

if TYPE_CHECKING:
    from typing_extensions import Buffer

# Module globals so a test can turn the hot path off and exercise the general path alone.
_accept_binary_inputs = _fast.accept_binary_inputs
_accept_outputs = _fast.accept_outputs

__all__ = [
    "InferRequest",
    "RequestedOutput",
    "decode_request",
    "encode_error",
    "encode_response",
    "parse_header_length",
]

_T = TypeVar("_T")
_NUMPY_JSON = orjson.OPT_SERIALIZE_NUMPY
_BINARY_ONLY = (DataType.FP16, DataType.BF16)

MAX_DATA_DEPTH = 32
"""How deeply an input's JSON `data` may nest: one level per dimension, within numpy's limit on
dimensions (32 before numpy 2). Deeper data is refused with a 400 before anything walks it
recursively."""

# The smallest magnitude that rounds to infinity in FP32 (halfway between its largest finite
# value, 2**128 - 2**104, and 2**128): JSON numbers from here on do not fit an FP32 input.
# (FP64 needs no check: orjson refuses numbers that do not fit a double.)
_FP32_OVERFLOW = float(2**128 - 2**103)


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """One output to answer with: its index into signature.outputs and whether it goes back as
    binary tensor data. Frozen, so the codec hands out shared instances."""

    index: int
    binary: bool


@dataclass(slots=True)
class InferRequest:
    """A decoded, validated inference request.

    inputs: one (shape including any batch dimension, bytes) per signature input, in the
    signature's order. Binary inputs are memoryview slices of the request body (keep the body
    alive as long as they are used); JSON inputs are views of freshly built arrays. Every view is
    flat, C-contiguous, format "B". BYTES tensors are in the length-prefixed wire framing.
    outputs: the outputs to answer with, in the order to answer (the request's order, or every
    output in signature order when the request names none).
    """

    id: str | None
    parameters: dict[str, Any]
    inputs: list[tuple[tuple[int, ...], memoryview]]
    outputs: list[RequestedOutput]


class _InputPlan:
    """What decode needs to know of one declared input, worked out once per signature."""

    __slots__ = (
        "datatype",
        "dims",
        "dtype",
        "float_overflow",
        "index",
        "is_bytes",
        "itemsize",
        "json_ok",
        "kinds",
        "name",
    )

    def __init__(self, index: int, spec: TensorSpec) -> None:
        dt = spec.datatype
        self.index = index
        self.name = spec.name
        self.datatype = dt.name
        self.dims = tuple(spec.dims)
        self.itemsize = dt.itemsize
        self.is_bytes = dt is DataType.BYTES
        self.json_ok = dt not in _BINARY_ONLY
        self.dtype = dt.numpy
        self.float_overflow = _FP32_OVERFLOW if dt is DataType.FP32 else None
        # numpy kinds of an inferred JSON array that convert to this datatype without guessing
        if dt is DataType.BOOL:
            self.kinds = "b"
        elif self.dtype is not None and self.dtype.kind in "iu":
            self.kinds = "iu"
        else:
            self.kinds = "iuf"


class _Plan:
    """A signature's lookup tables; cached by identity so each request pays two dict lookups."""

    __slots__ = (
        "all_outputs",
        "by_name",
        "forced_binary",
        "input_names",
        "inputs",
        "out_info",
        "outputs",
        "requested",
        "signature",
        "table",
    )

    def __init__(self, signature: ModelSignature) -> None:
        self.signature = signature
        self.inputs = tuple(_InputPlan(i, s) for i, s in enumerate(signature.inputs))
        self.by_name = {p.name: p for p in self.inputs}
        # the fast path's view of the same: name -> (index, datatype, dims, itemsize or 0)
        self.table = {p.name: (p.index, p.datatype, p.dims, p.itemsize) for p in self.inputs}
        self.input_names = ", ".join(repr(p.name) for p in self.inputs) or "none"
        self.outputs = {s.name: i for i, s in enumerate(signature.outputs)}
        self.forced_binary = tuple(s.datatype in _BINARY_ONLY for s in signature.outputs)
        # out_info[i]: (name, datatype name, itemsize or 0 for BYTES, always binary) for encode
        self.out_info = tuple(
            (s.name, s.datatype.name, s.datatype.itemsize, forced)
            for s, forced in zip(signature.outputs, self.forced_binary, strict=True)
        )
        # requested[i][binary]: shared RequestedOutput instances (FP16/BF16 are always binary)
        self.requested = tuple(
            (RequestedOutput(i, forced), RequestedOutput(i, True))
            for i, forced in enumerate(self.forced_binary)
        )
        # all_outputs[binary_data_output]: the answer when the request names no outputs
        self.all_outputs = ([r[0] for r in self.requested], [r[1] for r in self.requested])


_PLANS: dict[int, _Plan] = {}


def _plan_for(signature: ModelSignature) -> _Plan:
    # Keyed by id(); the plan holds the signature, so the id cannot be reused while cached.
    plan = _PLANS.get(id(signature))
    if plan is None or plan.signature is not signature:
        if len(_PLANS) >= 1024:  # models come and go; never grow without bound
            _PLANS.clear()
        plan = _PLANS[id(signature)] = _Plan(signature)
    return plan


# --------------------------------------------------------------------------------------------
# decode


def parse_header_length(value: int | str | bytes | None, body_size: int) -> int | None:
    """The JSON header's length from an `Inference-Header-Content-Length` value (the raw header
    text or an int), checked to lie within a body of `body_size` bytes; None when absent."""
    if type(value) is int and 0 <= value <= body_size:
        return value  # the common case, first
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()):
            raise InvalidRequest(
                f"Inference-Header-Content-Length must be a non-negative integer, got {value!r}"
            )
        length = int(text)
    elif type(value) is int:
        length = value
        if length < 0:
            raise InvalidRequest(
                f"Inference-Header-Content-Length must be a non-negative integer, got {length}"
            )
    else:
        raise InvalidRequest(
            f"Inference-Header-Content-Length must be a non-negative integer, got {value!r}"
        )
    if length > body_size:
        raise InvalidRequest(
            f"Inference-Header-Content-Length is {length}, but the body has only {body_size} bytes"
        )
    return length


def decode_request(
    body: bytes | bytearray,
    header_length: int | str | bytes | None,
    signature: ModelSignature,
) -> InferRequest:
    """Parse and validate one inference request for `signature`.

    `body` is the whole (already decompressed) request body; `header_length` the
    Inference-Header-Content-Length value, or None when the request had none (then the whole body
    is JSON). Raises InvalidRequest (400) or Unsupported (501) with a message for the client.
    """
    plan = _plan_for(signature)
    total = len(body)
    if type(header_length) is int and 0 <= header_length <= total:
        json_end: int = header_length  # the common case, without a call
    else:
        parsed = parse_header_length(header_length, total)
        json_end = total if parsed is None else parsed
    try:
        doc = orjson.loads(body if json_end == total else memoryview(body)[:json_end])
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request's JSON does not parse: {exc}") from None
    if type(doc) is not dict:
        raise InvalidRequest(f"the request's JSON must be an object, got {_checks.json_type(doc)}")

    request_id = doc.get("id")
    if request_id is not None and type(request_id) is not str:
        raise InvalidRequest(f"request 'id' must be a string, got {_checks.json_type(request_id)}")
    parameters = _checks.request_parameters(doc.get("parameters"))

    items = doc.get("inputs")
    inputs = _accept_binary_inputs(items, plan.table, signature.max_batch_size, body, json_end)
    if inputs is None:  # JSON data, or something to refuse: the general path says what
        inputs = _decode_inputs(plan, items, body, json_end, header_length is None)
    outputs = _requested_outputs(plan, doc.get("outputs"), parameters)
    return InferRequest(request_id, parameters, inputs, outputs)


def match_inputs(plan: _Plan, named: Iterable[tuple[str, _T]]) -> list[tuple[_InputPlan, _T]]:
    """Validation step 3, for every transport: each (name, item) of the request in order names
    a declared input, none twice, and every declared input is given. Returns (input plan, item)
    in the request's order."""
    signature = plan.signature
    found = [False] * len(plan.inputs)
    ordered: list[tuple[_InputPlan, _T]] = []
    for name, item in named:
        p = plan.by_name.get(name)
        if p is None:
            raise InvalidRequest(
                f"unknown input {name!r} for model {signature.name!r}; it takes {plan.input_names}"
            )
        if found[p.index]:
            raise InvalidRequest(f"input {p.name!r} is given more than once")
        found[p.index] = True
        ordered.append((p, item))
    if len(ordered) != len(plan.inputs):
        missing = ", ".join(repr(p.name) for p in plan.inputs if not found[p.index])
        raise InvalidRequest(
            f"missing input(s) {missing} for model {signature.name!r}; it takes {plan.input_names}"
        )
    return ordered


def check_tensor(plan: _Plan, p: _InputPlan, datatype: object, shape: list[Any]) -> int:
    """Validation step 4's first two checks, for every transport: the input's datatype, then its
    shape (batch dimension within max_batch_size). Returns the element count."""
    signature = plan.signature
    if datatype != p.datatype:
        raise InvalidRequest(
            f"input {p.name!r} has datatype {datatype}, "
            f"but model {signature.name!r} expects {p.datatype}"
        )
    count: int = _fast.shape_elements(shape, p.dims, signature.max_batch_size)
    if count < 0:
        raise _checks.shape_error(p, shape, signature)
    return count


def check_bytes_framing(p: _InputPlan, view: memoryview, count: int, shape: Sequence[int]) -> None:
    """A binary BYTES input holds exactly `count` length-prefixed elements, to its last byte."""
    try:
        _fast.check_bytes_framing(view, count)
    except ValueError as exc:
        raise InvalidRequest(f"input {p.name!r} (BYTES, shape {list(shape)}): {exc}") from None


def _decode_inputs(
    plan: _Plan, items: object, body: bytes | bytearray, json_end: int, no_header: bool
) -> list[tuple[tuple[int, ...], memoryview]]:
    """Decode and check every input, the general way: JSON data as well as binary, and the
    exact message for the first thing wrong."""
    total = len(body)
    # Pass 1: structure and presence, so that a missing input is reported before any detail of
    # another input (docs/protocol.md's order). A generator, so that each item's structure is
    # checked just before its name is looked up.
    if type(items) is not list:
        raise InvalidRequest(
            "the request's JSON must have an 'inputs' list, got "
            + ("nothing" if items is None else _checks.json_type(items))
        )
    ordered = match_inputs(
        plan, ((_checks.input_structure(pos, item), item) for pos, item in enumerate(items))
    )

    # Pass 2: each input's datatype, shape and size, in the request's order (the order in which
    # binary inputs take their bytes from the tail).
    shapes: list[tuple[int, ...]] = [()] * len(plan.inputs)
    buffers: list[memoryview | None] = [None] * len(plan.inputs)
    binary: list[tuple[_InputPlan, int]] = []
    sizes: list[int] = []
    for p, item in ordered:
        shape = item["shape"]
        count = check_tensor(plan, p, item["datatype"], shape)
        shapes[p.index] = tuple(shape)
        size, data = _checks.input_source(p, item)
        if size is not None:
            if not p.is_bytes and size != count * p.itemsize:
                raise _checks.size_error(p, f"binary_data_size {size}", shape, count)
            binary.append((p, count))
            sizes.append(size)
        else:
            buffers[p.index] = _json_tensor(p, data, count, shape)

    if sizes:
        try:
            views = _fast.slice_tail(body, json_end, sizes)
        except ValueError:
            raise _checks.tail_error(binary, sizes, total - json_end, no_header) from None
        for (p, count), view in zip(binary, views, strict=True):
            if p.is_bytes:
                check_bytes_framing(p, view, count, shapes[p.index])
            buffers[p.index] = view
    elif json_end != total:
        raise InvalidRequest(
            f"the body has {total - json_end} byte(s) after the JSON header, "
            "but no input has a binary_data_size"
        )

    # every slot is filled: each declared input was present and got a JSON or a binary buffer
    return cast("list[tuple[tuple[int, ...], memoryview]]", list(zip(shapes, buffers)))


def _json_tensor(p: _InputPlan, data: Any, count: int, shape: list[int]) -> memoryview:
    """The bytes of an input given as JSON `data` (flat or nested, row-major)."""
    if type(data) is not list:
        raise InvalidRequest(
            f"input {p.name!r}: 'data' must be a list, got {_checks.json_type(data)}"
        )
    if p.is_bytes:
        items = _flatten_strings(p, data)
        if items is None:
            raise InvalidRequest(
                f"input {p.name!r} is BYTES, so its 'data' must hold only strings (or lists "
                "of them); send raw bytes as binary data"
            )
        if len(items) != count:
            raise _checks.count_error(p, len(items), count, shape)
        return memoryview(_fast.frame_bytes(items))
    if not p.json_ok or p.dtype is None:
        raise InvalidRequest(
            f"input {p.name!r} is {p.datatype}, which travels only as binary data; "
            "send it with a binary_data_size"
        )
    # numpy builds arrays recursively: refuse deep data first. Following the first element
    # down is enough (a regular array is as deep everywhere; numpy refuses ragged data).
    depth = 0
    first: Any = data
    while type(first) is list:
        depth += 1
        if depth > MAX_DATA_DEPTH:
            raise _checks.depth_error(p, MAX_DATA_DEPTH)
        first = first[0] if first else None
    try:
        array = np.array(data)
    except (ValueError, TypeError, OverflowError):
        raise InvalidRequest(
            f"input {p.name!r}: 'data' is not a regular nested list of numbers"
        ) from None
    if array.size != count:
        raise _checks.count_error(p, array.size, count, shape)
    if array.size and p.kinds == "iu" and array.dtype.kind in "fO":
        # Mixed int64/uint64-sized Python ints infer as float64 (or object) and would lose
        # precision: check them one by one instead (rare, so the slow way is fine).
        values = np.array(data, dtype=object).ravel().tolist()
        if any(type(v) is not int for v in values):
            raise _checks.kind_error(p)
        _checks.check_range(p, min(values), max(values))
        array = np.array(values, dtype=p.dtype)
    elif array.size:
        if array.dtype.kind not in p.kinds:
            raise _checks.kind_error(p)
        if p.kinds == "iu":
            _checks.check_range(p, int(array.min()), int(array.max()))
        elif p.float_overflow is not None and array.dtype.kind == "f":
            # A double beyond FP32's range would become infinity (and go back out as null).
            low, high = float(array.min()), float(array.max())
            if high >= p.float_overflow or low <= -p.float_overflow:
                raise _checks.float_range_error(p, high if high >= -low else low)
    flat = np.ascontiguousarray(array.reshape(-1), dtype=p.dtype)
    return flat.data.cast("B")


def _flatten_strings(p: _InputPlan, data: list[Any]) -> list[str] | None:
    """The strings of BYTES `data` in row-major order, or None when it holds anything else.
    Iterative, with a depth limit: a request's nesting must not reach Python's recursion limit."""
    out: list[str] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if type(value) is str:
                out.append(value)
            elif type(value) is list:
                if len(stack) >= MAX_DATA_DEPTH:
                    raise _checks.depth_error(p, MAX_DATA_DEPTH)
                stack.append(iter(value))
                break
            else:
                return None
        else:
            stack.pop()
    return out


def _requested_outputs(
    plan: _Plan, items: object, parameters: dict[str, Any]
) -> list[RequestedOutput]:
    default = parameters.get("binary_data_output") is True
    if items is None or items == []:
        return plan.all_outputs[default].copy()
    fast = _accept_outputs(items, plan.outputs, plan.requested, default)
    if fast is not None:
        return fast
    if type(items) is not list:
        raise InvalidRequest(f"request 'outputs' must be a list, got {_checks.json_type(items)}")
    out: list[RequestedOutput] = []
    for position, item in enumerate(items):
        if type(item) is not dict:
            raise InvalidRequest(
                f"outputs[{position}] must be an object, got {_checks.json_type(item)}"
            )
        name = item.get("name")
        if type(name) is not str:
            raise InvalidRequest(f"outputs[{position}] needs a string 'name'")
        index = output_index(plan, name)
        out.append(plan.requested[index][_checks.output_binary(name, item, default)])
    check_distinct_outputs(plan, out)
    return out


def output_index(plan: _Plan, name: str) -> int:
    """The index of the output a request names, for every transport."""
    index = plan.outputs.get(name)
    if index is None:
        known = ", ".join(repr(n) for n in plan.outputs) or "none"
        raise InvalidRequest(
            f"unknown output {name!r} requested from model {plan.signature.name!r}; "
            f"it has {known}"
        )
    return index


def check_distinct_outputs(plan: _Plan, out: list[RequestedOutput]) -> None:
    """No output is requested twice."""
    if len(out) > 1 and len({r.index for r in out}) != len(out):
        seen: set[int] = set()
        for r in out:
            if r.index in seen:
                name = plan.signature.outputs[r.index].name
                raise InvalidRequest(f"output {name!r} is requested more than once")
            seen.add(r.index)


# --------------------------------------------------------------------------------------------
# encode


def encode_response(
    signature: ModelSignature,
    model_version: str,
    request: InferRequest,
    results: Sequence[tuple[tuple[int, ...], Buffer]],
) -> tuple[list[Buffer], int | None]:
    """The response to `request`: (chunks to write in order, Inference-Header-Content-Length).

    `results` holds one (shape, flat bytes) per signature output, in signature order. The first
    chunk is the JSON header; each binary output follows as the caller's own buffer, uncopied.
    The header length is None when every output went back as JSON (Content-Type
    application/json); otherwise the response is application/octet-stream.

    JSON has no NaN or infinity, and a model may produce them: in JSON outputs they are written
    as null (orjson's choice, kept on purpose), so the header is always valid JSON. A client
    that needs them exactly asks for the output as binary data, which keeps every bit.
    """
    plan = _plan_for(signature)
    if len(results) != len(plan.out_info):
        raise InternalError(
            f"model {signature.name!r} produced {len(results)} output(s), "
            f"but its signature declares {len(plan.out_info)}"
        )
    chunks: list[Buffer] = [b""]
    described: list[dict[str, Any]] = []
    for requested in request.outputs:
        index = requested.index
        name, datatype, itemsize, forced = plan.out_info[index]
        shape, buf = results[index]
        nbytes = buf.nbytes if type(buf) is memoryview else memoryview(buf).nbytes
        if itemsize:
            check_output_size(name, datatype, itemsize, shape, nbytes)
        tensor: dict[str, Any]
        if requested.binary or forced:
            tensor = {"name": name, "datatype": datatype, "shape": shape}
            tensor["parameters"] = {"binary_data_size": nbytes}
            chunks.append(buf)
        else:
            tensor = {"name": name, "datatype": datatype, "shape": shape}
            tensor["data"] = _json_data(signature.outputs[index], shape, memoryview(buf))
        described.append(tensor)
    doc: dict[str, Any] = {"model_name": signature.name, "model_version": model_version}
    if request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = described
    header = orjson.dumps(doc, option=_NUMPY_JSON)
    if len(chunks) == 1:
        return [header], None
    chunks[0] = header
    return chunks, len(header)


def check_output_size(
    name: str, datatype: str, itemsize: int, shape: Sequence[int], nbytes: int
) -> None:
    """A fixed-size output holds exactly its shape's bytes (a backend bug otherwise)."""
    count = 1
    for dim in shape:
        count *= dim
    if count * itemsize != nbytes:
        raise InternalError(
            f"output {name!r} of shape {list(shape)} ({datatype}) needs "
            f"{count * itemsize} bytes, but {nbytes} were produced"
        )


def _json_data(spec: TensorSpec, shape: tuple[int, ...], view: memoryview) -> Any:
    """An output's elements as a flat row-major JSON list (numpy arrays serialize in orjson)."""
    if spec.datatype is DataType.BYTES:
        try:
            elements = _fast.unframe_bytes(view)
        except ValueError as exc:
            raise InternalError(f"output {spec.name!r} is malformed BYTES data: {exc}") from None
        count = 1
        for dim in shape:
            count *= dim
        if len(elements) != count:
            raise InternalError(
                f"output {spec.name!r} of shape {list(shape)} holds {len(elements)} BYTES "
                f"element(s), expected {count}"
            )
        try:
            return [e.decode() for e in elements]
        except UnicodeDecodeError:
            raise InvalidRequest(
                f"output {spec.name!r} holds BYTES that are not valid UTF-8, so it cannot be "
                "returned as JSON; request it with binary_data: true"
            ) from None
    return np.frombuffer(view, dtype=spec.datatype.numpy)


def encode_error(message: str) -> bytes:
    """The body of an error response: {"error": message}."""
    return orjson.dumps({"error": message})
