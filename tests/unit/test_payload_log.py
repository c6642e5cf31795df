"""Payload log lines without a server: every datatype as v2 JSON, values cut after max_elements
(BYTES: whole elements only), sampling, and closing writes what was queued."""

from __future__ import annotations

import datetime
import json
import struct
from pathlib import Path

import numpy as np
import orjson

from pyserver import payload_log
from pyserver.config import PayloadLogging
from pyserver.protocol.codec import InferRequest
from pyserver.types import DataType, ModelSignature, TensorSpec


def frame(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def line(tensors: list[tuple[TensorSpec, tuple[int, ...], bytes]], limit: int) -> list[dict]:
    record = {
        "time": datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.UTC),
        "id": None, "model": "m", "version": "1",
        "inputs": [payload_log._copy(spec, shape, data, limit) for spec, shape, data in tensors],
        "outputs": [],
    }
    encoded = payload_log._encode(record)
    doc = json.loads(orjson.dumps(encoded, option=orjson.OPT_SERIALIZE_NUMPY))
    assert doc["time"] == "2026-01-02T03:04:05.678Z"
    return doc["inputs"]  # type: ignore[no-any-return]


def test_every_datatype() -> None:
    bf16 = np.array([1.0, -2.5], np.float32).view(np.uint32) >> 16
    tensors = [
        (TensorSpec("f16", DataType.FP16, (3,)), (1, 3),
         np.array([0.5, -1, 65504], np.float16).tobytes()),
        (TensorSpec("bf16", DataType.BF16, (2,)), (1, 2), bf16.astype("<u2").tobytes()),
        (TensorSpec("b", DataType.BOOL, (2,)), (1, 2), bytes([1, 0])),
        (TensorSpec("i64", DataType.INT64, (2,)), (1, 2), np.array([-5, 2**40]).tobytes()),
        (TensorSpec("u8", DataType.UINT8, (2,)), (1, 2), bytes([0, 255])),
        (TensorSpec("s", DataType.BYTES, (2,)), (1, 2), frame([b"hello", "é".encode()])),
    ]
    f16, b16, b, i64, u8, s = line(tensors, 100)
    assert f16["data"] == [0.5, -1.0, 65504.0] and "truncated" not in f16
    assert b16["data"] == [1.0, -2.5]
    assert b["data"] == [True, False]
    assert i64["data"] == [-5, 2**40]
    assert u8["data"] == [0, 255]
    assert s == {"name": "s", "datatype": "BYTES", "shape": [1, 2], "data": ["hello", "é"]}


def test_values_are_cut_after_max_elements() -> None:
    fp32 = np.arange(10, dtype=np.float32).tobytes()
    strings = frame([b"a" * 5, b"b" * 5, b"c" * 5])
    x, s = line([(TensorSpec("x", DataType.FP32, (10,)), (1, 10), fp32),
                 (TensorSpec("s", DataType.BYTES, (3,)), (1, 3), strings)], 2)
    assert x == {"name": "x", "datatype": "FP32", "shape": [1, 10], "data": [0.0, 1.0],
                 "truncated": True}
    assert s["data"] == ["aaaaa", "bbbbb"] and s["truncated"] is True and s["shape"] == [1, 3]
    # A BYTES element larger than the copy limit is cut out whole.
    (big,) = line([(TensorSpec("s", DataType.BYTES, (1,)), (1, 1),
                    frame([b"x" * (payload_log.BYTES_TENSOR_LIMIT + 10)]))], 5)
    assert big["data"] == [] and big["truncated"] is True


def test_sampling_and_close_writes_what_is_queued(tmp_path: Path) -> None:
    signature = ModelSignature("m", 4, (TensorSpec("x", DataType.FP32, (1,)),),
                               (TensorSpec("y", DataType.FP32, (1,)),))
    log = payload_log.PayloadLog(PayloadLogging(str(tmp_path / "p.jsonl"), every=3), signature,
                                 "7")
    writer = log.writer
    request = InferRequest("id", {}, [((1, 1), memoryview(np.ones(1, np.float32).tobytes()))], [])
    results = [((1, 1), np.frombuffer(np.full(1, 2, np.float32).tobytes(), np.uint8))]
    for _ in range(7):
        log.observe(request, results)
    log.close()  # writes what is queued
    lines = (tmp_path / "p.jsonl").read_text().splitlines()
    assert len(lines) == 3  # requests 1, 4 and 7
    doc = json.loads(lines[0])
    assert (doc["id"], doc["model"], doc["version"]) == ("id", "m", "7")
    assert doc["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [1, 1], "data": [2.0]}]
    assert writer.written == 3 and writer.dropped == 0
    assert str(tmp_path / "p.jsonl") not in {str(p) for p in payload_log._writers}
