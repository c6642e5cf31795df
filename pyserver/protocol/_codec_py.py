"""Pure-Python twin of the compiled codec helpers (`_codec.pyx`): same functions, same results,
same messages (the byte walking and slicing, and the hot path of decoding). `codec` uses this
module when the extension is not built; the fast-path tests run every case against both.

Every function here works on raw bytes and raises ValueError with a message that reads as the
tail of a sentence about one tensor ("BYTES element 2 at byte 10 ..."); the codec adds which
input it was and turns it into the right `pyserver.errors` class.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Buffer

_LENGTH = struct.Struct("<I")
_unpack_length = _LENGTH.unpack_from
_pack_length = _LENGTH.pack

__all__ = [
    "IMPLEMENTATION",
    "accept_binary_inputs",
    "accept_outputs",
    "check_bytes_framing",
    "count_bytes_elements",
    "frame_bytes",
    "shape_elements",
    "slice_tail",
    "unframe_bytes",
]

IMPLEMENTATION = "python"


def _as_bytes_view(buf: Buffer) -> memoryview:
    """A flat unsigned-byte view of any C-contiguous buffer (no copy)."""
    view = memoryview(buf)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def _walk(view: memoryview, keep: list[bytes] | None) -> int:
    """Walk the 4-byte little-endian length framing of a BYTES tensor; return the element count,
    appending each element to `keep` when given. Raise ValueError when a prefix or an element
    runs past the end."""
    end = len(view)
    pos = 0
    count = 0
    while pos < end:
        left = end - pos
        if left < 4:
            raise ValueError(
                f"BYTES element {count} at byte {pos} has a truncated length prefix: "
                f"{left} byte(s) left, 4 needed"
            )
        (length,) = _unpack_length(view, pos)
        pos += 4
        if length > end - pos:
            raise ValueError(
                f"BYTES element {count} at byte {pos - 4} declares {length} bytes, "
                f"but only {end - pos} remain"
            )
        if keep is not None:
            keep.append(bytes(view[pos : pos + length]))
        pos += length
        count += 1
    return count


def count_bytes_elements(buf: Buffer) -> int:
    """The number of length-prefixed elements in a serialized BYTES tensor."""
    return _walk(_as_bytes_view(buf), None)


def check_bytes_framing(buf: Buffer, expected_elements: int) -> None:
    """Raise ValueError unless `buf` is exactly `expected_elements` length-prefixed elements that
    fill it to the last byte."""
    count = _walk(_as_bytes_view(buf), None)
    if count != expected_elements:
        raise ValueError(
            f"holds {count} length-prefixed element(s), but its shape needs {expected_elements}"
        )


def frame_bytes(items: Iterable[bytes | str]) -> bytes:
    """Serialize elements as BYTES tensor data: 4-byte little-endian length, then the bytes
    (str elements are encoded as UTF-8)."""
    parts: list[bytes] = []
    append = parts.append
    for item in items:
        if type(item) is bytes:
            data = item
        elif isinstance(item, str):
            data = item.encode()
        else:
            data = bytes(memoryview(item))  # any bytes-like; TypeError for anything else
        if len(data) > 0xFFFFFFFF:
            raise ValueError(f"a BYTES element of {len(data)} bytes does not fit a 4-byte length")
        append(_pack_length(len(data)))
        append(data)
    return b"".join(parts)


def unframe_bytes(buf: Buffer) -> list[bytes]:
    """The elements of a serialized BYTES tensor, in order."""
    out: list[bytes] = []
    _walk(_as_bytes_view(buf), out)
    return out


def slice_tail(body: Buffer, offset: int, sizes: Sequence[int]) -> list[memoryview]:
    """Cut the binary part of a request, body[offset:], into consecutive views of the given sizes
    (zero-copy). Raise ValueError when the sizes overrun the body or leave bytes unclaimed."""
    view = _as_bytes_view(body)
    total = len(view)
    if offset < 0 or offset > total:
        raise ValueError(f"binary data offset {offset} lies outside a body of {total} bytes")
    out: list[memoryview] = []
    pos = offset
    for index, size in enumerate(sizes):
        if size < 0:
            raise ValueError(f"binary tensor {index} has a negative size {size}")
        if size > total - pos:
            raise ValueError(
                f"binary tensor {index} needs bytes {pos}..{pos + size} of the body, "
                f"but the body ends at {total}"
            )
        out.append(view[pos : pos + size])
        pos += size
    if pos != total:
        raise ValueError(
            f"{total - pos} byte(s) after the last binary tensor (from byte {pos}) "
            "are not claimed by any binary_data_size"
        )
    return out


def shape_elements(shape: object, dims: tuple[int, ...], max_batch_size: int) -> int:
    """The element count of a request's `shape` when it fits the model's `dims` (which exclude
    the batch dimension when max_batch_size > 0; -1 matches any size), else -1. The codec
    diagnoses a -1 in Python to word the message; this is the hot path's yes/no."""
    if type(shape) is not list:
        return -1
    rank = len(dims)
    first = 0
    if max_batch_size > 0:
        if len(shape) != rank + 1:
            return -1
        batch = shape[0]
        if type(batch) is not int or batch < 1 or batch > max_batch_size:
            return -1
        count = batch
        first = 1
    else:
        if len(shape) != rank:
            return -1
        count = 1
    for i in range(rank):
        dim = shape[first + i]
        if type(dim) is not int or dim < 0:
            return -1
        want = dims[i]
        if want != -1 and dim != want:
            return -1
        count *= dim
    return count


