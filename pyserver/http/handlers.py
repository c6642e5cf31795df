"""HTTP handlers for the KServe v2 endpoints. Each one reads the request, calls the data plane,
and writes the answer; errors are raised and the middleware answers them."""

from __future__ import annotations

import time

from aiohttp import web

from pyserver.dataplane import DataPlane
from pyserver.errors import ServerError
from pyserver.http.responses import infer_response, json_response
from pyserver.protocol.codec import decode_request, encode_response
from pyserver.protocol.compression import compress, decompress

HEADER_LENGTH = "Inference-Header-Content-Length"
# Smaller answers go uncompressed whatever Accept-Encoding says (identity is always acceptable):
# compressing a few hundred bytes costs more CPU than it saves on the wire.
COMPRESS_FROM = 1024


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
        started = time.monotonic_ns()
        info = request.match_info
        model = self._dp.model(info["model"], info.get("version"))
        # The body is read once; binary tensors stay views into it until the core's gather.
        body = await request.read()
        headers = request.headers
        try:
            encoding = headers.get("Content-Encoding")
            if encoding is not None:
                body = decompress(body, encoding, self._max_request_size)
            decoded = decode_request(body, headers.get(HEADER_LENGTH), model.signature)
        except ServerError:
            model.record_failure(started)
            raise
        results = await self._dp.infer(model, decoded)
        chunks, json_length = encode_response(model.signature, model.version_str, decoded, results)
        accept = headers.get("Accept-Encoding")
        if accept is not None and sum(memoryview(c).nbytes for c in chunks) >= COMPRESS_FROM:
            compressed, used = compress(chunks, accept)
            return infer_response(compressed, json_length, used)
        return infer_response(chunks, json_length)
