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

from pyserver.access import AccessPolicy, Restriction
from pyserver.completions import CompletionRouter
from pyserver.config import DEFAULT_MAX_BATCH_SIZE
from pyserver.dataplane import ControlMode, DataPlane
from pyserver.errors import ServerError
from pyserver.http.app import DEFAULT_MAX_REQUEST_SIZE, make_metrics_router, make_router
from pyserver.http.protocol import HttpLimits, HttpServer
from pyserver.lifecycle import ModelManager
from pyserver.metrics import Metrics
from pyserver.repository import ModelRepository

if TYPE_CHECKING:
    from pyserver.grpc import GrpcFrontEnd

log = logging.getLogger("pyserver")

# What answers still being written get when the front ends close, after the data plane has
# drained (the requests themselves are answered by then).
SHUTDOWN_GRACE_S = 10.0


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
    # model management, with Triton's flags' names and meanings
    model_control_mode: ControlMode = ControlMode.NONE
    load_models: tuple[str, ...] = ()  # explicit mode: loaded at start ("*": all)
    repository_poll_secs: float = 15.0
    model_load_thread_count: int = 4
    exit_timeout_secs: float = 30.0
    strict_readiness: bool = True
    default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE  # auto-completed models
    # slow and hostile clients (pyserver's own; seconds, 0 = no deadline; see HttpLimits)
    http_header_timeout_secs: float = HttpLimits.header_timeout
    http_body_timeout_secs: float = HttpLimits.body_timeout
    http_keepalive_timeout_secs: float = HttpLimits.keepalive_timeout
    http_max_header_count: int = HttpLimits.max_header_count
    http_max_header_bytes: int = HttpLimits.max_header_bytes
    # access control (Triton's --http-restricted-api, --grpc-restricted-protocol)
    http_restricted: tuple[Restriction, ...] = ()
    grpc_restricted: tuple[Restriction, ...] = ()

    def http_limits(self) -> HttpLimits:
        return HttpLimits(
            max_request_size=self.max_request_size,
            header_timeout=self.http_header_timeout_secs,
            body_timeout=self.http_body_timeout_secs,
            keepalive_timeout=self.http_keepalive_timeout_secs,
            max_header_count=self.http_max_header_count,
            max_header_bytes=self.http_max_header_bytes,
        )


