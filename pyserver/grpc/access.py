"""--grpc-restricted-protocol: restricted RPC groups refused with PERMISSION_DENIED, by a server
interceptor (installed only when something is restricted, so an open server pays nothing).
The groups and the check are pyserver/access.py's, shared with HTTP; grpc.health.v1 stays open
for Kubernetes' probes, which send no metadata."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from pyserver.access import AccessPolicy
from pyserver.errors import Forbidden

# RPC name -> the API group it belongs to (Triton's grouping)
RPC_GROUPS = {
    "ServerLive": "health", "ServerReady": "health", "ModelReady": "health",
    "ServerMetadata": "metadata", "ModelMetadata": "metadata", "ModelConfig": "metadata",
    "ModelInfer": "inference", "ModelStreamInfer": "inference",
    "ModelStatistics": "statistics", "LogSettings": "logging",
    "RepositoryIndex": "model-repository", "RepositoryModelLoad": "model-repository",
    "RepositoryModelUnload": "model-repository",
}


class AccessInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, policy: AccessPolicy) -> None:
        self._policy = policy

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        method = details.method or ""
        group = RPC_GROUPS.get(method.rsplit("/", 1)[-1]) if method.startswith(
            "/inference.GRPCInferenceService/") else None
        if group is not None and self._policy.restricted(group):
            metadata = {key.lower(): value for key, value in details.invocation_metadata or ()}
            try:
                self._policy.check_mapping(group, metadata)
            except Forbidden as exc:
                return _denied(str(exc), streaming=method.endswith("/ModelStreamInfer"))
        return await continuation(details)


def _denied(message: str, streaming: bool) -> grpc.RpcMethodHandler:
    if streaming:
        async def deny_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)
            yield  # pragma: no cover - abort raises

        return grpc.stream_stream_rpc_method_handler(deny_stream)

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)

    return grpc.unary_unary_rpc_method_handler(deny)
