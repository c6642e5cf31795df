"""The compiled codec helpers and their pure-Python twin: every case runs against both, and the
two must agree on results and on every message."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tritonclient.utils import serialize_byte_tensor

from pyserver.errors import ServerError
from pyserver.protocol import _codec as compiled
from pyserver.protocol import codec
from pyserver.types import DataType, ModelSignature, TensorSpec

IMPLEMENTATIONS = [pytest.param(compiled, id="cython")]


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> Any:
    return request.param


def frame(*items: bytes) -> bytes:
    return b"".join(len(i).to_bytes(4, "little") + i for i in items)


ELEMENTS = [b"", "h\u00e9llo \u2603".encode(), b"\xff\x00binary", b"x" * 70000, b"a"]


def test_the_compiled_module_is_used_when_built() -> None:
    assert codec._fast.IMPLEMENTATION == ("python" if compiled is None else "cython")


def test_frame_bytes_matches_tritonclient(impl: Any) -> None:
    array = np.array(ELEMENTS, dtype=np.object_)
    assert impl.frame_bytes(ELEMENTS) == serialize_byte_tensor(array).item()
    assert impl.frame_bytes(["", "\u00e9", b"b"]) == frame(b"", "\u00e9".encode(), b"b")
    assert impl.frame_bytes([bytearray(b"ab"), memoryview(b"cd")]) == frame(b"ab", b"cd")
    assert impl.frame_bytes(iter([])) == b""


def test_frame_bytes_refuses_what_is_not_bytes_or_str(impl: Any) -> None:
    with pytest.raises(TypeError):
        impl.frame_bytes([b"a", 3])


def test_unframe_and_count(impl: Any) -> None:
    data = frame(*ELEMENTS)
    assert impl.unframe_bytes(data) == ELEMENTS
    assert impl.count_bytes_elements(data) == len(ELEMENTS)
    assert impl.unframe_bytes(b"") == [] and impl.count_bytes_elements(b"") == 0
    # any C-contiguous buffer: a memoryview slice, a bytearray, a numpy array
    padded = b"??" + data + b"??"
    assert impl.unframe_bytes(memoryview(padded)[2:-2]) == ELEMENTS
    assert impl.count_bytes_elements(bytearray(data)) == len(ELEMENTS)
    assert impl.count_bytes_elements(np.frombuffer(frame(b"ab", b"c") + b"\0", np.uint8)[:-1]) == 2


def test_check_bytes_framing(impl: Any) -> None:
    impl.check_bytes_framing(frame(b"a", b""), 2)
    impl.check_bytes_framing(b"", 0)
    with pytest.raises(
        ValueError, match=r"^holds 2 length-prefixed element\(s\), but its shape needs 3$"
    ):
        impl.check_bytes_framing(frame(b"a", b""), 3)
    with pytest.raises(
        ValueError, match=r"^holds 1 length-prefixed element\(s\), but its shape needs 0$"
    ):
        impl.check_bytes_framing(frame(b""), 0)
    # a hostile element count that fits no C integer is just a mismatch
    with pytest.raises(ValueError, match="shape needs 1000000000000000000000000000000$"):
        impl.check_bytes_framing(frame(b"a"), 10**30)


MALFORMED = {
    "truncated prefix": (
        frame(b"ab") + b"\x01\x00",
        "BYTES element 1 at byte 6 has a truncated length prefix: 2 byte(s) left, 4 needed",
    ),
    "element overruns": (
        frame(b"ab") + b"\x05\x00\x00\x00abc",
        "BYTES element 1 at byte 6 declares 5 bytes, but only 3 remain",
    ),
    "huge length": (
        b"\xff\xff\xff\xff",
        "BYTES element 0 at byte 0 declares 4294967295 bytes, but only 0 remain",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
@pytest.mark.parametrize(
    "function", ["count_bytes_elements", "unframe_bytes", "check_bytes_framing"]
)
def test_malformed_framing_messages(impl: Any, function: str, case: str) -> None:
    data, message = MALFORMED[case]
    args = (data, 2) if function == "check_bytes_framing" else (data,)
    with pytest.raises(ValueError) as caught:
        getattr(impl, function)(*args)
    assert str(caught.value) == message


def test_slice_tail_is_zero_copy(impl: Any) -> None:
    body = b"HEADER" + b"aaaa" + b"" + b"bb"
    views = impl.slice_tail(body, 6, [4, 0, 2])
    assert [bytes(v) for v in views] == [b"aaaa", b"", b"bb"]
    assert all(isinstance(v, memoryview) and v.obj is body for v in views)
    assert impl.slice_tail(b"abc", 3, []) == []


TAIL_ERRORS = [
    (
        b"HHxyz",
        2,
        [2],
        (
            "1 byte(s) after the last binary tensor (from byte 4) are not claimed by "
            "any binary_data_size"
        ),
    ),
    (b"HHxyz", 2, [2, 2], "binary tensor 1 needs bytes 4..6 of the body, but the body ends at 5"),
    (b"HHxyz", 2, [-1], "binary tensor 0 has a negative size -1"),
    (
        b"HHxyz",
        2,
        [10**30],
        f"binary tensor 0 needs bytes 2..{2 + 10**30} of the body, but the body ends at 5",
    ),
    (b"HHxyz", 6, [], "binary data offset 6 lies outside a body of 5 bytes"),
    (
        b"HHxyz",
        2,
        [],
        (
            "3 byte(s) after the last binary tensor (from byte 2) are not claimed by "
            "any binary_data_size"
        ),
    ),
]


@pytest.mark.parametrize(("body", "offset", "sizes", "message"), TAIL_ERRORS)
def test_slice_tail_mismatches(
    impl: Any, body: bytes, offset: int, sizes: list[int], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        impl.slice_tail(body, offset, sizes)
    assert str(caught.value) == message


SHAPES = [
    # shape, dims, max_batch_size, elements (-1: does not fit)
    ([1, 3], (3,), 8, 3),
    ([8, 3], (3,), 8, 24),
    ([9, 3], (3,), 8, -1),
    ([0, 3], (3,), 8, -1),
    ([2, 5, 7], (-1, 7), 4, 70),
    ([2, 0, 7], (-1, 7), 4, 0),
    ([2, 5], (-1, 7), 4, -1),
    ([2, 5, 6], (-1, 7), 4, -1),
    ([2, -5, 7], (-1, 7), 4, -1),
    ([2, 5.0, 7], (-1, 7), 4, -1),
    ([True, 7], (7,), 4, -1),
    ([3, 4], (3, 4), 0, 12),
    ([3, 4], (-1, -1), 0, 12),
    ([], (), 0, 1),
    ([1, 3, 4], (3, 4), 0, -1),
    ([1, 10**20], (-1,), 1, 10**20),
    ((1, 3), (3,), 8, -1),  # a tuple is not a JSON list
    ("13", (3,), 8, -1),
]


@pytest.mark.parametrize(("shape", "dims", "max_batch_size", "elements"), SHAPES)
def test_shape_elements(
    impl: Any, shape: Any, dims: tuple[int, ...], max_batch_size: int, elements: int
) -> None:
    assert impl.shape_elements(shape, dims, max_batch_size) == elements


# --------------------------------------------------------------------------------------------
# the hot path accepts nothing the general path refuses, and returns what it returns

SIG = ModelSignature(
    "m",
    4,
    (TensorSpec("a", DataType.FP32, (3,)), TensorSpec("s", DataType.BYTES, (-1,))),
    (TensorSpec("y", DataType.FP32, (3,)), TensorSpec("h", DataType.FP16, (3,))),
)
PLAN = codec._plan_for(SIG)
A_DATA = np.arange(3, dtype=np.float32).tobytes()
S_DATA = frame(b"x", b"yz")
WEIRD = [None, 1, -1, 10**30, 12.0, True, "x", [], {}, [1, 3]]


def _items() -> list[dict[str, Any]]:
    return [
        {"name": "a", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12}},
        {"name": "s", "shape": [1, 2], "datatype": "BYTES", "parameters": {"binary_data_size": 11}},
    ]


def _mutations() -> list[tuple[str, list[Any], bytes]]:
    """(what changed, the inputs list, the binary tail) around a well-formed request."""
    tail = A_DATA + S_DATA
    out: list[tuple[str, list[Any], bytes]] = [
        ("good", _items(), tail),
        ("reversed", _items()[::-1], S_DATA + A_DATA),
        ("tail short", _items(), tail[:-1]),
        ("tail long", _items(), tail + b"!"),
        ("no tail", _items(), b""),
        ("missing", _items()[:1], A_DATA),
        ("duplicate", [*_items(), _items()[0]], tail + A_DATA),
        ("unknown", [*_items(), {**_items()[0], "name": "zz"}], tail + A_DATA),
        ("not a dict", [_items()[0], 3], tail),
        (
            "json data",
            [_items()[0], {**_items()[1], "parameters": None, "data": ["x", "yz"]}],
            A_DATA,
        ),
        ("both", [{**_items()[0], "data": [1, 2, 3]}, _items()[1]], tail),
        ("null data", [{**_items()[0], "data": None}, _items()[1]], tail),
        (
            "shared memory",
            [
                _items()[0],
                {
                    **_items()[1],
                    "parameters": {"binary_data_size": 11, "shared_memory_region": "r"},
                },
            ],
            tail,
        ),
        (
            "other parameter",
            [_items()[0], {**_items()[1], "parameters": {"binary_data_size": 11, "other": 1}}],
            tail,
        ),
        ("bytes framing", [_items()[0], {**_items()[1], "shape": [1, 3]}], tail),
        ("bytes overrun", _items(), A_DATA + S_DATA[:-2] + b"\x09\0"),
    ]
    for key in ("name", "shape", "datatype", "parameters"):
        for value in [*WEIRD, "delete"]:
            items = _items()
            if value == "delete":
                del items[0][key]
            else:
                items[0][key] = value
            out.append((f"{key}={value!r}", items, tail))
    for shape in ([0, 3], [5, 3], [1, 4], [1], [1, 3, 1], [1, -3], [1, 3.0], [True, 3], [4, 3]):
        items = _items()
        items[0]["shape"] = shape
        size = 4 * int(np.prod(shape)) if all(type(d) is int and d >= 0 for d in shape) else 12
        items[0]["parameters"] = {"binary_data_size": size}
        out.append((f"shape={shape}", items, b"\0" * size + S_DATA))
    for size in [*WEIRD, 0, 8, 11, 13]:
        items = _items()
        items[0]["parameters"] = {"binary_data_size": size}
        out.append((f"size={size!r}", items, tail))
        if type(size) is int and 0 <= size < 100:  # a tail that matches the wrong size
            out.append((f"size={size!r} with its tail", items, b"\0" * size + S_DATA))
    return out


MUTATIONS = _mutations()


def _general(items: Any, body: bytes, offset: int) -> list[tuple[Any, bytes]] | None:
    try:
        decoded = codec._decode_inputs(PLAN, items, body, offset, False)
    except ServerError:
        return None
    return [(shape, bytes(view)) for shape, view in decoded]


@pytest.mark.parametrize(("what", "items", "tail"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_accept_binary_inputs_agrees_with_the_general_path(
    impl: Any, what: str, items: list[Any], tail: bytes
) -> None:
    header = b'{"inputs": []}'  # the hot path never reads the header; only its length matters
    body = header + tail
    hot = impl.accept_binary_inputs(items, PLAN.table, 4, body, len(header))
    general = _general(items, body, len(header))
    if hot is not None:
        assert general is not None, f"the hot path accepted what the general path refuses: {what}"
        assert [(shape, bytes(view)) for shape, view in hot] == general
        assert all(view.obj is body for _, view in hot)
    if what in ("good", "reversed", "other parameter", "shape=[4, 3]", "null data"):
        assert hot is not None and general is not None, what


OUTPUT_ITEMS: list[tuple[str, Any]] = [
    ("plain", [{"name": "y"}]),
    ("binary", [{"name": "y", "parameters": {"binary_data": True}}]),
    ("json", [{"name": "y", "parameters": {"binary_data": False}}, {"name": "h"}]),
    ("empty parameters", [{"name": "h", "parameters": {}}]),
    ("null parameters", [{"name": "y", "parameters": None}]),
    ("both outputs", [{"name": "h"}, {"name": "y"}]),
    ("repeated", [{"name": "y"}, {"name": "y"}]),
    ("unknown", [{"name": "zz"}]),
    ("not a dict", ["y"]),
    ("no name", [{}]),
    ("parameters list", [{"name": "y", "parameters": []}]),
    ("binary_data string", [{"name": "y", "parameters": {"binary_data": "yes"}}]),
    ("classification", [{"name": "y", "parameters": {"classification": 2}}]),
    ("extra parameter", [{"name": "y", "parameters": {"binary_data": True, "x": 1}}]),
    ("not a list", {"name": "y"}),
]


@pytest.mark.parametrize("default", [False, True])
@pytest.mark.parametrize(("what", "items"), OUTPUT_ITEMS, ids=[o[0] for o in OUTPUT_ITEMS])
def test_accept_outputs_agrees_with_the_general_path(
    impl: Any, monkeypatch: pytest.MonkeyPatch, what: str, items: Any, default: bool
) -> None:
    hot = impl.accept_outputs(items, PLAN.outputs, PLAN.requested, default)
    monkeypatch.setattr(codec, "_accept_outputs", lambda *args: None)
    try:
        general = codec._requested_outputs(PLAN, items, {"binary_data_output": default})
    except ServerError:
        general = None
    if hot is not None:
        assert general is not None, f"the hot path accepted what the general path refuses: {what}"
        assert hot == general
    if what in ("plain", "binary", "json", "empty parameters", "null parameters", "both outputs"):
        assert hot is not None, what


@pytest.mark.parametrize("dim", [2**61, 2**62, 2**63 - 1, 2**63, 2**64])
def test_accept_binary_inputs_never_wraps_a_hostile_count(impl: Any, dim: int) -> None:
    sig = ModelSignature(
        "m", 1, (TensorSpec("x", DataType.FP64, (-1,)),), (TensorSpec("y", DataType.FP64, (1,)),)
    )
    items = [
        {"name": "x", "shape": [1, dim], "datatype": "FP64", "parameters": {"binary_data_size": 0}}
    ]
    assert impl.accept_binary_inputs(items, codec._plan_for(sig).table, 1, b"{}", 2) is None
    assert impl.shape_elements([1, dim], (-1,), 1) == dim
    assert impl.shape_elements([1, dim, dim], (-1, -1), 1) == dim * dim
