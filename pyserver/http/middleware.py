"""The one middleware: failures become HTTP responses ({"error": message} with its status), and
every log line written while a request is handled carries its request id.

One middleware, not two: aiohttp wraps the handler in each middleware on every request, and a
second layer cost ~5% of identity's throughput at concurrency 16."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from pyserver.errors import ServerError
from pyserver.http.app_keys import MAX_REQUEST_SIZE
from pyserver.http.responses import error_response
from pyserver.logs import CURRENT_REQUEST, RequestContext

log = logging.getLogger("pyserver.http")
request_log = logging.getLogger("pyserver.http.request")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_MESSAGES = {
    404: "no such endpoint: {method} {path}",
    405: "method {method} is not allowed on {path}",
    413: "request body is larger than the limit of {limit} bytes",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The request's context (its log lines' id: the v2 `id` once the body is decoded, a made-up
    one before or without it) around its answer; one line per request only at verbose (debug)
    level."""
    token = CURRENT_REQUEST.set(RequestContext())
    try:
        if not request_log.isEnabledFor(logging.DEBUG):
            return await _answer(request, handler)
        started = time.monotonic_ns()
        response = await _answer(request, handler)
        request_log.debug("%s %s -> %d in %.3f ms", request.method, request.path,
                          response.status, (time.monotonic_ns() - started) / 1e6)
        return response
    finally:
        CURRENT_REQUEST.reset(token)


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServerError as exc:
        return error_response(str(exc), exc.http_status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        template = _HTTP_MESSAGES.get(exc.status)
        if template is not None:
            message = template.format(
                method=request.method,
                path=request.path,
                limit=request.app[MAX_REQUEST_SIZE],
            )
        else:
            message = exc.text or exc.reason
        response = error_response(message, exc.status)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception as exc:  # a bug: answer 500 and keep serving
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response(f"internal error: {type(exc).__name__}: {exc}", 500)
