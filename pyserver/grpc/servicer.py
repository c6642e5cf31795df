"""The RPCs of `inference.GRPCInferenceService`, each a thin adapter over the data plane.

Every RPC runs inside `_rpc`, the gRPC side's one error handler (as the HTTP middleware is
HTTP's): a pyserver.errors exception ends the call with the status code that means what its
HTTP status means and the same message; anything else is a bug, logged and answered INTERNAL.
Each call gets its own request context, so its log lines carry its id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format

from pyserver.dataplane import DataPlane
from pyserver.errors import InvalidRequest, NotFound, ServerError, internal_message
from pyserver.grpc import messages as pb
from pyserver.grpc.status import status_code
from pyserver.logs import CURRENT_REQUEST, RequestContext, bind_request_id
from pyserver.protocol.codec import InferRequest
from pyserver.protocol.grpc_codec import (
    decode_infer_request,
    encode_infer_response,
    parameter_values,
)
from pyserver.types import ModelSignature

log = logging.getLogger("pyserver.grpc")
request_log = logging.getLogger("pyserver.grpc.request")

Unary = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _rpc(name: str, method: Unary) -> Unary:
    """Wrap one unary RPC: its request context, its errors, its verbose log line."""

    async def answer(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(request, context)
        except ServerError as exc:
            await context.abort(status_code(exc), str(exc))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:  # a bug: answer INTERNAL and keep serving
            log.exception("internal error in %s", name)
            await context.abort(grpc.StatusCode.INTERNAL, internal_message(exc))

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        token = CURRENT_REQUEST.set(RequestContext())
        try:
            if not request_log.isEnabledFor(logging.DEBUG):
                return await answer(request, context)
            started = time.monotonic_ns()
            try:
                return await answer(request, context)
            finally:
                code = context.code() or grpc.StatusCode.OK
                request_log.debug("grpc %s -> %s in %.3f ms", name, code.name,
                                  (time.monotonic_ns() - started) / 1e6)
        finally:
            CURRENT_REQUEST.reset(token)

    return call


def _version(text: str) -> str | None:
    return text or None  # proto3: "" is "not given", which means the latest


def infer_decoder(message: Any, context: grpc.aio.ServicerContext) -> Callable[
    [ModelSignature], InferRequest
]:
    """The data plane's decoder for one ModelInferRequest. A call deadline shorter than the
    request's own `timeout` becomes its queue timeout (the model's queue policy decides, as for
    any `timeout`, whether a request may shorten its wait); the deadline itself cancels the call
    in any case."""

    if message.id:
        bind_request_id(message.id)  # known before decoding: a malformed request's lines too

    def decode(signature: ModelSignature) -> InferRequest:
        request = decode_infer_request(message, signature)
        remaining = context.time_remaining()
        if remaining is not None:
            deadline_us = max(1, int(remaining * 1e6))
            timeout = request.parameters.get("timeout", 0)
            if not timeout or deadline_us < timeout:
                request.parameters = {**request.parameters, "timeout": deadline_us}
        return request

    return decode


async def infer(
    dataplane: DataPlane, message: Any, context: grpc.aio.ServicerContext, stream: bool = False
) -> bytes:
    """One ModelInferRequest through the data plane, to the bytes of its ModelInferResponse (or,
    with `stream`, of the ModelStreamInferResponse carrying it). It is admitted (or refused, e.g.
    for a full queue) before its inputs are looked at."""
    with dataplane.admit(message.model_name, _version(message.model_version)) as admission:
        response = await dataplane.infer(admission, infer_decoder(message, context))
        return encode_infer_response(
            response.signature, response.model_version, response.request, response.results,
            stream,
        )


class InferenceServicer:
    """The unary RPCs. `handlers()` names them for grpc; the stream RPC lives in stream.py."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dp = dataplane

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        def unary(name: str, method: Unary, request: Any, response: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                _rpc(name, method),
                request_deserializer=request.FromString,
                # ModelInfer answers bytes it wrote itself: no serializer
                response_serializer=None if response is None else response.SerializeToString,
            )

        return {
            "ServerLive": unary("ServerLive", self.server_live, pb.ServerLiveRequest,
                                pb.ServerLiveResponse),
            "ServerReady": unary("ServerReady", self.server_ready, pb.ServerReadyRequest,
                                 pb.ServerReadyResponse),
            "ModelReady": unary("ModelReady", self.model_ready, pb.ModelReadyRequest,
                                pb.ModelReadyResponse),
            "ServerMetadata": unary("ServerMetadata", self.server_metadata,
                                    pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            "ModelMetadata": unary("ModelMetadata", self.model_metadata, pb.ModelMetadataRequest,
                                   pb.ModelMetadataResponse),
            "ModelInfer": unary("ModelInfer", self.model_infer, pb.ModelInferRequest, None),
            "ModelConfig": unary("ModelConfig", self.model_config, pb.ModelConfigRequest,
                                 pb.ModelConfigResponse),
            "ModelStatistics": unary("ModelStatistics", self.model_statistics,
                                     pb.ModelStatisticsRequest, pb.ModelStatisticsResponse),
            "LogSettings": unary("LogSettings", self.log_settings, pb.LogSettingsRequest,
                                 pb.LogSettingsResponse),
            "RepositoryIndex": unary("RepositoryIndex", self.repository_index,
                                     pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
            "RepositoryModelLoad": unary("RepositoryModelLoad", self.repository_model_load,
                                         pb.RepositoryModelLoadRequest,
                                         pb.RepositoryModelLoadResponse),
            "RepositoryModelUnload": unary("RepositoryModelUnload", self.repository_model_unload,
                                           pb.RepositoryModelUnloadRequest,
                                           pb.RepositoryModelUnloadResponse),
        }

    # health and metadata

    async def server_live(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=self._dp.live())

    async def server_ready(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=self._dp.ready())

    async def model_ready(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        # Triton answers "not ready" (not an error) for a model or version that does not serve,
        # so that tritonclient's is_model_ready is a question, not a failure.
        try:
            ready = self._dp.model_ready(request.name, _version(request.version))
        except NotFound:
            ready = False
        return pb.ModelReadyResponse(ready=ready)

    async def server_metadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return json_format.ParseDict(self._dp.server_metadata(), pb.ServerMetadataResponse())

    async def model_metadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        metadata = self._dp.model_metadata(request.name, _version(request.version))
        return json_format.ParseDict(metadata, pb.ModelMetadataResponse())

    async def model_config(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        config = self._dp.model_config(request.name, _version(request.version))
        # Triton's JSON form of the config; fields pyserver's .proto lacks (its own extensions,
        # such as latency_target_microseconds) stay over HTTP.
        message = json_format.ParseDict(config, pb.ModelConfig(), ignore_unknown_fields=True)
        return pb.ModelConfigResponse(config=message)

    async def model_statistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        stats = self._dp.model_stats(request.name or None, _version(request.version))
        # pyserver's own fields (instances) stay over HTTP
        return json_format.ParseDict(stats, pb.ModelStatisticsResponse(),
                                     ignore_unknown_fields=True)

    # inference

    async def model_infer(self, request: Any, context: grpc.aio.ServicerContext) -> bytes:
        return await infer(self._dp, request, context)

    # logging (Triton's logging extension)

    async def log_settings(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request.settings:
            settings = self._dp.update_log_settings(parameter_values(request.settings))
        else:
            settings = self._dp.log_settings()
        answer = pb.LogSettingsResponse()
        for key, value in settings.items():
            entry = answer.settings[key]
            if isinstance(value, bool):
                entry.bool_param = value
            elif isinstance(value, int):
                entry.uint32_param = value
            else:
                entry.string_param = str(value)
        return answer

    # model repository (Triton's model_repository extension)

    async def repository_index(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        answer = pb.RepositoryIndexResponse()
        for entry in self._dp.repository_index(ready_only=request.ready):
            answer.models.add(**{k: str(v) for k, v in entry.items() if v is not None})
        return answer

    async def repository_model_load(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._dp.load_model(request.model_name, **load_arguments(request.parameters))
        return pb.RepositoryModelLoadResponse()

    async def repository_model_unload(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        await self._dp.unload_model(request.model_name, **unload_arguments(request.parameters))
        return pb.RepositoryModelUnloadResponse()


def load_arguments(parameters: Any) -> dict[str, Any]:
    """RepositoryModelLoad's parameters as DataPlane.load_model's arguments: "config" (a string:
    the model configuration as JSON), "file:<version>/<name>" (bytes: a file of the model) and
    "version" (a string or an int64). Other parameters are ignored, as Triton ignores them."""
    config: str | None = None
    files: dict[str, bytes] = {}
    version: str | None = None
    for key, value in parameter_values(parameters).items():
        if key == "config":
            if type(value) is not str:
                raise InvalidRequest(
                    "load parameter 'config' must be a string_param holding the model "
                    f"configuration as JSON, got {_kind(value)}"
                )
            config = value
        elif key.startswith("file:"):
            if type(value) is not bytes:
                raise InvalidRequest(
                    f"load parameter {key!r} must be a bytes_param holding the file, "
                    f"got {_kind(value)}"
                )
            files[key[len("file:"):]] = value
        elif key == "version":
            version = _version_parameter("load", value)
    arguments: dict[str, Any] = {"config": config, "version": version}
    if files:
        arguments["files"] = files
    return arguments


def unload_arguments(parameters: Any) -> dict[str, Any]:
    """RepositoryModelUnload's parameters: "unload_dependents" (bool) and "version"."""
    unload_dependents = False
    version: str | None = None
    for key, value in parameter_values(parameters).items():
        if key == "unload_dependents":
            if type(value) is not bool:
                raise InvalidRequest(
                    f"unload parameter 'unload_dependents' must be a bool_param, got {_kind(value)}"
                )
            unload_dependents = value
        elif key == "version":
            version = _version_parameter("unload", value)
    return {"unload_dependents": unload_dependents, "version": version}


def _version_parameter(rpc: str, value: object) -> str:
    if type(value) is int and value > 0:
        return str(value)
    if type(value) is str and value.isascii() and value.isdigit() and int(value) > 0:
        return value
    raise InvalidRequest(
        f"{rpc} parameter 'version' must be a positive version number (string_param or "
        f"int64_param), got {_kind(value)}"
    )


def _kind(value: object) -> str:
    if value is None:
        return "no value"
    if isinstance(value, bytes):
        return f"a bytes_param of {len(value)} bytes"
    return f"{type(value).__name__} {value!r}"
