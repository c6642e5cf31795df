"""Building v2 inference requests (JSON, binary or mixed) for the seed corpora: valid ones for a
signature, and the near-valid variations the fuzzers start from."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from pyserver.types import DataType, ModelSignature, TensorSpec


def frame(*items: bytes) -> bytes:
    """BYTES tensor data: each element as a 4-byte little-endian length, then its bytes."""
    return b"".join(len(i).to_bytes(4, "little") + i for i in items)


def shape_for(signature: ModelSignature, spec: TensorSpec, batch: int = 1) -> list[int]:
    dims = [2 if d == -1 else d for d in spec.dims]
    return [batch, *dims] if signature.max_batch_size > 0 else dims


def values_for(spec: TensorSpec, count: int) -> list[Any]:
    """Plausible element values for a tensor: small numbers, true/false, short strings."""
    if spec.datatype is DataType.BYTES:
        return [f"s{i}" for i in range(count)]
    if spec.datatype is DataType.BOOL:
        return [i % 2 == 0 for i in range(count)]
    if spec.datatype.name.startswith(("INT", "UINT")):
        return [i % 100 for i in range(count)]
    return [i * 0.5 for i in range(count)]


def raw_bytes(spec: TensorSpec, values: list[Any]) -> bytes:
    """A tensor's binary data as the binary extension carries it."""
    if spec.datatype is DataType.BYTES:
        return frame(*(str(v).encode() for v in values))
    if spec.datatype is DataType.BF16:
        # the upper half of each FP32 value
        return np.array(values, dtype="<f4").view("<u4").__rshift__(16).astype("<u2").tobytes()
    return np.array(values, dtype=spec.datatype.numpy).tobytes()


def request(
    signature: ModelSignature,
    binary: bool | None = None,
    batch: int = 1,
    outputs: list[dict[str, Any]] | None = None,
    parameters: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> tuple[bytes, int | None]:
    """A valid request: (body, Inference-Header-Content-Length or None for plain JSON).
    binary None: JSON where the datatype allows it (FP16 and BF16 always go binary)."""
    items: list[dict[str, Any]] = []
    tail = b""
    for spec in signature.inputs:
        shape = shape_for(signature, spec, batch)
        values = values_for(spec, math.prod(shape))
        as_binary = binary or spec.datatype in (DataType.FP16, DataType.BF16)
        item: dict[str, Any] = {"name": spec.name, "shape": shape, "datatype": spec.datatype.name}
        if as_binary:
            raw = raw_bytes(spec, values)
            item["parameters"] = {"binary_data_size": len(raw)}
            tail += raw
        else:
            item["data"] = values
        items.append(item)
    doc: dict[str, Any] = {}
    if request_id is not None:
        doc["id"] = request_id
    if parameters is not None:
        doc["parameters"] = parameters
    doc["inputs"] = items
    if outputs is not None:
        doc["outputs"] = outputs
    header = orjson.dumps(doc)
    if not tail:
        return header, None
    return header + tail, len(header)
