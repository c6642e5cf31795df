# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled helpers of the protocol codec: the per-request byte walking and slicing, and the hot
path of decoding (`accept_binary_inputs`, `accept_outputs`: take the common request in one pass,
or return None and let the codec's general path decide and word the error).

It is the codec's only implementation of these primitives (setup.py always builds it); the hot
path's rules are checked against the general path in codec.py by tests/unit/test_codec_fastpath.py
and the decode fuzzer, which switch the hot path off and compare.

Buffers are read through the buffer protocol (PyBUF_SIMPLE: any C-contiguous buffer, its length
in bytes whatever its format), so bytes, bytearray, memoryview slices and numpy arrays all work
and nothing is copied. Every buffer acquired is released in a `finally`, on the error paths too.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.limits cimport LLONG_MAX
from libc.stdint cimport uint32_t, uint8_t
from libc.string cimport memcpy

IMPLEMENTATION = "cython"


cdef inline uint32_t _read_le32(const uint8_t* p) noexcept nogil:
    # Assembled byte by byte: the prefix may sit at any alignment, and this is little-endian on
    # every host (the wire format is little-endian by definition).
    return (<uint32_t>p[0]) | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (
        <uint32_t>p[3] << 24)


cdef Py_ssize_t _walk(const uint8_t* data, Py_ssize_t end, list keep) except -1:
    """Walk the 4-byte little-endian length framing; return the element count, appending each
    element to `keep` unless it is None. Raise ValueError when a prefix or element overruns."""
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t count = 0
    cdef Py_ssize_t left
    cdef Py_ssize_t length
    while pos < end:
        left = end - pos
        if left < 4:
            raise ValueError(
                f"BYTES element {count} at byte {pos} has a truncated length prefix: "
                f"{left} byte(s) left, 4 needed"
            )
        length = <Py_ssize_t>_read_le32(data + pos)
        pos += 4
        if length > end - pos:
            raise ValueError(
                f"BYTES element {count} at byte {pos - 4} declares {length} bytes, "
                f"but only {end - pos} remain"
            )
        if keep is not None:
            keep.append(PyBytes_FromStringAndSize(<const char*>(data + pos), length))
        pos += length
        count += 1
    return count


def count_bytes_elements(buf):
    """The number of length-prefixed elements in a serialized BYTES tensor."""
    cdef Py_buffer view
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        return _walk(<const uint8_t*>view.buf, view.len, None)
    finally:
        PyBuffer_Release(&view)


def check_bytes_framing(buf, expected_elements):
    """Raise ValueError unless `buf` is exactly `expected_elements` length-prefixed elements that
    fill it to the last byte."""
    cdef Py_buffer view
    cdef Py_ssize_t count
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        count = _walk(<const uint8_t*>view.buf, view.len, None)
    finally:
        PyBuffer_Release(&view)
    # expected_elements stays a Python int: a hostile shape may not fit a C integer
    if count != expected_elements:
        raise ValueError(
            f"holds {count} length-prefixed element(s), but its shape needs {expected_elements}"
        )


def frame_bytes(items):
    """Serialize elements as BYTES tensor data: 4-byte little-endian length, then the bytes
    (str elements are encoded as UTF-8)."""
    cdef list datas = []
    cdef Py_ssize_t total = 0
    cdef Py_ssize_t n
    cdef bytes data
    cdef bytes out
    cdef char* dst
    for item in items:
        if type(item) is bytes:
            data = item
        elif isinstance(item, str):
            data = item.encode()
        else:
            data = bytes(memoryview(item))  # any bytes-like; TypeError for anything else
        n = len(data)
        if n > 0xFFFFFFFF:
            raise ValueError(f"a BYTES element of {n} bytes does not fit a 4-byte length")
        datas.append(data)
        total += 4 + n
    # One allocation of the final size, filled in place (the bytes object is not shared yet).
    out = PyBytes_FromStringAndSize(NULL, total)
    dst = PyBytes_AS_STRING(out)
    for data in datas:
        n = len(data)
        dst[0] = <char>(n & 0xFF)
        dst[1] = <char>((n >> 8) & 0xFF)
        dst[2] = <char>((n >> 16) & 0xFF)
        dst[3] = <char>((n >> 24) & 0xFF)
        memcpy(dst + 4, PyBytes_AS_STRING(data), n)
        dst += 4 + n
    return out


def unframe_bytes(buf):
    """The elements of a serialized BYTES tensor, in order."""
    cdef Py_buffer view
    cdef list out = []
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        _walk(<const uint8_t*>view.buf, view.len, out)
    finally:
        PyBuffer_Release(&view)
    return out


def slice_tail(body, Py_ssize_t offset, sizes):
    """Cut the binary part of a request, body[offset:], into consecutive views of the given sizes
    (zero-copy). Raise ValueError when the sizes overrun the body or leave bytes unclaimed."""
    cdef object whole = memoryview(body)
    if whole.format != "B" or whole.ndim != 1:
        whole = whole.cast("B")
    cdef Py_ssize_t total = len(whole)
    cdef Py_ssize_t pos = offset
    cdef Py_ssize_t end
    cdef Py_ssize_t size
    cdef Py_ssize_t index = 0
    cdef list out = []
    if offset < 0 or offset > total:
        raise ValueError(f"binary data offset {offset} lies outside a body of {total} bytes")
    for item in sizes:
        # Compared as Python ints before narrowing: a hostile size may not fit a C integer.
        if item < 0:
            raise ValueError(f"binary tensor {index} has a negative size {item}")
        if item > total - pos:
            raise ValueError(
                f"binary tensor {index} needs bytes {pos}..{pos + item} of the body, "
                f"but the body ends at {total}"
            )
        size = item
        end = pos + size
        out.append(whole[pos:end])
        pos = end
        index += 1
    if pos != total:
        raise ValueError(
            f"{total - pos} byte(s) after the last binary tensor (from byte {pos}) "
            "are not claimed by any binary_data_size"
        )
    return out


cdef long long _shape_count(object shape, tuple dims, Py_ssize_t max_batch_size) except -3:
    """shape_elements in C integers: the count, -1 when the shape does not fit, -2 when it
    fits but the count (or a dimension) overflows a C integer (the caller falls back)."""
    if type(shape) is not list:
        return -1
    cdef list s = <list>shape
    cdef Py_ssize_t first = 1 if max_batch_size > 0 else 0
    cdef Py_ssize_t rank = len(dims)
    cdef Py_ssize_t i
    cdef long long count = 1
    cdef long long d
    cdef long long want
    cdef int overflow = 0
    cdef object dim
    if len(s) != rank + first:
        return -1
    for i in range(rank + first):
        dim = s[i]
        if type(dim) is not int:
            return -1
        d = PyLong_AsLongLongAndOverflow(dim, &overflow)
        if overflow < 0:
            return -1
        if i < first:
            if overflow or d < 1 or d > max_batch_size:
                return -1
        else:
            want = dims[i - first]
            if overflow:
                return -1 if want != -1 else -2
            if d < 0 or (want != -1 and d != want):
                return -1
        if d != 0 and count > LLONG_MAX // d:
            return -2
        count *= d
    return count


def shape_elements(shape, tuple dims, Py_ssize_t max_batch_size):
    """The element count of a request's `shape` when it fits the model's `dims` (which exclude
    the batch dimension when max_batch_size > 0; -1 matches any size), else -1. The codec
    diagnoses a -1 in Python to word the message; this is the hot path's yes/no."""
    cdef long long count = _shape_count(shape, dims, max_batch_size)
    if count != -2:
        return count
    # A hostile shape whose count (or a dimension) overflows 64 bits: check and count it again
    # in Python ints, which cannot wrap. _shape_count stopped at the overflow, so every
    # dimension is checked here, not only multiplied (the fuzzer found [1, 2**63, 5] accepted
    # for dims [-1, 3] when only the product was taken).
    cdef list s = <list>shape
    cdef Py_ssize_t first = 1 if max_batch_size > 0 else 0
    cdef object total = 1
    for i, dim in enumerate(s):
        if type(dim) is not int or dim < 0:
            return -1
        if i < first:
            if dim < 1 or dim > max_batch_size:
                return -1
        elif dims[i - first] != -1 and dim != dims[i - first]:
            return -1
        total = total * dim
    return total


def accept_binary_inputs(items, dict table, Py_ssize_t max_batch_size, body, Py_ssize_t offset):
    """The hot path of decoding a request whose inputs all travel as binary data.

    `items` is the request's "inputs" list; `table` maps each declared input's name to (index
    in the signature, datatype name, dims, itemsize or 0 for BYTES); the binary data is
    body[offset:]. Returns one (shape, zero-copy view of body) per declared input in signature
    order, or None at the first thing out of the ordinary (a missing, unknown or duplicate input,
    JSON data, any mismatch): the codec's general path then decodes the request and words the
    error. It accepts nothing the general path would refuse, and returns what it would return.
    """
    if type(items) is not list or len(<list>items) != len(table):
        return None
    cdef list inputs = <list>items
    cdef Py_ssize_t n = len(table)
    cdef list out = [None] * n
    cdef object whole = memoryview(body)
    if type(body) is not bytes and (whole.format != "B" or whole.ndim != 1):
        whole = whole.cast("B")
    cdef Py_ssize_t total = len(whole)
    cdef Py_ssize_t pos = offset
    cdef Py_ssize_t index
    cdef Py_ssize_t itemsize
    cdef Py_ssize_t size
    cdef Py_buffer view
    cdef long long count
    cdef dict item
    cdef dict params
    cdef tuple entry
    cdef object name, shape, tensor, raw_size
    if offset < 0 or offset > total:
        return None
    for obj in inputs:
        if type(obj) is not dict:
            return None
        item = <dict>obj
        name = item.get("name")
        if type(name) is not str:
            return None
        obj = table.get(name)
        if obj is None:
            return None
        entry = <tuple>obj
        index = entry[0]
        itemsize = entry[3]
        if out[index] is not None or item.get("datatype") != entry[1]:
            return None
        shape = item.get("shape")
        count = _shape_count(shape, <tuple>entry[2], max_batch_size)
        obj = item.get("parameters")
        if count < 0 or type(obj) is not dict or item.get("data") is not None:
            return None
        params = <dict>obj
        raw_size = params.get("binary_data_size")
        # Checked as a Python int before narrowing: a hostile size may not fit a C integer.
        if type(raw_size) is not int or raw_size < 0 or raw_size > total - pos:
            return None
        if "shared_memory_region" in params:
            return None
        size = raw_size
        tensor = whole[pos:pos + size]
        if itemsize:
            # Divided, not multiplied: count * itemsize could wrap for a hostile shape.
            if size % itemsize or count != size // itemsize:
                return None
        else:
            PyObject_GetBuffer(tensor, &view, PyBUF_SIMPLE)
            try:
                if _walk(<const uint8_t*>view.buf, view.len, None) != count:
                    return None
            except ValueError:
                return None
            finally:
                PyBuffer_Release(&view)
        out[index] = (tuple(<list>shape), tensor)
        pos += size
    if pos != total:
        return None
    return out


def accept_outputs(items, dict names, tuple requested, bint default):
    """The hot path of picking the outputs a request names: `names` maps each output's name to
    its index, `requested[i]` holds the (JSON unless FP16/BF16, binary) RequestedOutput of
    output i. Returns the list in the request's order, or None at anything out of the ordinary
    (unknown or repeated names, parameters other than a boolean binary_data): the codec's
    general path then decides, and words any error."""
    if type(items) is not list:
        return None
    cdef list out = []
    cdef list seen = []
    cdef dict item
    cdef dict params
    cdef object obj, name, index, flag
    cdef bint binary
    for obj in <list>items:
        if type(obj) is not dict:
            return None
        item = <dict>obj
        name = item.get("name")
        if type(name) is not str:
            return None
        index = names.get(name)
        if index is None or index in seen:
            return None
        obj = item.get("parameters")
        if obj is None:
            binary = default
        elif type(obj) is dict:
            params = <dict>obj
            flag = params.get("binary_data")
            if flag is None:
                if len(params):
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
