"""The gRPC server: grpcio's asyncio server on the running event loop, serving the inference
service and the health service over one data plane."""

from __future__ import annotations

import logging

import grpc

from pyserver.access import AccessPolicy
from pyserver.dataplane import DataPlane
from pyserver.grpc import messages as pb
from pyserver.grpc.access import AccessInterceptor
from pyserver.grpc.health import HealthServicer
from pyserver.grpc.servicer import InferenceServicer
from pyserver.grpc.stream import StreamServicer

log = logging.getLogger("pyserver.grpc")


def address(host: str, port: int) -> str:
    """host:port as grpc takes it (an IPv6 address in brackets)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


class GrpcFrontEnd:
    """Create, start and stop inside the running loop."""

    def __init__(self, dataplane: DataPlane, host: str, port: int, max_request_size: int,
                 access: AccessPolicy | None = None) -> None:
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.health = HealthServicer(dataplane)
        self.streams = StreamServicer(dataplane)
        service = InferenceServicer(dataplane).handlers()
        service["ModelStreamInfer"] = self.streams.handler()
        interceptors = [AccessInterceptor(access)] if access is not None and access.any() else []
        self._server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                # A message larger than this (after decompression) is refused with
                # RESOURCE_EXHAUSTED before any of it reaches pyserver, as HTTP answers 413.
                ("grpc.max_receive_message_length", max_request_size),
                # Answers are as large as the model makes them.
                ("grpc.max_send_message_length", -1),
                # Two servers must not share a port unnoticed (grpc sets SO_REUSEPORT by default).
                ("grpc.so_reuseport", 0),
            ],
        )
        for name, handlers in ((pb.SERVICE, service), (pb.HEALTH_SERVICE, self.health.handlers())):
            # Registered methods are matched by grpc's core as a call arrives, without a
            # per-call lookup through a generic handler in Python.
            self._server.add_registered_method_handlers(name, handlers)

    async def start(self) -> int:
        """Listen; returns the bound port (an ephemeral one for port 0)."""
        where = address(self.host, self.requested_port)
        try:
            port = int(self._server.add_insecure_port(where))
        except RuntimeError as exc:
            raise OSError(f"gRPC cannot listen on {where}: {exc}") from None
        if port == 0:
            raise OSError(f"gRPC cannot listen on {where}")
        await self._server.start()
        self.port = port
        return port

    def begin_shutdown(self) -> None:
        """Health says NOT_SERVING, and open streams stop taking requests."""
        self.health.close()
        self.streams.close()

    async def stop(self, grace: float) -> None:
        """Refuse new calls; calls in progress get `grace` seconds to finish, then are
        cancelled (their queued requests leave the queue)."""
        self.begin_shutdown()
        await self._server.stop(grace)
