"""Stub of the compiled codec helpers (pyserver/protocol/_codec.pyx)."""

from collections.abc import Iterable, Sequence
from typing import Any

from typing_extensions import Buffer

IMPLEMENTATION: str

def count_bytes_elements(buf: Buffer) -> int: ...
def check_bytes_framing(buf: Buffer, expected_elements: int) -> None: ...
def frame_bytes(items: Iterable[bytes | str]) -> bytes: ...
def unframe_bytes(buf: Buffer) -> list[bytes]: ...
def slice_tail(body: Buffer, offset: int, sizes: Sequence[int]) -> list[memoryview]: ...
def shape_elements(shape: object, dims: tuple[int, ...], max_batch_size: int) -> int: ...
def accept_binary_inputs(
    items: object,
    table: dict[str, tuple[int, str, tuple[int, ...], int]],
    max_batch_size: int,
    body: Buffer,
    offset: int,
) -> list[tuple[tuple[int, ...], memoryview]] | None: ...
def accept_outputs(
    items: object,
    names: dict[str, int],
    requested: tuple[tuple[Any, Any], ...],
    default: bool,
) -> list[Any] | None: ...
