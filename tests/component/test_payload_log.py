"""Sampled payload logging ([monitoring] log_payloads) through a real server: the sampled
requests as v2 JSON lines, values cut beyond max_elements, rotation, and a path that cannot be
written or a disk that is full turning logging off with one error line while every request is
still answered."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pyserver import payload_log
from tests.component.test_monitoring import HELD_OUT, infer
from tests.conftest import ENGINES, RunningServer


def digits_logging(root: Path, name: str, settings: str) -> None:
    shutil.copytree(ENGINES / "digits", root / name)
    config = (root / name / "config.toml").read_text()
    config = config.replace("window_seconds = 300", f"window_seconds = 300\nlog_payloads = {{ {settings} }}")
    (root / name / "config.toml").write_text(config)


def written(path: Path, lines: int) -> list[dict[str, Any]]:
    """The log's lines once `lines` of them are there (the writer thread is not waited on by
    the requests)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if path.is_file():
            text = path.read_text()
            if text.count("\n") >= lines:
                return [json.loads(line) for line in text.splitlines()]
        time.sleep(0.02)
    pytest.fail(f"{path} did not get {lines} lines in 10 s")


def flush_all() -> None:
    for writer in list(payload_log._writers.values()):
        writer.flush()


def test_sampled_requests_are_logged_as_v2_json(tmp_path: Path, serve_repository: Any) -> None:
    log = tmp_path / "logs" / "digits.jsonl"
    digits_logging(tmp_path / "repo", "logged", f'every = 2, path = "{log}", max_elements = 10')
    server: RunningServer = serve_repository(tmp_path / "repo")
    answers = [infer(server, "logged", HELD_OUT[i:i + 1], id=f"r{i}") for i in range(5)]
    lines = written(log, 3)
    assert [line["id"] for line in lines] == ["r0", "r2", "r4"]  # the first, then every 2nd
    for line, i in zip(lines, (0, 2, 4)):
        assert (line["model"], line["version"]) == ("logged", "1")
        assert line["time"].endswith("Z")
        (pixels,) = line["inputs"]
        assert pixels == {"name": "pixels", "datatype": "FP32", "shape": [1, 64],
                          "data": HELD_OUT[i, :10].tolist(), "truncated": True}
        label, probabilities = line["outputs"]
        answer = {o["name"]: o for o in answers[i]["outputs"]}
        assert label == {"name": "label", "datatype": "INT64", "shape": [1, 1],
                         "data": answer["label"]["data"]}
        assert probabilities["data"] == answer["probabilities"]["data"]
        assert "truncated" not in probabilities  # 10 values: all of them
    # Without sampling, nothing else was written.
    time.sleep(0.1)
    assert log.read_text().count("\n") == 3


def test_the_file_rotates(tmp_path: Path, serve_repository: Any) -> None:
    log = tmp_path / "rotating.jsonl"
    digits_logging(tmp_path / "repo", "rotating",
                   f'every = 1, path = "{log}", max_bytes = 4096, backups = 2')
    server: RunningServer = serve_repository(tmp_path / "repo")
    for i in range(12):  # about 1.3 KB a line: 3 lines a file
        infer(server, "rotating", HELD_OUT[i:i + 1], id=f"r{i}")
    flush_all()
    files = sorted(p.name for p in tmp_path.glob("rotating.jsonl*"))
    assert files == ["rotating.jsonl", "rotating.jsonl.1", "rotating.jsonl.2"]
    sizes = [p.stat().st_size for p in tmp_path.glob("rotating.jsonl*")]
    assert all(0 < size <= 4096 for size in sizes), sizes
    ids = [json.loads(line)["id"] for name in reversed(files)
           for line in (tmp_path / name).read_text().splitlines()]
    assert ids == [f"r{i}" for i in range(12 - len(ids), 12)]  # the newest, in order


@pytest.mark.parametrize("where", ["under-a-file", "full-disk"])
def test_a_failing_path_turns_logging_off_and_requests_succeed(
    tmp_path: Path, serve_repository: Any, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    if where == "full-disk":
        if not Path("/dev/full").exists():
            pytest.skip("no /dev/full (a device whose writes fail with ENOSPC) here")
        path = Path("/dev/full")
    else:
        (tmp_path / "a-file").write_text("not a folder")
        path = tmp_path / "a-file" / "log.jsonl"
    digits_logging(tmp_path / "repo", "failing", f'every = 1, path = "{path}"')
    server: RunningServer = serve_repository(tmp_path / "repo")
    with caplog.at_level(logging.ERROR, logger="pyserver.monitoring"):
        for i in range(10):
            answer = infer(server, "failing", HELD_OUT[i:i + 1])
            assert answer["outputs"][0]["data"] == [int(np.argmax(
                np.array(answer["outputs"][1]["data"])))]
        flush_all()
    errors = [r for r in caplog.records if r.name == "pyserver.monitoring"]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert f"payload logging to {path} is off from now on" in errors[0].getMessage()
    writer = payload_log._writers[path]
    assert writer.enabled is False and writer.written == 0
