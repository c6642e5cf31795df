"""The HTTP routes: the route table (routes.py), which the OpenAPI document at /v2/openapi.json
is generated from too, bound to the handlers, for pyserver's HTTP server (protocol.py)."""

from __future__ import annotations

import orjson

from pyserver.access import AccessPolicy
from pyserver.dataplane import DataPlane
from pyserver.http.handlers import Handlers, RenderMetrics, metrics_handler
from pyserver.http.infer import InferStream
from pyserver.http.openapi import openapi_document, served_routes
from pyserver.http.protocol import (
    DEFAULT_MAX_REQUEST_SIZE,
    Slot,
    StreamHandler,
    StreamRoute,
    stream,
)
from pyserver.http.router import Router
from pyserver.http.routes import router_path
from pyserver.http.wire import JSON, Request, Response

__all__ = ["DEFAULT_MAX_REQUEST_SIZE", "make_metrics_router", "make_router"]


def make_router(
    dataplane: DataPlane,
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
    render_metrics: RenderMetrics | None = None,
    access: AccessPolicy | None = None,
) -> Router:
    """The v2 routes; /metrics too when `render_metrics` is given. A route whose API group
    `access` restricts checks the request's header first (403 without it, before the body is
    read for inference)."""
    metrics = render_metrics is not None
    document = orjson.dumps(openapi_document(metrics))

    async def openapi(request: Request) -> Response:
        return Response(200, document, JSON)

    # Route.handler names a method of Handlers, or one of these.
    h = Handlers(dataplane)
    own: dict[str, object] = {
        "infer": stream(InferStream(dataplane, max_request_size)), "openapi": openapi,
    }
    if render_metrics is not None:
        own["metrics"] = metrics_handler(render_metrics)
    router = Router()
    for route in served_routes(metrics):
        handler = own.get(route.handler) or getattr(h, route.handler)
        if access is not None and route.group and access.restricted(route.group):
            handler = _guarded(handler, route.group, access)
        router.add(route.method, router_path(route.path), handler)
    return router


def _guarded(handler: object, group: str, access: AccessPolicy) -> object:
    """The handler behind the group's check."""
    if isinstance(handler, StreamRoute):
        return stream(_GuardedStream(handler.stream, group, access))

    async def guarded(request: Request) -> Response:
        access.check_mapping(group, request.headers)
        return await handler(request)  # type: ignore[operator, no-any-return]

    return guarded


class _GuardedStream:
    def __init__(self, inner: StreamHandler, group: str, access: AccessPolicy) -> None:
        self._inner, self._group, self._access = inner, group, access

    def begin(self, slot: Slot, match_info: dict[str, str], headers: dict[str, str]) -> object:
        self._access.check_mapping(self._group, headers)
        return self._inner.begin(slot, match_info, headers)

    def finish(self, slot: Slot, state: object, body: bytes, headers: dict[str, str]) -> None:
        self._inner.finish(slot, state, body, headers)

    def abort(self, slot: Slot, state: object) -> None:
        self._inner.abort(slot, state)


def make_metrics_router(render_metrics: RenderMetrics) -> Router:
    """The separate metrics port: /metrics and nothing else."""
    return Router([("GET", "/metrics", metrics_handler(render_metrics))])
