"""Logs over real HTTP: Triton's /v2/logging reads and changes the settings, every line about a
request carries its id, and nothing is logged per request at the default level."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from pyserver.logs import LOGS, LogSettings
from tests.component.test_metrics import binary_infer, get, json_infer, post
from tests.conftest import RunningServer


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The server's log lines (JSON), in a buffer; the process's logging restored after."""
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    LOGS.configure(LogSettings(log_format="json"), stream=stream)
    try:
        yield stream
    finally:
        LOGS.close()
        LOGS.settings = LogSettings()
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def set_logging(server: RunningServer, body: object) -> tuple[int, dict[str, object]]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", "/v2/logging", body=json.dumps(body).encode()
                     if not isinstance(body, bytes) else body)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_logging_extension_is_listed_and_reads_settings(server: RunningServer, captured: io.StringIO) -> None:
    meta = json.loads(get(server.port, "/v2")[2])
    assert "logging" in meta["extensions"] and "statistics" in meta["extensions"]
    status, _, body = get(server.port, "/v2/logging")
    assert status == 200
    assert json.loads(body) == {"log_file": "", "log_info": True, "log_warnings": True,
                                "log_errors": True, "log_verbose_level": 0, "log_format": "json"}


def test_no_request_lines_at_the_default_level(server: RunningServer, captured: io.StringIO) -> None:
    for _ in range(5):
        assert binary_infer(server.port, "identity", 1) == 200
    assert json_infer(server.port, "identity", [1, 15]) == 400
    assert lines(captured) == []


def test_verbose_lines_carry_the_request_id(server: RunningServer, captured: io.StringIO) -> None:
    status, settings = set_logging(server, {"log_verbose_level": 1})
    assert status == 200 and settings["log_verbose_level"] == 1 and settings["log_info"] is True

    body = json.dumps({"id": "req-42", "inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": list(range(16))}]})
    assert post(server.port, "/v2/models/identity/infer", body.encode()) == 200
    assert binary_infer(server.port, "identity", 1) == 200  # no v2 id: one is made up

    requests = [line for line in lines(captured) if line["logger"] == "pyserver.http.request"]
    infers = [line for line in requests if "/infer" in str(line["message"])]
    assert len(infers) == 2, requests
    assert infers[0]["request_id"] == "req-42" and infers[0]["level"] == "DEBUG"
    assert "-> 200" in str(infers[0]["message"])
    assert re.fullmatch(r"[0-9a-f]{16}", str(infers[1]["request_id"]))

    status, settings = set_logging(server, {"log_verbose_level": 0})
    assert status == 200 and settings["log_verbose_level"] == 0
    before = len(lines(captured))
    assert binary_infer(server.port, "identity", 1) == 200
    assert len(lines(captured)) == before


def test_levels_switch_independently(server: RunningServer, captured: io.StringIO) -> None:
    status, settings = set_logging(server, {"log_info": False, "log_format": "text"})
    assert status == 200 and settings == {
        "log_file": "", "log_info": False, "log_warnings": True, "log_errors": True,
        "log_verbose_level": 0, "log_format": "text"}
    log = logging.getLogger("pyserver.test")
    log.info("hidden")
    log.warning("shown")
    text = captured.getvalue()
    assert "hidden" not in text
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING pyserver.test shown$", text, re.M)
    status, settings = set_logging(server, {"log_format": "default"})  # Triton's name for it
    assert status == 200 and settings["log_format"] == "text"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{nope", "not valid JSON"),
        (b"[1]", "JSON object"),
        ({"log_info": "yes"}, "'log_info' must be a boolean"),
        ({"log_verbose_level": -1}, "integer >= 0"),
        ({"log_verbose_level": True}, "integer >= 0"),
        ({"log_format": "xml"}, "'log_format' must be one of text, json"),
        ({"log_file": 3}, "'log_file' must be a string"),
        ({"log_file": "/nonexistent-dir/x.log"}, "cannot open log_file"),
        ({"log_colour": True}, "unknown log setting 'log_colour'"),
        ({"log_info": False, "bogus": 1}, "unknown log setting 'bogus'"),
    ],
)
def test_bad_settings_get_400_and_change_nothing(
    server: RunningServer, captured: io.StringIO, body: object, fragment: str
) -> None:
    before = json.loads(get(server.port, "/v2/logging")[2])
    status, answer = set_logging(server, body)
    assert status == 400
    assert fragment in str(answer["error"])
    assert json.loads(get(server.port, "/v2/logging")[2]) == before


def test_log_file(server: RunningServer, captured: io.StringIO, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "server.log"
    status, settings = set_logging(server, {"log_file": str(path), "log_verbose_level": 1})
    assert status == 200 and settings["log_file"] == str(path)
    body = json.dumps({"id": "to-file", "inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": list(range(16))}]})
    assert post(server.port, "/v2/models/identity/infer", body.encode()) == 200
    assert set_logging(server, {"log_file": ""})[0] == 200
    written = [json.loads(line) for line in path.read_text().splitlines()]
    assert any(line.get("request_id") == "to-file" for line in written)
