"""HTTP handlers for everything but inference (pyserver/http/infer.py): each reads the request,
calls the data plane and returns the answer; errors are raised and the protocol answers them
({"error": message} with the error's status).

    health, metadata, config, statistics     KServe v2 and Triton's extensions
    /v2/logging                              Triton's logging extension (GET, POST)
    /v2/repository/...                       Triton's model repository extension; a
                                             `version` parameter on load/unload is
                                             pyserver's own (one version beside the others)
    .../monitoring                           pyserver's own: the model's inputs and outputs
    /metrics, /v2/openapi.json
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from pyserver.dataplane import DataPlane
from pyserver.errors import InvalidRequest
from pyserver.http.wire import Handler, Request, Response, empty_response, json_response
from pyserver.repository import decode_files

RenderMetrics = Callable[[], bytes]
METRICS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def _status(ok: bool) -> Response:
    # v2 health and readiness: the status says it; the body is empty.
    return empty_response(200 if ok else 400)


def _json_body(request: Request, what: str) -> Any:
    try:
        return orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"{what} is not valid JSON: {exc}") from None


class Handlers:
    def __init__(self, dataplane: DataPlane) -> None:
        self._dp = dataplane

    # health and metadata
    async def live(self, request: Request) -> Response:
        return _status(self._dp.live())

    async def ready(self, request: Request) -> Response:
        return _status(self._dp.ready())

    async def server_metadata(self, request: Request) -> Response:
        return json_response(self._dp.server_metadata())

    async def model_metadata(self, request: Request) -> Response:
        info = request.match_info
        return json_response(self._dp.model_metadata(info["model"], info.get("version")))

    async def model_ready(self, request: Request) -> Response:
        info = request.match_info
        return _status(self._dp.model_ready(info["model"], info.get("version")))

    async def model_config(self, request: Request) -> Response:
        info = request.match_info
        return json_response(self._dp.model_config(info["model"], info.get("version")))

    async def model_stats(self, request: Request) -> Response:
        info = request.match_info
        return json_response(self._dp.model_stats(info.get("model"), info.get("version")))

    async def model_monitoring(self, request: Request) -> Response:
        # A snapshot of the core's counts and a few hundred numbers to format: on the loop.
        info = request.match_info
        return json_response(self._dp.model_monitoring(info["model"], info.get("version")))

    # logging
    async def log_settings(self, request: Request) -> Response:
        return json_response(self._dp.log_settings())

    async def update_log_settings(self, request: Request) -> Response:
        changes = _json_body(request, "the log settings body")
        return json_response(self._dp.update_log_settings(changes))

    # model repository
    async def repository_index(self, request: Request) -> Response:
        doc = _object_body(request)
        ready = doc.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidRequest("'ready' must be true or false")
        return json_response(self._dp.repository_index(ready))

    async def load_model(self, request: Request) -> Response:
        params = _parameters(_object_body(request), ("config", "version"), files=True)
        config = params.get("config")
        if config is not None and not isinstance(config, str):
            # Triton takes the config as a JSON string; an object is accepted as well.
            if not isinstance(config, dict):
                raise InvalidRequest("parameter 'config' must be the model configuration as JSON")
            config = orjson.dumps(config).decode()
        await self._dp.load_model(request.match_info["model"], config, decode_files(params),
                                  _version(params))
        return empty_response(200)

    async def unload_model(self, request: Request) -> Response:
        params = _parameters(_object_body(request), ("unload_dependents", "version"),
                             files=False)
        dependents = params.get("unload_dependents", False)
        if not isinstance(dependents, bool):
            raise InvalidRequest("parameter 'unload_dependents' must be true or false")
        await self._dp.unload_model(request.match_info["model"], dependents, _version(params))
        return empty_response(200)


def _object_body(request: Request) -> dict[str, Any]:
    """A repository request's JSON object (an empty body is {})."""
    if not request.body.strip():
        return {}
    doc = _json_body(request, "the request body")
    if not isinstance(doc, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return doc


def _parameters(doc: dict[str, Any], allowed: tuple[str, ...], files: bool) -> dict[str, Any]:
    params = doc.get("parameters", {})
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidRequest("'parameters' must be a JSON object")
    for key in params:
        if key not in allowed and not (files and key.startswith("file:")):
            expected = ", ".join(allowed) + (", file:<version>/<name>" if files else "")
            raise InvalidRequest(f"unknown parameter {key!r}; expected one of {expected}")
    version = params.get("version")
    if version is not None and (not isinstance(version, (str, int)) or isinstance(version, bool)):
        raise InvalidRequest("parameter 'version' must be a version number such as \"2\"")
    return params


def _version(params: dict[str, Any]) -> str | None:
    version = params.get("version")
    return None if version is None else str(version)


def metrics_handler(render: RenderMetrics) -> Handler:
    async def metrics(request: Request) -> Response:
        # Reading the core's atomics and formatting a few hundred lines: a few milliseconds at
        # most, so it stays on the loop.
        return Response(200, render(), METRICS_CONTENT_TYPE)

    return metrics
