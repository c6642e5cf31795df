"""Names shared by every room: datatypes (with Triton's numbering) and tensor specs.

The datatype numbers are Triton's TYPE_* enum, the same on both sides of the pybind11 boundary
(csrc/core/types.h). Status codes live in csrc/core/status.h alone (exported as
pyserver._core.STATUS_CODES).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class DataType(enum.IntEnum):
    """KServe v2 datatypes, numbered as Triton's TYPE_* enum."""

    BOOL = 1
    UINT8 = 2
    UINT16 = 3
    UINT32 = 4
    UINT64 = 5
    INT8 = 6
    INT16 = 7
    INT32 = 8
    INT64 = 9
    FP16 = 10
    FP32 = 11
    FP64 = 12
    BYTES = 13
    BF16 = 14

    @property
    def itemsize(self) -> int:
        """Bytes per element; 0 for BYTES, whose elements carry their own length."""
        return _ITEMSIZE[self]

    @property
    def numpy(self) -> np.dtype[np.generic] | None:
        """The little-endian numpy dtype, or None where numpy has none (BYTES, BF16)."""
        return _NUMPY.get(self)

    @property
    def config_name(self) -> str:
        """Triton's model-configuration spelling: TYPE_FP32, TYPE_STRING, ..."""
        return "TYPE_STRING" if self is DataType.BYTES else f"TYPE_{self.name}"

    @classmethod
    def parse(cls, text: str) -> DataType:
        """Accept the v2 name (FP32), Triton's config name (TYPE_FP32, TYPE_STRING) or the
        numpy/ONNX spelling (float32); raise ValueError naming what was expected."""
        key = text.strip().upper()
        if key.startswith("TYPE_"):
            key = key[5:]
        key = _ALIASES.get(key, key)
        try:
            return cls[key]
        except KeyError:
            names = ", ".join(m.name for m in cls)
            raise ValueError(f"unknown datatype {text!r}; expected one of {names}") from None


_ITEMSIZE = {
    DataType.BOOL: 1, DataType.UINT8: 1, DataType.UINT16: 2, DataType.UINT32: 4,
    DataType.UINT64: 8, DataType.INT8: 1, DataType.INT16: 2, DataType.INT32: 4,
    DataType.INT64: 8, DataType.FP16: 2, DataType.FP32: 4, DataType.FP64: 8,
    DataType.BYTES: 0, DataType.BF16: 2,
}

_NUMPY: dict[DataType, np.dtype[np.generic]] = {
    DataType.BOOL: np.dtype(np.bool_), DataType.UINT8: np.dtype("<u1"),
    DataType.UINT16: np.dtype("<u2"), DataType.UINT32: np.dtype("<u4"),
    DataType.UINT64: np.dtype("<u8"), DataType.INT8: np.dtype("<i1"),
    DataType.INT16: np.dtype("<i2"), DataType.INT32: np.dtype("<i4"),
    DataType.INT64: np.dtype("<i8"), DataType.FP16: np.dtype("<f2"),
    DataType.FP32: np.dtype("<f4"), DataType.FP64: np.dtype("<f8"),
}

_ALIASES = {
    "STRING": "BYTES", "FLOAT": "FP32", "FLOAT32": "FP32", "FLOAT16": "FP16", "HALF": "FP16",
    "DOUBLE": "FP64", "FLOAT64": "FP64", "BFLOAT16": "BF16", "INT": "INT32", "LONG": "INT64",
    "UINT": "UINT32",
}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output as the model declares it. dims exclude the batch dimension when the
    model batches (max_batch_size > 0); -1 means any size."""

    name: str
    datatype: DataType
    dims: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ModelSignature:
    """What the protocol codec needs to know of a model: its name, batching and tensors."""

    name: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