def accept_binary_inputs(
    items: object,
    table: dict[str, tuple[int, str, tuple[int, ...], int]],
    max_batch_size: int,
    body: Buffer,
    offset: int,
) -> list[tuple[tuple[int, ...], memoryview]] | None:
    """The hot path of decoding a request whose inputs all travel as binary data.

    `items` is the request's "inputs" list; `table` maps each declared input's name to (index
    in the signature, datatype name, dims, itemsize or 0 for BYTES); the binary data is
    body[offset:]. Returns one (shape, zero-copy view of body) per declared input in signature
    order, or None at the first thing out of the ordinary (a missing, unknown or duplicate input,
    JSON data, any mismatch): the codec's general path then decodes the request and words the
    error. It accepts nothing the general path would refuse, and returns what it would return.
    """
    if type(items) is not list or len(items) != len(table):
        return None
    out: list[Any] = [None] * len(table)
    view = _as_bytes_view(body)
    total = len(view)
    pos = offset
    if offset < 0 or offset > total:
        return None
    for item in items:
        if type(item) is not dict:
            return None
        name = item.get("name")
        if type(name) is not str:
            return None
        entry = table.get(name)
        if entry is None:
            return None
        index, datatype, dims, itemsize = entry
        if out[index] is not None or item.get("datatype") != datatype:
            return None
        shape = item.get("shape")
        count = shape_elements(shape, dims, max_batch_size)
        params = item.get("parameters")
        if count < 0 or type(params) is not dict or item.get("data") is not None:
            return None
        size = params.get("binary_data_size")
        if type(size) is not int or size < 0 or size > total - pos:
            return None
        if "shared_memory_region" in params:
            return None
        tensor = view[pos : pos + size]
        if itemsize:
            if size != count * itemsize:
                return None
        else:
            try:
                if _walk(tensor, None) != count:
                    return None
            except ValueError:
                return None
        out[index] = (tuple(shape), tensor)  # type: ignore[arg-type]
        pos += size
    if pos != total:
        return None
    return out


def accept_outputs(
    items: object,
    names: dict[str, int],
    requested: tuple[tuple[Any, Any], ...],
    default: bool,
) -> list[Any] | None:
    """The hot path of picking the outputs a request names: `names` maps each output's name to
    its index, `requested[i]` holds the (JSON unless FP16/BF16, binary) RequestedOutput of
    output i. Returns the list in the request's order, or None at anything out of the ordinary
    (unknown or repeated names, parameters other than a boolean binary_data): the codec's
    general path then decides, and words any error."""
    if type(items) is not list:
        return None
    out: list[Any] = []
    seen: list[int] = []
    for item in items:
        if type(item) is not dict:
            return None
        name = item.get("name")
        if type(name) is not str:
            return None
        index = names.get(name)
        if index is None or index in seen:
            return None
        params = item.get("parameters")
        if params is None:
            binary = default
        elif type(params) is dict:
            flag = params.get("binary_data")
            if flag is None:
                if params:
                    return None
                binary = default
            elif type(flag) is bool and len(params) == 1:
                binary = flag
            else:
                return None
        else:
            return None
        seen.append(index)
        out.append(requested[index][1 if binary else 0])
    return out
