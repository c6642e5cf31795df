"""HTTP/1.1 messages as pyserver's server reads and writes them: a request (already parsed and
with its whole body) and a response (status, headers, body chunks), written as bytes.

Sans-IO: nothing here touches a socket. pyserver/http/protocol.py feeds requests in and writes
the bytes `Response.head` and `Response.chunks` give.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Any

import orjson

from pyserver.protocol.codec import encode_error

JSON = b"application/json"
OCTET_STREAM = b"application/octet-stream"

# Status lines, made once: "HTTP/1.1 200 OK\r\n"
_STATUS_LINES: dict[int, bytes] = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus
}
_STATUS_LINES[499] = b"HTTP/1.1 499 Client Closed Request\r\n"


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else f"HTTP/1.1 {status} Unknown\r\n".encode()


# The status line and Content-Type of the answers written so far, by (status, content type).
_HEADS: dict[tuple[int, bytes | None], bytes] = {}


class Request:
    """One parsed request with its whole body. `headers` maps lower-case names to values
    (latin-1 text; a repeated header's values joined with ", ", as RFC 9110 allows)."""

    __slots__ = ("body", "headers", "match_info", "method", "path")

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes,
                 match_info: dict[str, str] | None = None) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.match_info = match_info or {}


class Response:
    """Status, extra headers and body chunks (bytes-like, written in order without joining).
    Content-Length is added when the head is written."""

    __slots__ = ("chunks", "content_type", "headers", "size", "status")

    def __init__(self, status: int = 200, body: bytes | bytearray | Sequence[Any] = b"",
                 content_type: bytes | None = None,
                 headers: Sequence[tuple[str, str]] = (), size: int | None = None) -> None:
        self.status = status
        if isinstance(body, (bytes, bytearray)):
            self.chunks: Sequence[Any] = (body,) if len(body) else ()
            self.size = len(body) if size is None else size
        else:
            chunks: Sequence[Any] = body
            self.chunks = chunks
            self.size = size if size is not None else sum(memoryview(c).nbytes for c in chunks)
        self.content_type = content_type
        self.headers = headers

    def head(self, keep_alive: bool) -> bytes:
        key = (self.status, self.content_type)
        start = _HEADS.get(key)
        if start is None:
            start = status_line(self.status)
            if self.content_type is not None:
                start += b"Content-Type: " + self.content_type + b"\r\n"
            if len(_HEADS) < 256:
                _HEADS[key] = start
        extra = b"".join(f"{name}: {value}\r\n".encode("latin-1")
                         for name, value in self.headers) if self.headers else b""
        end = b"Content-Length: %d\r\n\r\n" % self.size
        return b"".join((start, extra, end if keep_alive else b"Connection: close\r\n" + end))


# A route's handler (everything but inference, which protocol.py's StreamHandler answers).
Handler = Callable[[Request], Awaitable[Response]]


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(value), JSON)


def error_response(message: str, status: int, headers: Sequence[tuple[str, str]] = ()) -> Response:
    return Response(status, encode_error(message), JSON, headers)


def empty_response(status: int) -> Response:
    return Response(status)
