"""The request checks that are not on the hot path's straight line, and the wording of every
validation message: the codec calls these to check the JSON's structure and, once a fast check
has said no, to say exactly why (naming the tensor, what the model expects and what was sent).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import numpy as np
import orjson

from pyserver.errors import InvalidRequest, Unsupported
from pyserver.types import ModelSignature

if TYPE_CHECKING:
    from pyserver.protocol.codec import _InputPlan


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


_SHOWN = 200  # characters of a client's value quoted back in a message, at most


def _shortened(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _json_text(value: object) -> str:
    """A client's value as JSON text for a message: shortened, and never an error of its own
    (orjson refuses to write data nested more than 255 levels deep, which a request can be)."""
    try:
        return _shortened(orjson.dumps(value).decode())
    except orjson.JSONEncodeError:
        return f"{json_type(value)} nested too deeply to show"


def _shape_text(shape: list[Any]) -> str:
    """A request's shape as the messages show it ([1, 3.0]); containers inside it (a hostile
    shape can nest a thousand levels deep) are written as JSON, which cannot recurse forever."""
    if any(type(d) is list or type(d) is dict for d in shape):
        return _json_text(shape)
    return _shortened(str(shape))


def request_parameters(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise InvalidRequest(f"request 'parameters' must be an object, got {json_type(value)}")
    for key in ("priority", "timeout"):
        if key not in value:
            continue
        number = value[key]
        if type(number) is not int or number < 0:
            raise InvalidRequest(
                f"request parameter {key!r} must be a non-negative integer, got "
                f"{_json_text(number)}"
            )
    flag = value.get("binary_data_output")
    if flag is not None and type(flag) is not bool:
        raise InvalidRequest(
            f"request parameter 'binary_data_output' must be true or false, got {_json_text(flag)}"
        )
    return value


def input_structure(position: int, item: object) -> str:
    """Check one `inputs` item has the fields every input needs; return its name."""
    if type(item) is not dict:
        raise InvalidRequest(f"inputs[{position}] must be an object, got {json_type(item)}")
    name = item.get("name")
    if type(name) is not str:
        raise InvalidRequest(f"inputs[{position}] needs a string 'name'")
    if type(item.get("shape")) is not list:
        raise InvalidRequest(f"input {name!r} needs a 'shape' list")
    if type(item.get("datatype")) is not str:
        raise InvalidRequest(f"input {name!r} needs a string 'datatype'")
    return name


def input_parameters(p: _InputPlan, params: dict[str, Any], carrier: str = "the body") -> None:
    """What an input's parameters may not ask for, whatever the transport (`carrier`: where the
    data should travel instead)."""
    if "shared_memory_region" in params:
        raise Unsupported(
            f"input {p.name!r} uses shared memory, which this server does not support; "
            f"send the data in {carrier}"
        )


def input_source(p: _InputPlan, item: dict[str, Any]) -> tuple[int | None, Any]:
    """(binary_data_size, None) for a binary input, (None, data) for a JSON one."""
    params = item.get("parameters")
    size = None
    if params is not None:
        if type(params) is not dict:
            raise InvalidRequest(
                f"input {p.name!r}: 'parameters' must be an object, got {json_type(params)}"
            )
        input_parameters(p, params)
        size = params.get("binary_data_size")
    data = item.get("data")
    if size is not None:
        if type(size) is not int or size < 0:
            raise InvalidRequest(
                f"input {p.name!r}: binary_data_size must be a non-negative integer, "
                f"got {_json_text(size)}"
            )
        if data is not None:
            raise InvalidRequest(
                f"input {p.name!r} has both 'data' and binary_data_size; give one of them"
            )
        return size, None
    if data is None:
        raise InvalidRequest(f"input {p.name!r} has neither 'data' nor binary_data_size")
    return None, data


def shape_error(p: _InputPlan, shape: list[Any], signature: ModelSignature) -> InvalidRequest:
    """Word why `shape` does not fit input `p` (the fast check only said that it does not)."""
    mbs = signature.max_batch_size
    head = f"input {p.name!r} has shape {_shape_text(shape)}"
    if any(type(d) is not int or d < 0 for d in shape):
        return InvalidRequest(f"{head}; dimensions must be non-negative integers")
    declared = [-1, *p.dims] if mbs > 0 else list(p.dims)
    if len(shape) != len(declared):
        batch = f" (batch dimension first, max_batch_size {mbs})" if mbs > 0 else ""
        return InvalidRequest(
            f"{head} of rank {len(shape)}, but model {signature.name!r} expects rank "
            f"{len(declared)}: {declared}{batch}"
        )
    if mbs > 0 and not 1 <= shape[0] <= mbs:
        return InvalidRequest(
            f"{head}: batch size {shape[0]} is outside 1..{mbs} "
            f"(model {signature.name!r} has max_batch_size {mbs})"
        )
    for axis, (got, want) in enumerate(zip(shape, declared, strict=True)):
        if want != -1 and got != want:
            return InvalidRequest(
                f"{head}, but model {signature.name!r} expects {declared}: dimension {axis} "
                f"is {got}, expected {want}"
            )
    return InvalidRequest(f"{head}, which does not fit {declared}")  # unreachable in practice


def size_error(p: _InputPlan, have: str, shape: list[Any], count: int) -> InvalidRequest:
    """A fixed-size input whose bytes (`have`: "binary_data_size N", or the gRPC wording) do
    not match its shape."""
    return InvalidRequest(
        f"input {p.name!r} has {have}, but shape {shape} of {p.datatype} needs "
        f"{count} x {p.itemsize} = {count * p.itemsize} bytes"
    )


def tail_error(
    binary: list[tuple[_InputPlan, int]], sizes: list[int], tail: int, no_header: bool
) -> InvalidRequest:
    claimed = sum(sizes)
    if no_header:
        return InvalidRequest(
            f"input {binary[0][0].name!r} has binary_data_size {sizes[0]}, but the request has "
            "no Inference-Header-Content-Length, so its whole body is JSON and carries no "
            "binary data"
        )
    if claimed < tail:
        return InvalidRequest(
            f"the body has {tail} bytes of binary data after the JSON header, but the inputs' "
            f"binary_data_size add up to {claimed}: {tail - claimed} byte(s) left over"
        )
    start = 0
    for (p, _count), size in zip(binary, sizes, strict=True):
        if start + size > tail:
            return InvalidRequest(
                f"input {p.name!r} needs bytes {start}..{start + size} of the binary data, but "
                f"the body has only {tail} bytes after the JSON header (the inputs' "
                f"binary_data_size add up to {claimed})"
            )
        start += size
    return InvalidRequest("the binary data does not match the inputs' binary_data_size")


def kind_error(p: _InputPlan) -> InvalidRequest:
    wanted = {"b": "true/false values", "iu": "integers", "iuf": "numbers"}[p.kinds]
    return InvalidRequest(f"input {p.name!r} is {p.datatype}, so its 'data' must hold {wanted}")


def check_range(p: _InputPlan, low: int, high: int) -> None:
    info = np.iinfo(cast("np.dtype[np.integer[Any]]", p.dtype))
    if low < info.min or high > info.max:
        raise InvalidRequest(
            f"input {p.name!r}: value {low if low < info.min else high} is out of range "
            f"for {p.datatype} ({info.min}..{info.max})"
        )


def float_range_error(p: _InputPlan, value: float) -> InvalidRequest:
    limit = float(np.finfo(cast("np.dtype[np.floating[Any]]", p.dtype)).max)
    return InvalidRequest(
        f"input {p.name!r}: value {value!r} is out of range for {p.datatype} "
        f"({-limit:.8g}..{limit:.8g})"
    )


def depth_error(p: _InputPlan, limit: int) -> InvalidRequest:
    return InvalidRequest(
        f"input {p.name!r}: 'data' is nested more than {limit} levels deep "
        "(give it flat, or nested one level per dimension)"
    )


def count_error(p: _InputPlan, got: int, count: int, shape: list[int]) -> InvalidRequest:
    return InvalidRequest(
        f"input {p.name!r} has {got} data element(s), but its shape {shape} needs {count}"
    )


def output_binary(name: str, item: dict[str, Any], default: bool) -> bool:
    params = item.get("parameters")
    if params is None:
        return default
    if type(params) is not dict:
        raise InvalidRequest(
            f"output {name!r}: 'parameters' must be an object, got {json_type(params)}"
        )
    if "shared_memory_region" in params:
        raise Unsupported(f"output {name!r} asks for shared memory, which is not supported")
    if params.get("classification"):
        raise Unsupported(f"output {name!r} asks for classification, which is not supported")
    flag = params.get("binary_data")
    if flag is None:
        return default
    if type(flag) is not bool:
        raise InvalidRequest(
            f"output {name!r}: parameter 'binary_data' must be true or false, got "
            f"{_json_text(flag)}"
        )
    return flag
