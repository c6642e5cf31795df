"""Sampled payload logging ([monitoring] log_payloads): one JSON line per sampled request.

On the event loop, per request: a counter; for a sampled one (the first, then every Nth), a copy
of at most `max_elements` values of each input and output (bounded, so a large request costs no
more than a small one) put on a bounded queue. Everything else happens on one writer thread per
file: decoding the values into v2 JSON (`{"name", "datatype", "shape", "data"}`, with
`"truncated": true` when values were cut), writing, rotating the file at `max_bytes` (keeping
`backups` older files: path.1, path.2, ...). A full queue drops the record (counted); a disk
that fills or a path that cannot be written turns that file's logging off with one error line.
No request ever waits for, or fails because of, its log line.

Versions of a model (a reload) and models that name the same path share its writer.
"""

from __future__ import annotations

import datetime
import logging
import os
import queue
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson

from pyserver.config import PayloadLogging
from pyserver.protocol.codec import InferRequest
from pyserver.types import DataType, ModelSignature, TensorSpec

log = logging.getLogger("pyserver.monitoring")

QUEUE_RECORDS = 1024  # records waiting for the writer; more are dropped
BYTES_TENSOR_LIMIT = 64 * 1024  # bytes of one BYTES tensor copied (its framing included)

# (name, datatype name, shape, copied bytes, whether values were cut)
_Tensor = tuple[str, str, tuple[int, ...], bytes, bool]


class _Writer:
    """One log file and its thread."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.enabled = True
        self.dropped = 0
        self.written = 0
        self.users = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_RECORDS)
        self._file: BinaryIO | None = None
        self._size = 0
        self._thread = threading.Thread(target=self._run, name="pyserver-payload-log",
                                        daemon=True)
        self._thread.start()

    def submit(self, record: dict[str, Any]) -> None:
        """On the loop: never blocks."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        """Write what is queued, then stop the thread (blocks: call off the loop)."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    def flush(self) -> None:
        """Wait until every record queued so far is written (tests)."""
        self._queue.join()

    def _run(self) -> None:
        while True:
            record = self._queue.get()
            try:
                if record is None:
                    self._close_file()
                    return
                if self.enabled:
                    line = orjson.dumps(_encode(record), option=orjson.OPT_SERIALIZE_NUMPY)
                    self._write(line + b"\n")
            finally:
                self._queue.task_done()

    def _write(self, line: bytes) -> None:
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "ab")  # noqa: SIM115 (kept open between lines)
                self._size = self._file.tell()
            elif self._size > 0 and self._size + len(line) > self.max_bytes:
                self._rotate()
            assert self._file is not None
            self._file.write(line)
            self._file.flush()
            self._size += len(line)
            self.written += 1
        except OSError as exc:
            self.enabled = False
            log.error("payload logging to %s is off from now on: %s", self.path, exc)
            self._close_file()

    def _rotate(self) -> None:
        self._close_file()
        if self.backups > 0:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
            self._file = open(self.path, "ab")  # noqa: SIM115
        else:
            self._file = open(self.path, "wb")  # noqa: SIM115 (no backups: start over)
        self._size = 0

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None


_writers: dict[Path, _Writer] = {}
_writers_lock = threading.Lock()


def _acquire(settings: PayloadLogging) -> _Writer:
    path = Path(os.path.abspath(settings.path))
    with _writers_lock:
        writer = _writers.get(path)
        if writer is None:
            writer = _writers[path] = _Writer(path, settings.max_bytes, settings.backups)
        writer.users += 1
        return writer


def _release(writer: _Writer) -> None:
    with _writers_lock:
        writer.users -= 1
        if writer.users > 0:
            return
        del _writers[writer.path]
    writer.close()


class PayloadLog:
    """One model version's sampled payload log."""

    def __init__(self, settings: PayloadLogging, signature: ModelSignature, version: str
                 ) -> None:
        self.settings = settings
        self._signature = signature
        self._version = version
        self._every = settings.every
        self._count = 0
        self._writer: _Writer | None = _acquire(settings)

    @property
    def writer(self) -> _Writer:
        assert self._writer is not None
        return self._writer

    def observe(self, request: InferRequest, results: Sequence[tuple[tuple[int, ...], Any]]
                ) -> None:
        """On the loop, after a request's answer came back: log it if it is sampled."""
        count = self._count
        self._count = count + 1
        writer = self._writer
        if count % self._every or writer is None or not writer.enabled:
            return
        limit = self.settings.max_elements
        sig = self._signature
        writer.submit({
            "time": datetime.datetime.now(datetime.UTC),
            "id": request.id,
            "model": sig.name,
            "version": self._version,
            "inputs": [_copy(spec, shape, data, limit)
                       for spec, (shape, data) in zip(sig.inputs, request.inputs)],
            "outputs": [_copy(spec, shape, data, limit)
                        for spec, (shape, data) in zip(sig.outputs, results)],
        })

    def close(self) -> None:
        """Blocks until what this version queued is written (call off the loop)."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            _release(writer)


def _copy(spec: TensorSpec, shape: tuple[int, ...], data: Any, limit: int) -> _Tensor:
    """At most `limit` values of the tensor (a flat buffer of its bytes), copied; BYTES also at
    most BYTES_TENSOR_LIMIT bytes (an element cut there is dropped when written)."""
    view = memoryview(data)
    if view.format != "B":
        view = view.cast("B")
    size = spec.datatype.itemsize
    if size:
        end = min(len(view), limit * size)
    else:
        end = count = 0
        while count < limit and end + 4 <= len(view) and end < BYTES_TENSOR_LIMIT:
            end += 4 + int.from_bytes(view[end:end + 4], "little")
            count += 1
        end = min(end, len(view), BYTES_TENSOR_LIMIT)
    return (spec.name, spec.datatype.name, tuple(shape), bytes(view[:end]), end < len(view))


def _values(datatype: DataType, data: bytes) -> tuple[Any, bool]:
    """The values as JSON has them (numpy arrays, which orjson writes as the response encoder
    does: FP32 in float32's shortest form), and whether a BYTES element was cut off."""
    if datatype is DataType.BYTES:
        values: list[Any] = []
        offset = 0
        while offset + 4 <= len(data):
            length = int.from_bytes(data[offset:offset + 4], "little")
            element = data[offset + 4:offset + 4 + length]
            if len(element) < length:
                return values, True
            values.append(element.decode("utf-8", errors="replace"))
            offset += 4 + length
        return values, offset < len(data)
    if datatype is DataType.BF16:
        words = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
        return words.view(np.float32), False
    dtype = datatype.numpy
    assert dtype is not None
    return np.frombuffer(data, dtype=dtype), False


def _encode(record: dict[str, Any]) -> dict[str, Any]:
    """The record as its JSON line, on the writer thread."""
    out = dict(record)
    when: datetime.datetime = record["time"]
    out["time"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    for side in ("inputs", "outputs"):
        tensors = []
        for name, datatype, shape, data, cut in record[side]:
            dt = DataType[datatype]
            values, more = _values(dt, data)
            tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(shape),
                                      "data": values}
            if cut or more:
                tensor["truncated"] = True
            tensors.append(tensor)
        out[side] = tensors
    return out
