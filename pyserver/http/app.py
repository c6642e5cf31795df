"""The aiohttp application: KServe v2 routes over the data plane, built from the route table
(routes.py), which the OpenAPI document at /v2/openapi.json is generated from too."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from pyserver.dataplane import DataPlane
from pyserver.http.app_keys import MAX_REQUEST_SIZE
from pyserver.http.handlers import Handlers
from pyserver.http.middleware import error_middleware
from pyserver.http.monitoring_handlers import MonitoringHandlers
from pyserver.http.observability import LoggingHandlers, RenderMetrics, metrics_handler
from pyserver.http.openapi import openapi_document, served_routes
from pyserver.http.repository_handlers import RepositoryHandlers
from pyserver.http.responses import JSON
from pyserver.http.routes import aiohttp_path

DEFAULT_MAX_REQUEST_SIZE = 64 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(
    dataplane: DataPlane,
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
    render_metrics: RenderMetrics | None = None,
) -> web.Application:
    """The v2 routes; /metrics too when `render_metrics` is given."""
    # client_max_size makes aiohttp refuse a larger body with 413 before it is buffered whole.
    app = web.Application(middlewares=[error_middleware], client_max_size=max_request_size)
    app[MAX_REQUEST_SIZE] = max_request_size
    metrics = render_metrics is not None
    document = orjson.dumps(openapi_document(metrics))

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type=JSON)

    h = Handlers(dataplane, max_request_size)
    logging_handlers = LoggingHandlers(dataplane)
    repository = RepositoryHandlers(dataplane)
    monitoring = MonitoringHandlers(dataplane)
    handlers: dict[str, Handler] = {
        "live": h.live,
        "ready": h.ready,
        "server_metadata": h.server_metadata,
        "model_metadata": h.model_metadata,
        "model_ready": h.model_ready,
        "model_config": h.model_config,
        "model_stats": h.model_stats,
        "infer": h.infer,
        "log_settings": logging_handlers.get,
        "update_log_settings": logging_handlers.post,
        "openapi": openapi,
        "repository_index": repository.index,
        "load_model": repository.load,
        "unload_model": repository.unload,
        "model_monitoring": monitoring.monitoring,
    }
    if render_metrics is not None:
        handlers["metrics"] = metrics_handler(render_metrics)
    for route in served_routes(metrics):
        path, handler = aiohttp_path(route.path), handlers[route.handler]
        if route.method == "GET":
            app.router.add_get(path, handler)  # and HEAD, as HTTP has it
        else:
            app.router.add_route(route.method, path, handler)
    return app
