"""grpc.health.v1.Health, for Kubernetes' gRPC probes: SERVING while the data plane is ready
(the repository loaded, every model ready), NOT_SERVING before that and from the moment the
server starts shutting down.

The service names answered: "" (the server as a whole) and "inference.GRPCInferenceService";
Check on any other name is NOT_FOUND and Watch says SERVICE_UNKNOWN, as the protocol asks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from pyserver.dataplane import DataPlane
from pyserver.grpc import messages as pb

SERVICES = frozenset({"", pb.SERVICE})
# How often Watch looks at the readiness it reports (a change is sent within this time).
WATCH_INTERVAL_S = 0.5


class HealthServicer:
    def __init__(self, dataplane: DataPlane) -> None:
        self._dp = dataplane
        self._closing = False
        self._closed = asyncio.Event()

    def close(self) -> None:
        """From now on NOT_SERVING; open Watch streams say so and end."""
        self._closing = True
        self._closed.set()

    def status(self) -> int:
        serving = not self._closing and self._dp.ready()
        status = pb.HealthCheckResponse.SERVING if serving else pb.HealthCheckResponse.NOT_SERVING
        return int(status)

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        return {
            "Check": grpc.unary_unary_rpc_method_handler(
                self.check, request_deserializer=pb.HealthCheckRequest.FromString,
                response_serializer=pb.HealthCheckResponse.SerializeToString,
            ),
            "Watch": grpc.unary_stream_rpc_method_handler(
                self.watch, request_deserializer=pb.HealthCheckRequest.FromString,
                response_serializer=pb.HealthCheckResponse.SerializeToString,
            ),
        }

    async def check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request.service not in SERVICES:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return pb.HealthCheckResponse(status=self.status())

    async def watch(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if request.service not in SERVICES:
            yield pb.HealthCheckResponse(status=pb.HealthCheckResponse.SERVICE_UNKNOWN)
            return
        last = self.status()
        yield pb.HealthCheckResponse(status=last)
        while not self._closing:
            try:
                await asyncio.wait_for(self._closed.wait(), WATCH_INTERVAL_S)
            except TimeoutError:
                pass
            status = self.status()
            if status != last:
                last = status
                yield pb.HealthCheckResponse(status=status)
