"""The HTTP routes: the route table (routes.py), which the OpenAPI document at /v2/openapi.json
is generated from too, bound to the handlers, for pyserver's HTTP server (protocol.py)."""

from __future__ import annotations

import orjson

from pyserver.dataplane import DataPlane
from pyserver.http.handlers import Handler, Handlers, RenderMetrics, metrics_handler
from pyserver.http.infer import InferStream
from pyserver.http.openapi import openapi_document, served_routes
from pyserver.http.protocol import stream
from pyserver.http.router import Router
from pyserver.http.routes import aiohttp_path
from pyserver.http.wire import JSON, Request, Response

DEFAULT_MAX_REQUEST_SIZE = 64 * 1024 * 1024


def make_router(
    dataplane: DataPlane,
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
    render_metrics: RenderMetrics | None = None,
) -> Router:
    """The v2 routes; /metrics too when `render_metrics` is given."""
    metrics = render_metrics is not None
    document = orjson.dumps(openapi_document(metrics))

    async def openapi(request: Request) -> Response:
        return Response(200, document, JSON)

    h = Handlers(dataplane)
    handlers: dict[str, Handler | object] = {
        name: getattr(h, name) for name in (
            "live", "ready", "server_metadata", "model_metadata", "model_ready", "model_config",
            "model_stats", "model_monitoring", "log_settings", "update_log_settings",
            "repository_index", "load_model", "unload_model",
        )
    }
    handlers["infer"] = stream(InferStream(dataplane, max_request_size))
    handlers["openapi"] = openapi
    if render_metrics is not None:
        handlers["metrics"] = metrics_handler(render_metrics)
    router = Router()
    for route in served_routes(metrics):
        router.add(route.method, aiohttp_path(route.path), handlers[route.handler])
    return router


def make_metrics_router(render_metrics: RenderMetrics) -> Router:
    """The separate metrics port: /metrics and nothing else."""
    return Router([("GET", "/metrics", metrics_handler(render_metrics))])