class Server:
    """The running pieces, started and stopped together on one event loop."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.port: int | None = None
        self.grpc_port: int | None = None
        self.http: HttpServer | None = None
        self._listeners: list[asyncio.Server] = []
        self._metrics_http: HttpServer | None = None
        self._grpc: GrpcFrontEnd | None = None
        self.metrics: Metrics | None = None
        self.metrics_port: int | None = None
        self._router: CompletionRouter | None = None
        self.repository: ModelRepository | None = None
        self.models: ModelManager | None = None
        self.dataplane: DataPlane | None = None
        self._poll_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen first (live answers at once, ready only after loading), then load models."""
        loop = asyncio.get_running_loop()
        options = self.options
        if not options.model_repository.is_dir():
            raise ServerError(f"model repository {options.model_repository} is not a directory")
        self._router = CompletionRouter(loop)
        self.repository = ModelRepository(options.model_repository, options.default_max_batch_size)
        self.models = ModelManager(
            self.repository, self._router, options.model_load_thread_count,
            options.pinned_memory_pool_byte_size,
        )
        self.dataplane = DataPlane(self.models, options.model_control_mode,
                                   options.strict_readiness)
        if options.allow_metrics:
            self.metrics = Metrics(self.models.models, self._open_connections, lifecycle=self.models)
        render = self.metrics.render if self.metrics is not None else None
        self.http = HttpServer(
            make_router(self.dataplane, options.max_request_size, render,
                        AccessPolicy(options.http_restricted)), options.http_limits())
        listener = await loop.create_server(
            self.http, options.host, options.http_port, backlog=1024, reuse_address=True)
        self._listeners.append(listener)
        self.port = int(listener.sockets[0].getsockname()[1])
        if options.allow_grpc:
            await self._start_grpc(self.dataplane)
        if render is not None and options.metrics_port is not None:
            await self._start_metrics_site(render)
        await self._load_at_start()
        self.dataplane.set_ready(True)
        if options.model_control_mode is ControlMode.POLL:
            self._poll_task = loop.create_task(self._poll_forever())
        log.info(
            "pyserver serving %d model version(s) on http://%s:%d%s",
            len(self.models.models()), options.host, self.port,
            "" if self.grpc_port is None else f" and grpc {self.grpc_address}",
        )

    async def _load_at_start(self) -> None:
        """Mode none and poll: every model in the repository; explicit: --load-model's."""
        assert self.models is not None and self.repository is not None
        options = self.options
        names = self.repository.names()
        if options.model_control_mode is ControlMode.EXPLICIT:
            asked = options.load_models
            names = names if "*" in asked else list(dict.fromkeys(asked))
        results = await asyncio.gather(
            *(self.models.load(name) for name in names), return_exceptions=True
        )
        for result in results:  # a model's failure is logged with its reason where it fails
            if isinstance(result, BaseException) and not isinstance(result, ServerError):
                raise result

    async def _poll_forever(self) -> None:
        assert self.models is not None
        while True:
            await asyncio.sleep(self.options.repository_poll_secs)
            try:
                await self.models.poll()
            except Exception:  # never let one bad scan stop polling
                log.exception("repository poll failed")

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
            self.options.max_request_size, AccessPolicy(self.options.grpc_restricted),
        )
        self.grpc_port = await self._grpc.start()

    def _open_connections(self) -> int:
        return len(self.http.connections) if self.http is not None else 0

    async def _start_metrics_site(self, render: Callable[[], bytes]) -> None:
        assert self.options.metrics_port is not None
        self._metrics_http = HttpServer(make_metrics_router(render), self.options.http_limits())
        listener = await asyncio.get_running_loop().create_server(
            self._metrics_http, self.options.host, self.options.metrics_port, reuse_address=True)
        self._listeners.append(listener)
        self.metrics_port = int(listener.sockets[0].getsockname()[1])

    async def stop(self) -> bool:
        """Drain and stop: readiness false and new requests 503 at once (gRPC health
        NOT_SERVING), every accepted request answered (up to --exit-timeout-secs), models
        unloaded, listeners closed. True when everything accepted was answered in time."""
        if self._poll_task is not None:
            self._poll_task.cancel()
        if self._grpc is not None:
            self._grpc.begin_shutdown()  # health NOT_SERVING at once; streams stop reading
        drained = True
        if self.dataplane is not None:
            drained = await self.dataplane.shutdown(self.options.exit_timeout_secs)
            if not drained:
                log.error("requests were still in flight after --exit-timeout-secs %s; they were "
                          "answered 503", self.options.exit_timeout_secs)
        # The front ends stop listening and write what is still on its way out, side by side.
        for listener in self._listeners:
            listener.close()
        draining = [http.close(SHUTDOWN_GRACE_S) for http in (self.http, self._metrics_http)
                    if http is not None]
        if self._grpc is not None:
            draining.append(self._grpc.stop(SHUTDOWN_GRACE_S))
        await asyncio.gather(*draining)
        if self._router is not None:
            self._router.close()
        return drained


async def serve_forever(options: ServerOptions) -> bool:
    """Serve until SIGTERM or SIGINT; True when shutdown answered everything accepted."""
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
        log.info("stopping: draining accepted requests (up to %ss)", options.exit_timeout_secs)
    finally:
        drained = await server.stop()
    return drained


def run(options: ServerOptions) -> bool:
    """Run until SIGTERM/SIGINT, on uvloop when it is installed; True when the shutdown answered
    every accepted request before --exit-timeout-secs."""
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
        return runner.run(serve_forever(options))
