"""Shared test helpers: where the repository is, and a real server on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ROOT / "engines"


@dataclass
class RunningServer:
    server: object
    loop: asyncio.AbstractEventLoop
    port: int
    grpc_port: int | None = None

    @property
    def grpc_url(self) -> str:
        """host:port of the gRPC service, as tritonclient.grpc takes it."""
        assert self.grpc_port is not None, "started with allow_grpc=False"
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def url(self) -> str:
        """host:port, as tritonclient takes it."""
        return f"127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_server(repository: Path, **options: object) -> tuple[RunningServer, threading.Thread]:
    """Start pyserver on its own event loop in a thread; return when it is ready."""
    import uvloop

    from pyserver.server import Server, ServerOptions

    # As `pyserver serve` runs (pyserver.server.run): engine threads get the GIL soon.
    sys.setswitchinterval(0.0005)
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="pyserver-test-loop", daemon=True)
    thread.start()
    options = {"grpc_port": 0, **options}  # gRPC on an ephemeral port too
    server = Server(
        ServerOptions(model_repository=repository, host="127.0.0.1", http_port=0, **options)  # type: ignore[arg-type]
    )
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=120)
    assert server.port is not None
    return RunningServer(server, loop, server.port, server.grpc_port), thread


def stop_server(running: RunningServer, thread: threading.Thread) -> None:
    asyncio.run_coroutine_threadsafe(running.server.stop(), running.loop).result(timeout=60)  # type: ignore[attr-defined]
    running.loop.call_soon_threadsafe(running.loop.stop)
    thread.join(timeout=30)
    running.loop.close()


@pytest.fixture(scope="session")
def server() -> Iterator[RunningServer]:
    """The bundled repository, served once for the whole session."""
    running, thread = start_server(ENGINES)
    yield running
    stop_server(running, thread)


@pytest.fixture
def make_repository(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write a model repository under tmp_path: {name: config_toml_text}, copying bundled
    version folders when the name matches a bundled model and making 1/ otherwise."""

    def make(models: dict[str, str], copy_from: dict[str, str] | None = None) -> Path:
        repo = tmp_path / "models"
        for name, text in models.items():
            folder = repo / name
            source = (copy_from or {}).get(name)
            if source is not None:
                shutil.copytree(ENGINES / source / "1", folder / "1")
                if (ENGINES / source / "reference").is_dir():  # a [monitoring] reference sample
                    shutil.copytree(ENGINES / source / "reference", folder / "reference")
            else:
                (folder / "1").mkdir(parents=True)
            (folder / "config.toml").write_text(text)
        return repo

    return make


@pytest.fixture
def serve_repository():  # type: ignore[no-untyped-def]
    """Start servers on custom repositories; stop them after the test."""
    started: list[tuple[RunningServer, threading.Thread]] = []

    def serve(repo: Path, **options: object) -> RunningServer:
        running, thread = start_server(repo, **options)
        started.append((running, thread))
        return running

    yield serve
    for running, thread in started:
        stop_server(running, thread)


@pytest.fixture(scope="session")
def fake_cuda_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake CUDA driver (tests/fakes/fake_cuda.c), compiled once per session."""
    from tests.fakes import cuda

    return cuda.build(tmp_path_factory.mktemp("fake_cuda"))


@pytest.fixture
def fake_cuda(fake_cuda_library: Path) -> Iterator[object]:
    """The core talks to the fake driver (two fake GPUs, counters reset) during the test, and
    to no driver (the default search, which finds none on CPU machines) after it."""
    from pyserver import _core
    from tests.fakes.cuda import FakeCuda

    fake = FakeCuda(fake_cuda_library)
    fake.reset(devices=2)
    _core.use_cuda_driver(str(fake_cuda_library))
    try:
        yield fake
    finally:
        _core.use_cuda_driver(None)
