"""HTTP handlers for the KServe v2 endpoints. Each one reads the request, calls the data plane,
and writes the answer; errors are raised and the middleware answers them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from pyserver.dataplane import Admission, DataPlane
from pyserver.errors import InvalidRequest, PayloadTooLarge, ServerError
from pyserver.http.responses import body_size, infer_response, json_response
from pyserver.logs import bind_request_id
from pyserver.protocol.codec import InferRequest, decode_request, encode_response
from pyserver.protocol.compression import compress, decompress
from pyserver.types import ModelSignature

HEADER_LENGTH = "Inference-Header-Content-Length"
# Smaller answers go uncompressed whatever Accept-Encoding says (identity is always acceptable):
# compressing a few hundred bytes costs more CPU than it saves on the wire.
COMPRESS_FROM = 1024
# (De)compressing more than this runs in a worker thread rather than on the event loop.
OFF_LOOP_FROM = 256 * 1024

_T = TypeVar("_T")


def _status(ok: bool) -> web.Response:
    # v2 health and readiness: the status says it; the body is empty.
    return web.Response(status=200 if ok else 400)


class Handlers:
    def __init__(self, dataplane: DataPlane, max_request_size: int) -> None:
        self._dp = dataplane
        self._max_request_size = max_request_size

    async def live(self, request: web.Request) -> web.Response:
        return _status(self._dp.live())

    async def ready(self, request: web.Request) -> web.Response:
        return _status(self._dp.ready())

    async def server_metadata(self, request: web.Request) -> web.Response:
        return json_response(self._dp.server_metadata())

    async def model_metadata(self, request: web.Request) -> web.Response:
        info = request.match_info
        return json_response(self._dp.model_metadata(info["model"], info.get("version")))

    async def model_ready(self, request: web.Request) -> web.Response:
        info = request.match_info
        return _status(self._dp.model_ready(info["model"], info.get("version")))

    async def model_config(self, request: web.Request) -> web.Response:
        info = request.match_info
        return json_response(self._dp.model_config(info["model"], info.get("version")))

    async def model_stats(self, request: web.Request) -> web.Response:
        info = request.match_info
        return json_response(self._dp.model_stats(info.get("model"), info.get("version")))

    async def infer(self, request: web.Request) -> web.Response:
        info = request.match_info
        # Admitted (or refused, e.g. for a full queue) before the body is read; the version
        # counts the request as accepted until its answer is made.
        with self._dp.admit(info["model"], info.get("version")) as admission:
            return await self._infer(request, admission)

    async def _infer(self, request: web.Request, admission: Admission) -> web.Response:
        # The body is read once; binary tensors stay views into it until the core's gather.
        body = await read_body(request, self._max_request_size)
        headers = request.headers
        encoding = headers.get("Content-Encoding")
        if encoding is not None:
            try:
                body = await _off_loop_if_large(
                    len(body), decompress, body, encoding, self._max_request_size
                )
            except ServerError:
                admission.fail()
                raise
        header_length = headers.get(HEADER_LENGTH)

        def decode(signature: ModelSignature) -> InferRequest:
            decoded = decode_request(body, header_length, signature)
            if decoded.id is not None:
                bind_request_id(decoded.id)  # this request's log lines carry the client's id
            return decoded

        response = await self._dp.infer(admission, decode)
        chunks, json_length = encode_response(
            response.signature, response.model_version, response.request, response.results
        )
        size = body_size(chunks)
        accept = headers.get("Accept-Encoding")
        if accept is not None and size >= COMPRESS_FROM:
            compressed, used = await _off_loop_if_large(size, compress, chunks, accept)
            if used is not None:
                return infer_response(compressed, body_size(compressed), json_length, used)
        return infer_response(chunks, size, json_length)


async def read_body(request: web.Request, max_size: int) -> bytes:
    """The request body, copied once: the parser's chunks are joined into one bytes object
    (aiohttp's read() joins into a bytearray and then copies that again). A body that arrived
    in one chunk is used as it is, with no copy at all. Memory grows with the bytes that
    actually arrive, never with what Content-Length merely claims."""
    length = request.content_length
    if length is None:  # chunked transfer: aiohttp enforces client_max_size as it reads
        return await request.read()
    if length > max_size:
        raise PayloadTooLarge(
            f"request body is larger than the limit of {max_size} bytes ({length} bytes)"
        )
    stream = request.content
    first = await stream.readany()
    if len(first) == length:
        return first
    chunks = [first]
    received = len(first)
    while received < length:
        chunk = await stream.readany()
        if not chunk:
            raise InvalidRequest(f"request body ended after {received} of {length} bytes")
        chunks.append(chunk)
        received += len(chunk)
    if received > length:
        raise InvalidRequest(f"request body is longer than its Content-Length {length}")
    return b"".join(chunks)


async def _off_loop_if_large(size: int, fn: Callable[..., _T], *args: Any) -> _T:
    """Run fn here when the data is small, in a worker thread when it is large: zlib releases
    the GIL, and the loop keeps serving other requests meanwhile."""
    if size < OFF_LOOP_FROM:
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
