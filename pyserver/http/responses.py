"""Response bodies: JSON through orjson, and inference answers written from the output views."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import payload, web
from aiohttp.abc import AbstractStreamWriter

from pyserver.protocol.codec import encode_error

# Below this many bytes one join beats several socket writes: a small memcpy costs less than a
# syscall per chunk. Above it, chunks go to the socket straight from the output views.
JOIN_BELOW = 64 * 1024

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"


class ChunksPayload(payload.Payload):
    """A body made of several bytes-like chunks (the JSON header, then each output's view),
    written in order without joining them."""

    _autoclose = True

    def __init__(self, chunks: Sequence[Any], size: int, content_type: str) -> None:
        super().__init__(chunks, content_type=content_type)
        self._chunks = chunks
        self._size = size

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._chunks).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        for chunk in self._chunks:
            # As a flat byte memoryview: the writer tests its chunks for truth, which a numpy
            # output view does not answer.
            await writer.write(memoryview(chunk).cast("B"))


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status, content_type=JSON)


def error_response(message: str, status: int) -> web.Response:
    return web.Response(body=encode_error(message), status=status, content_type=JSON)


def body_size(chunks: Sequence[Any]) -> int:
    return sum(memoryview(c).nbytes for c in chunks)


def infer_response(
    chunks: Sequence[Any], size: int, header_length: int | None, encoding: str | None = None
) -> web.Response:
    """The answer to an inference: binary when header_length is set, else plain JSON. `size` is
    the chunks' total bytes (body_size); `encoding`, when given, says the chunks were already
    compressed with it."""
    headers = {}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
        content_type = OCTET_STREAM
    else:
        content_type = JSON
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    if len(chunks) == 1:
        body: Any = chunks[0]
    elif size < JOIN_BELOW:
        body = b"".join(chunks)
    else:
        response = web.Response(headers=headers)
        response.body = ChunksPayload(chunks, size, content_type)
        return response
    if isinstance(body, (bytes, bytearray)):
        return web.Response(body=body, headers=headers, content_type=content_type)
    # a single large view (e.g. a compressed body): no copy, no ResourceWarning
    response = web.Response(headers=headers)
    response.body = ChunksPayload([body], size, content_type)
    return response
