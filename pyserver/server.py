"""Run the server: one data plane, and the HTTP and gRPC front ends over it, on one event loop.
Load the repository, serve, stop cleanly on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from pyserver.completions import CompletionRouter
from pyserver.dataplane import DataPlane
from pyserver.http.app import DEFAULT_MAX_REQUEST_SIZE, make_app
from pyserver.http.observability import make_metrics_app
from pyserver.metrics import Metrics
from pyserver.repository import ModelRepository

if TYPE_CHECKING:
    from pyserver.grpc import GrpcFrontEnd

log = logging.getLogger("pyserver")

# What in-flight calls get to finish when the server stops: as long as aiohttp's runner gives
# in-flight HTTP requests (its shutdown_timeout).
SHUTDOWN_GRACE_S = 60.0


@dataclass(frozen=True)
class ServerOptions:
    model_repository: Path = Path("engines")
    host: str = "0.0.0.0"
    http_port: int = 8000
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE
    # /metrics on the HTTP port when allowed; also on this port when given (Triton's is 8002)
    allow_metrics: bool = True
    metrics_port: int | None = None
    # page-locked host memory for GPU models' copies (Triton's --pinned-memory-pool-byte-size)
    pinned_memory_pool_byte_size: int | None = None
    # gRPC (Triton's --allow-grpc, --grpc-port, --grpc-address); grpc_host None: `host`
    allow_grpc: bool = True
    grpc_port: int = 8001
    grpc_host: str | None = None


class Server:
    """The running pieces, started and stopped together on one event loop."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.port: int | None = None
        self.grpc_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self._grpc: GrpcFrontEnd | None = None
        self.metrics: Metrics | None = None
        self.metrics_port: int | None = None
        self._router: CompletionRouter | None = None
        self.repository: ModelRepository | None = None
        self.dataplane: DataPlane | None = None

    async def start(self) -> None:
        """Listen first (live answers at once, ready only after loading), then load models."""
        loop = asyncio.get_running_loop()
        self._router = CompletionRouter(loop)
        self.repository = ModelRepository(
            self.options.model_repository, self._router,
            self.options.pinned_memory_pool_byte_size,
        )
        self.dataplane = DataPlane(self.repository)
        if self.options.allow_metrics:
            self.metrics = Metrics(self.repository.models, self._open_connections)
        render = self.metrics.render if self.metrics is not None else None
        app = make_app(self.dataplane, self.options.max_request_size, render)
        # auto_decompress off: the protocol room undoes Content-Encoding itself, with the size
        # limit applied to the inflated body and 501 for codings it does not know.
        # handler_cancellation: a client that hangs up cancels its handler, which takes its
        # request out of the model's queue if it has not run yet.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, auto_decompress=False,
            handler_cancellation=True, shutdown_timeout=SHUTDOWN_GRACE_S,
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.options.host, self.options.http_port, backlog=1024,
            reuse_address=True,
        )
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        if self.options.allow_grpc:
            await self._start_grpc(self.dataplane)
        if render is not None and self.options.metrics_port is not None:
            await self._start_metrics_site(render)
        # Loading builds ONNX Runtime sessions, which blocks: keep it off the loop.
        await loop.run_in_executor(None, self.repository.load_all)
        self.dataplane.set_ready(True)
        log.info(
            "pyserver serving %d model version(s) on http://%s:%d%s",
            len(self.repository.models()), self.options.host, self.port,
            "" if self.grpc_port is None else f" and grpc {self.grpc_address}",
        )

    @property
    def grpc_address(self) -> str | None:
        if self.grpc_port is None:
            return None
        return f"{self.options.grpc_host or self.options.host}:{self.grpc_port}"

    async def _start_grpc(self, dataplane: DataPlane) -> None:
        # Imported here: a server without gRPC does not load grpcio at all.
        from pyserver.grpc import GrpcFrontEnd

        self._grpc = GrpcFrontEnd(
            dataplane, self.options.grpc_host or self.options.host, self.options.grpc_port,
            self.options.max_request_size,
        )
        self.grpc_port = await self._grpc.start()

    def _open_connections(self) -> int:
        server = self._runner.server if self._runner is not None else None
        return len(server.connections) if server is not None else 0

    async def _start_metrics_site(self, render: Callable[[], bytes]) -> None:
        assert self.options.metrics_port is not None
        self._metrics_runner = web.AppRunner(
            make_metrics_app(render, self.options.max_request_size), access_log=None,
            handle_signals=False,
        )
        await self._metrics_runner.setup()
        site = web.TCPSite(
            self._metrics_runner, self.options.host, self.options.metrics_port, reuse_address=True
        )
        await site.start()
        self.metrics_port = int(self._metrics_runner.addresses[0][1])

    async def stop(self) -> None:
        if self.dataplane is not None:
            self.dataplane.set_ready(False)
        if self._grpc is not None:
            self._grpc.begin_shutdown()  # health NOT_SERVING at once; streams stop reading
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        # Both front ends stop listening and let what they accepted finish, side by side.
        draining = []
        if self._runner is not None:
            draining.append(self._runner.cleanup())
        if self._grpc is not None:
            draining.append(self._grpc.stop(SHUTDOWN_GRACE_S))
        await asyncio.gather(*draining)
        if self.repository is not None:
            # Joining the core's threads blocks: do it off the loop so their last
            # completions can still be drained.
            await asyncio.get_running_loop().run_in_executor(None, self.repository.stop)
        if self._router is not None:
            self._router.close()


async def serve_forever(options: ServerOptions) -> None:
    server = Server(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await server.start()
        grpc = "" if server.grpc_address is None else f" and grpc {server.grpc_address}"
        print(f"pyserver: ready on http://{options.host}:{server.port}{grpc}", file=sys.stderr,
              flush=True)
        if server.metrics_port is not None:
            log.info("metrics on http://%s:%d/metrics", options.host, server.metrics_port)
        await stop.wait()
        log.info("stopping")
    finally:
        await server.stop()


def run(options: ServerOptions) -> None:
    """Run until SIGTERM/SIGINT, on uvloop when it is installed."""
    # The ONNX Runtime workers take the GIL once per batch; a short switch interval lets them
    # have it soon while the loop is busy, instead of waiting out the default 5 ms.
    sys.setswitchinterval(0.0005)
    loop_factory: Callable[[], asyncio.AbstractEventLoop]
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop_factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve_forever(options))
