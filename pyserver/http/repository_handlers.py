"""Triton's model repository extension over HTTP: the index, load and unload.

    POST /v2/repository/index                 {"ready": bool}?  -> [{"name", "version"?,
                                                                     "state"?, "reason"?}]
    POST /v2/repository/models/{m}/load       {"parameters": {"config": "<JSON>",
                                                "file:<version>/<name>": "<base64>",
                                                "version": "<n>"}}?  -> 200, empty body
    POST /v2/repository/models/{m}/unload     {"parameters": {"unload_dependents": bool,
                                                "version": "<n>"}}?  -> 200, empty body

`version` is pyserver's own (Triton has no per-version load): it loads or unloads that one version
beside the others. Failures answer {"error"} with the status of the error (400 for a load that
fails, with its reason).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from pyserver.dataplane import DataPlane
from pyserver.errors import InvalidRequest
from pyserver.http.responses import json_response
from pyserver.repository import decode_files

_LOAD_KEYS = ("config", "version")
_UNLOAD_KEYS = ("unload_dependents", "version")


async def _body(request: web.Request) -> dict[str, Any]:
    """The JSON object of a repository request (an empty body is {})."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
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


class RepositoryHandlers:
    def __init__(self, dataplane: DataPlane) -> None:
        self._dp = dataplane

    async def index(self, request: web.Request) -> web.Response:
        doc = await _body(request)
        ready = doc.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidRequest("'ready' must be true or false")
        return json_response(self._dp.repository_index(ready))

    async def load(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        params = _parameters(await _body(request), _LOAD_KEYS, files=True)
        config = params.get("config")
        if config is not None and not isinstance(config, str):
            # Triton takes the config as a JSON string; an object is accepted as well.
            config = orjson.dumps(config).decode() if isinstance(config, dict) else None
            if config is None:
                raise InvalidRequest("parameter 'config' must be the model configuration as JSON")
        files = decode_files(params)
        await self._dp.load_model(name, config, files, _version(params))
        return web.Response(status=200)

    async def unload(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        params = _parameters(await _body(request), _UNLOAD_KEYS, files=False)
        dependents = params.get("unload_dependents", False)
        if not isinstance(dependents, bool):
            raise InvalidRequest("parameter 'unload_dependents' must be true or false")
        await self._dp.unload_model(name, dependents, _version(params))
        return web.Response(status=200)

