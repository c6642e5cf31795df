#!/usr/bin/env python3
"""Fuzz the logging settings body (POST /v2/logging): pyserver.logs.LOGS.update on parsed JSON.

The input is the request body. Bodies that are not JSON stop where the handler stops them (its
400). One exception, so that mutations explore values rather than JSON syntax: an input whose
first byte is 0xff is a list of settings built directly (see `_structured`). The settings go to
LOGS.update, inside a sandbox: lines go to a buffer, every log_file path is
moved under a scratch folder (so the fuzzer cannot write files elsewhere; a path's shape, such as
a NUL byte, a missing folder or a folder itself, is kept), and the settings are put back after
each input.

Properties:

- update returns the new settings or raises InvalidRequest; nothing else escapes;
- a refused body changes nothing (settings and the handler are as before);
- an accepted body changes exactly the settings it names (Triton's format names mapped to
  ours), its answer (the settings as JSON) serializes, and the settings take effect: a warning
  logged afterwards appears in the console buffer or the log file exactly when log_warnings is
  on, formatted as JSON when log_format is json.
"""

from __future__ import annotations

import atexit
import io
import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from pyserver.errors import InvalidRequest
from pyserver.logs import LOGS, LogSettings

_ALIASES = {"default": "text", "ISO8601": "text"}
_PROBE = "fuzz-probe-line"
_probe_log = logging.getLogger("pyserver.fuzz")


class _Sandbox:
    def __init__(self) -> None:
        shm = Path("/dev/shm")
        self.root = Path(tempfile.mkdtemp(prefix="pyserver-fuzz-", dir=shm if shm.is_dir() else None))
        atexit.register(shutil.rmtree, self.root, True)  # libFuzzer exits without unwinding
        self.stream = io.StringIO()
        self.baseline = LogSettings()

    def reset(self) -> None:
        self.stream.seek(0)
        self.stream.truncate()
        LOGS.configure(self.baseline, stream=self.stream)

    def path(self, value: str) -> str:
        """A log_file value moved under the scratch folder ("" still means the console)."""
        if not value:
            return value
        return str(self.root) + "/" + value.lstrip("/").replace("..", "__")


_ACTIVE: _Sandbox | None = None


@contextmanager
def sandbox() -> Iterator[None]:
    """LOGS writing to a buffer while fuzzing; the process's logging restored after (as
    tests/component/test_logging.py's `captured` fixture restores it)."""
    global _ACTIVE
    root = logging.getLogger()
    level = root.level
    _ACTIVE = box = _Sandbox()
    box.reset()
    try:
        yield
    finally:
        _ACTIVE = None
        LOGS.close()
        LOGS.settings = LogSettings()
        root.setLevel(level)
        shutil.rmtree(box.root, ignore_errors=True)


def _confined(changes: Any, box: _Sandbox) -> Any:
    if isinstance(changes, dict) and isinstance(changes.get("log_file"), str):
        changes = {**changes, "log_file": box.path(changes["log_file"])}
    return changes


def _check(changes: Any, box: _Sandbox) -> None:
    before = LOGS.settings
    handler = logging.getLogger().handlers[:]
    try:
        after = LOGS.update(changes)
    except InvalidRequest:
        assert LOGS.settings == before
        assert logging.getLogger().handlers == handler
        return
    assert isinstance(changes, dict)
    expected = asdict(before)
    for key, value in changes.items():
        expected[key] = _ALIASES.get(value, value) if key == "log_format" else value
    assert asdict(after) == expected, (asdict(after), expected)
    assert LOGS.settings == after
    assert orjson.loads(orjson.dumps(LOGS.as_dict())) == expected
    # the settings take effect
    _probe_log.warning(_PROBE)
    if after.log_file:
        for h in logging.getLogger().handlers:
            h.flush()
        written = Path(after.log_file).read_text(encoding="utf-8")
    else:
        written = box.stream.getvalue()
    assert (_PROBE in written) == after.log_warnings, (after, written[-200:])
    if after.log_warnings:
        line = next(line for line in written.splitlines() if _PROBE in line)
        if after.log_format == "json":
            assert orjson.loads(line)["message"] == _PROBE
        else:
            assert line.endswith(f"WARNING pyserver.fuzz {_PROBE}"), line


_KEYS = ("log_file", "log_info", "log_warnings", "log_errors", "log_verbose_level", "log_format")
STRUCTURED = 0xFF


def _value(kind: int, payload: bytes) -> Any:
    """A JSON value of one kind made from payload bytes."""
    kind %= 8
    if kind == 0:
        return bool(payload and payload[0] & 1)
    if kind == 1:
        return int.from_bytes(payload, "little", signed=True)
    if kind == 2:
        return payload.decode("latin-1")
    if kind == 3:
        return float(int.from_bytes(payload[:8], "little")) / 7.0
    if kind == 4:
        return None
    if kind == 5:
        depth = payload[0] * 8 if payload else 1
        value: Any = []
        for _ in range(depth):
            value = [value]
        return value
    if kind == 6:
        return {payload.decode("latin-1"): 1}
    return ["text", "json", "default", "ISO8601"][payload[0] % 4] if payload else "json"


def _structured(data: bytes) -> dict[str, Any]:
    """Settings from entries of [key byte][kind byte][length byte][payload]: the key is one of
    Triton's six (or, past them, the payload itself), the value of that kind."""
    changes: dict[str, Any] = {}
    pos = 1
    while pos + 3 <= len(data):
        key_byte, kind, length = data[pos:pos + 3]
        payload = data[pos + 3:pos + 3 + length]
        pos += 3 + length
        key = _KEYS[key_byte] if key_byte < len(_KEYS) else payload.decode("latin-1")
        changes[key] = _value(kind, payload)
    return changes


def check_input(data: bytes) -> None:
    """The property function (libFuzzer's TestOneInput)."""
    if data[:1] == bytes([STRUCTURED]):
        changes: Any = _structured(data)
    else:
        try:
            changes = orjson.loads(data)
        except orjson.JSONDecodeError:
            return  # the handler answers 400 "not valid JSON" before LOGS sees it
    if _ACTIVE is None:
        with sandbox():
            check_input(data)
        return
    box = _ACTIVE
    try:
        _check(_confined(changes, box), box)
    finally:
        box.reset()
        if any(box.root.iterdir()):  # log files made by this input
            shutil.rmtree(box.root)
            box.root.mkdir()


if __name__ == "__main__":
    from _runner import run

    with sandbox():
        run(check_input)
    sys.exit(0)
