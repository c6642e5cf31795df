"""Observability over HTTP: /metrics (Prometheus text) and /v2/logging (Triton's logging
extension); make_app routes them from the route table (routes.py). Each request's log lines get
their id in the one middleware (middleware.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from pyserver.dataplane import DataPlane
from pyserver.errors import InvalidRequest
from pyserver.http.app_keys import MAX_REQUEST_SIZE
from pyserver.http.middleware import error_middleware
from pyserver.http.responses import json_response

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RenderMetrics = Callable[[], bytes]


def metrics_handler(render: RenderMetrics) -> Handler:
    async def metrics(request: web.Request) -> web.Response:
        # Reading the core's atomics and formatting a few hundred lines: well under a
        # millisecond, so it stays on the loop.
        return web.Response(body=render(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    return metrics


class LoggingHandlers:
    """GET and POST /v2/logging, as Triton's logging extension defines them."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dp = dataplane

    async def get(self, request: web.Request) -> web.Response:
        return json_response(self._dp.log_settings())

    async def post(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            changes = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"log settings are not valid JSON: {exc}") from None
        return json_response(self._dp.update_log_settings(changes))


def make_metrics_app(render_metrics: RenderMetrics, max_request_size: int) -> web.Application:
    """The separate metrics port's application: /metrics and nothing else."""
    app = web.Application(middlewares=[error_middleware], client_max_size=max_request_size)
    app[MAX_REQUEST_SIZE] = max_request_size
    app.router.add_get("/metrics", metrics_handler(render_metrics))
    return app
