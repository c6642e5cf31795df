"""`pyserver serve` flags for metrics, logs and the pinned memory pool, as Triton names them."""

from __future__ import annotations

import pytest

from pyserver.cli.main import build_parser


def parse(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser().parse_args(["serve", *argv])


def test_defaults_metrics_on_the_http_port_only_and_text_logs() -> None:
    args = parse()
    assert args.allow_metrics is True and args.metrics_port is None
    assert args.log_level == "info" and args.log_format == "text" and args.log_file == ""


@pytest.mark.parametrize(("argv", "port"), [
    (["--metrics-port"], 8002),  # the flag alone: Triton's metrics port
    (["--metrics-port", "9100"], 9100),
    (["--metrics-port", "0"], 0),
    (["--metrics-port", "--log-format", "json"], 8002),
])
def test_metrics_port(argv: list[str], port: int) -> None:
    assert parse(*argv).metrics_port == port


@pytest.mark.parametrize(("text", "value"), [("false", False), ("False", False), ("0", False),
                                             ("true", True), ("1", True), ("yes", True)])
def test_allow_metrics(text: str, value: bool) -> None:
    assert parse("--allow-metrics", text).allow_metrics is value


@pytest.mark.parametrize("argv", [["--allow-metrics", "maybe"], ["--metrics-port", "70000"],
                                  ["--log-format", "xml"], ["--log-level", "verbose"]])
def test_bad_flags_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)
    assert "error" in capsys.readouterr().err


def test_metrics_port_cannot_be_the_http_port() -> None:
    from pyserver.cli.main import main

    with pytest.raises(SystemExit, match="is the HTTP port"):
        main(["serve", "--http-port", "8000", "--metrics-port", "8000"])


def test_pinned_memory_pool_size() -> None:
    assert parse().pinned_memory_pool_byte_size == 256 * 2**20  # Triton's default
    assert parse("--pinned-memory-pool-byte-size", "0").pinned_memory_pool_byte_size == 0
    assert parse("--pinned-memory-pool-byte-size", "1048576").pinned_memory_pool_byte_size == 2**20


@pytest.mark.parametrize("value", ["-1", "lots"])
def test_a_bad_pinned_memory_pool_size_is_refused(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse("--pinned-memory-pool-byte-size", value)
    assert "--pinned-memory-pool-byte-size" in capsys.readouterr().err


def test_the_pool_size_reaches_the_core(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The model manager configures the core's pool before it loads any model."""
    import asyncio

    from pyserver import _core
    from pyserver.completions import CompletionRouter
    from pyserver.lifecycle import ModelManager
    from pyserver.repository import ModelRepository

    calls: list[int] = []
    monkeypatch.setattr(_core, "configure_pinned_memory", calls.append)
    loop = asyncio.new_event_loop()
    try:
        ModelManager(ModelRepository(tmp_path), CompletionRouter(loop), 1, 12345)
    finally:
        loop.close()
    assert calls == [12345]
