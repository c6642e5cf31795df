"""The aiohttp application: KServe v2 routes over the data plane."""

from __future__ import annotations

from aiohttp import web

from pyserver.dataplane import DataPlane
from pyserver.http.app_keys import MAX_REQUEST_SIZE
from pyserver.http.handlers import Handlers
from pyserver.http.middleware import error_middleware
from pyserver.http.monitoring_handlers import add_monitoring_routes
from pyserver.http.observability import RenderMetrics, add_observability_routes
from pyserver.http.repository_handlers import add_repository_routes

DEFAULT_MAX_REQUEST_SIZE = 64 * 1024 * 1024


def make_app(
    dataplane: DataPlane,
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
    render_metrics: RenderMetrics | None = None,
) -> web.Application:
    """The v2 routes; /metrics too when `render_metrics` is given."""
    # client_max_size makes aiohttp refuse a larger body with 413 before it is buffered whole.
    app = web.Application(middlewares=[error_middleware], client_max_size=max_request_size)
    app[MAX_REQUEST_SIZE] = max_request_size
    h = Handlers(dataplane, max_request_size)
    model = "/v2/models/{model}"
    version = "/v2/models/{model}/versions/{version:[0-9]+}"
    app.router.add_get("/v2/health/live", h.live)
    app.router.add_get("/v2/health/ready", h.ready)
    app.router.add_get("/v2", h.server_metadata)
    app.router.add_get("/v2/models/stats", h.model_stats)
    for prefix in (model, version):
        app.router.add_get(prefix, h.model_metadata)
        app.router.add_get(prefix + "/ready", h.model_ready)
        app.router.add_get(prefix + "/config", h.model_config)
        app.router.add_get(prefix + "/stats", h.model_stats)
        app.router.add_post(prefix + "/infer", h.infer)
    add_observability_routes(app, dataplane, render_metrics)
    add_repository_routes(app, dataplane)
    add_monitoring_routes(app, dataplane)
    return app
