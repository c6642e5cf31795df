"""Logs: one line per event, as JSON or text, with Triton's log settings.

Settings follow Triton's logging extension (GET/POST /v2/logging): `log_info`, `log_warnings`,
`log_errors` switch those levels on and off, `log_verbose_level` > 0 turns on verbose (debug)
lines, `log_format` picks the line format and `log_file` sends the lines to a file ("" is the
console). Every line written while a request is being handled carries that request's id (the
v2 `id` it sent, or one made up for it) through a context variable that the HTTP layer sets per
request. At the default level nothing is logged per request.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import IO, Any

import orjson

from pyserver.errors import InvalidRequest

FORMATS = ("text", "json")
# Triton's log_format values: both are text lines here (whose time is ISO 8601 already).
_FORMAT_ALIASES = {"default": "text", "ISO8601": "text"}
LEVELS = ("debug", "info", "warning", "error")


class RequestContext:
    """The request being handled on this task. The id is made up only when a line needs it, so
    a request that logs nothing costs one small object."""

    __slots__ = ("_id",)

    def __init__(self, request_id: str | None = None) -> None:
        self._id = request_id

    @property
    def id(self) -> str:
        if self._id is None:
            self._id = os.urandom(8).hex()
        return self._id

    def bind(self, request_id: str) -> None:
        """Use the client's own id (the v2 request's `id`) from here on."""
        self._id = request_id


CURRENT_REQUEST: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "pyserver_request", default=None
)


def bind_request_id(request_id: str) -> None:
    """Tag the current request's log lines with the id the client gave it."""
    context = CURRENT_REQUEST.get()
    if context is not None:
        context.bind(request_id)


@dataclass(frozen=True)
class LogSettings:
    log_file: str = ""
    log_info: bool = True
    log_warnings: bool = True
    log_errors: bool = True
    log_verbose_level: int = 0
    log_format: str = "text"

    def allows(self, levelno: int) -> bool:
        if levelno >= logging.ERROR:
            return self.log_errors
        if levelno >= logging.WARNING:
            return self.log_warnings
        if levelno >= logging.INFO:
            return self.log_info
        return self.log_verbose_level > 0

    def threshold(self) -> int:
        """The lowest level any switch lets through: loggers drop lower ones before a record
        is even made (so a debug line costs one level check when verbose is off)."""
        if self.log_verbose_level > 0:
            return logging.DEBUG
        for level, on in ((logging.INFO, self.log_info), (logging.WARNING, self.log_warnings),
                          (logging.ERROR, self.log_errors)):
            if on:
                return level
        return logging.CRITICAL + 1


def settings_for_level(level: str) -> LogSettings:
    """The settings that `--log-level` names: that level and everything above it."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    rank = LEVELS.index(level)
    return LogSettings(
        log_verbose_level=1 if rank == 0 else 0,
        log_info=rank <= 1,
        log_warnings=rank <= 2,
        log_errors=True,
    )


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(record.msecs):03d}Z"


class _RequestIdFilter(logging.Filter):
    """Adds `request_id` to each record written while a request is being handled, and drops
    the levels that the settings switch off."""

    def __init__(self, logs: Logs) -> None:
        super().__init__()
        self._logs = logs

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._logs.settings.allows(record.levelno):
            return False
        if not hasattr(record, "request_id"):
            context = CURRENT_REQUEST.get()
            record.request_id = context.id if context is not None else None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id when there is one,
    and the exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [request_id] message`, the traceback (if any) on the lines after."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        tag = f" [{request_id}]" if request_id is not None else ""
        text = f"{_timestamp(record)} {record.levelname} {record.name}{tag} {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _shown(value: object) -> str:
    """A client's value as a message quotes it: short, and never an error of its own (repr()
    of data nested a thousand levels deep raises RecursionError; orjson refuses past 255)."""
    try:
        text = orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return "a value nested too deeply to show"
    return text if len(text) <= 200 else text[:197] + "..."


class Logs:
    """The process's log output: one handler on the root logger, its settings changeable while
    the server runs (from the command line at start, from POST /v2/logging later)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.settings = LogSettings()
        self._handler: logging.Handler | None = None
        self._stream: IO[str] | None = None

    def configure(self, settings: LogSettings, stream: IO[str] | None = None) -> None:
        """Install the handler with these settings; `stream` replaces stderr (tests)."""
        with self._lock:
            self._stream = stream
            self._apply(settings, reopen=True)

    def update(self, changes: object) -> LogSettings:
        """Apply a POST /v2/logging body: only the settings it names change. A bad body
        changes nothing and raises InvalidRequest saying what was wrong."""
        if not isinstance(changes, dict):
            raise InvalidRequest("log settings must be a JSON object, e.g. {\"log_info\": true}")
        values: dict[str, Any] = {}
        for key, value in changes.items():
            if key in ("log_info", "log_warnings", "log_errors"):
                if not isinstance(value, bool):
                    raise InvalidRequest(f"log setting '{key}' must be a boolean, got {_shown(value)}")
            elif key == "log_verbose_level":
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
                    raise InvalidRequest(
                        "log setting 'log_verbose_level' must be an integer >= 0 (below 2**32), "
                        f"got {_shown(value)}"
                    )
            elif key == "log_format":
                value = _FORMAT_ALIASES.get(value, value) if isinstance(value, str) else value
                if value not in FORMATS:
                    raise InvalidRequest(
                        f"log setting 'log_format' must be one of {', '.join(FORMATS)} "
                        f"(or Triton's default, ISO8601), got {_shown(changes[key])}"
                    )
            elif key == "log_file":
                if not isinstance(value, str):
                    raise InvalidRequest(f"log setting 'log_file' must be a string, got {_shown(value)}")
            else:
                known = ", ".join(LogSettings.__dataclass_fields__)
                shown = key if len(str(key)) <= 100 else str(key)[:97] + "..."
                raise InvalidRequest(f"unknown log setting '{shown}' (known: {known})")
            values[key] = value
        with self._lock:
            new = replace(self.settings, **values)
            self._apply(new, reopen=new.log_file != self.settings.log_file
                        or new.log_format != self.settings.log_format)
            return self.settings

    def as_dict(self) -> dict[str, Any]:
        return asdict(self.settings)

    def _apply(self, settings: LogSettings, reopen: bool) -> None:
        # self._lock is held.
        root = logging.getLogger()
        if reopen or self._handler is None:
            handler = self._open(settings)
            if self._handler is not None:
                root.removeHandler(self._handler)
                self._handler.close()
            root.addHandler(handler)
            self._handler = handler
        self.settings = settings
        root.setLevel(settings.threshold())

    def _open(self, settings: LogSettings) -> logging.Handler:
        handler: logging.Handler
        if settings.log_file:
            try:
                handler = logging.FileHandler(settings.log_file, encoding="utf-8")
            except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
                shown = _shown(settings.log_file)
                raise InvalidRequest(f"cannot open log_file {shown}: {exc}") from None
        else:
            handler = logging.StreamHandler(self._stream if self._stream is not None else sys.stderr)
        handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
        handler.addFilter(_RequestIdFilter(self))
        return handler

    def close(self) -> None:
        with self._lock:
            if self._handler is not None:
                logging.getLogger().removeHandler(self._handler)
                self._handler.close()
                self._handler = None


LOGS = Logs()
"""The process's logs: logging is process-wide, so its settings are too."""
