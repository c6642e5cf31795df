"""Run the HTTP server: load the repository, serve, stop cleanly on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from pyserver.completions import CompletionRouter
from pyserver.dataplane import DataPlane
from pyserver.http.app import DEFAULT_MAX_REQUEST_SIZE, make_app
from pyserver.http.observability import make_metrics_app
from pyserver.metrics import Metrics
from pyserver.repository import ModelRepository

log = logging.getLogger("pyserver")


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


class Server:
    """The running pieces, started and stopped together on one event loop."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
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
            handler_cancellation=True,
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.options.host, self.options.http_port, backlog=1024,
            reuse_address=True,
        )
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        if render is not None and self.options.metrics_port is not None:
            await self._start_metrics_site(render)
        # Loading builds ONNX Runtime sessions, which blocks: keep it off the loop.
        await loop.run_in_executor(None, self.repository.load_all)
        self.dataplane.set_ready(True)
        log.info(
            "pyserver serving %d model version(s) on http://%s:%d",
            len(self.repository.models()), self.options.host, self.port,
        )

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
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        if self._runner is not None:
            await self._runner.cleanup()  # stops listening, lets in-flight requests finish
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
        print(f"pyserver: ready on http://{options.host}:{server.port}", file=sys.stderr, flush=True)
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
