"""`pyserver serve`'s gRPC flags, as Triton names them, reaching the server's options."""

from __future__ import annotations

import pytest

from pyserver.cli import main as cli
from pyserver.server import ServerOptions
from tests.conftest import ENGINES


def options(monkeypatch: pytest.MonkeyPatch, *argv: str) -> ServerOptions:
    seen: list[ServerOptions] = []
    monkeypatch.setattr(cli, "run", lambda o: seen.append(o) or True)  # True: drained
    monkeypatch.setattr(cli.LOGS, "configure", lambda *args, **kwargs: None)  # leave logging be
    cli.main(["serve", "--model-repository", str(ENGINES), *argv])
    (got,) = seen
    return got


def test_grpc_is_on_by_default_on_8001_at_the_http_address(monkeypatch: pytest.MonkeyPatch) -> None:
    got = options(monkeypatch, "--http-address", "127.0.0.1")
    assert (got.allow_grpc, got.grpc_port, got.grpc_host, got.host) == (True, 8001, None, "127.0.0.1")


def test_grpc_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    got = options(monkeypatch, "--grpc-port", "9001", "--grpc-address", "::1", "--allow-grpc", "false")
    assert (got.allow_grpc, got.grpc_port, got.grpc_host) == (False, 9001, "::1")


@pytest.mark.parametrize("argv", [["--grpc-port", "70000"], ["--allow-grpc", "maybe"]])
def test_bad_grpc_flags_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["serve", *argv])
    assert argv[0] in capsys.readouterr().err


def test_grpc_address_form() -> None:
    from pyserver.grpc.server import address

    assert address("0.0.0.0", 8001) == "0.0.0.0:8001"
    assert address("::", 8001) == "[::]:8001"
    assert address("[::1]", 0) == "[::1]:0"
