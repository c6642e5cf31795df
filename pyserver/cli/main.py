"""The `pyserver` command: `pyserver serve` (flags named as Triton names them) and
`pyserver build-engine` (pyserver/cli/build_engine.py)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from pyserver import __version__
from pyserver.cli import build_engine
from pyserver.errors import ServerError
from pyserver.http.app import DEFAULT_MAX_REQUEST_SIZE
from pyserver.logs import FORMATS, LEVELS, LOGS, settings_for_level
from pyserver.server import ServerOptions, run

TRITON_METRICS_PORT = 8002


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of bytes, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyserver", description="pyserver model server")
    parser.add_argument("--version", action="version", version=f"pyserver {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a model repository over HTTP and gRPC (KServe v2)")
    serve.add_argument(
        "--model-repository", type=Path, default=Path("engines"),
        help="folder of models (default: ./engines, the bundled repository)",
    )
    serve.add_argument("--http-port", type=_port, default=8000, help="HTTP port (default 8000)")
    serve.add_argument(
        "--host", "--http-address", dest="host", default="0.0.0.0",
        help="address to listen on (default 0.0.0.0; --http-address is Triton's name)",
    )
    serve.add_argument(
        "--max-request-size", type=int, default=DEFAULT_MAX_REQUEST_SIZE,
        help="largest request body (HTTP) or message (gRPC) in bytes, after decompression "
        "(default 64 MiB)",
    )
    serve.add_argument(
        "--allow-metrics", type=_boolean, default=True, metavar="true|false",
        help="serve Prometheus metrics on /metrics (default true; false: /metrics answers 404 "
        "and no metrics port is opened)",
    )
    serve.add_argument(
        "--metrics-port", type=_port, nargs="?", const=TRITON_METRICS_PORT, default=None,
        metavar="N",
        help="also serve /metrics on this port (the flag alone: 8002, Triton's metrics port); "
        "without the flag, /metrics is on the HTTP port only",
    )
    serve.add_argument(
        "--allow-grpc", type=_boolean, default=True, metavar="true|false",
        help="serve Triton's gRPC inference service (default true)",
    )
    serve.add_argument("--grpc-port", type=_port, default=8001, help="gRPC port (default 8001)")
    serve.add_argument(
        "--grpc-address", default=None, help="address gRPC listens on (default: the HTTP one)"
    )
    serve.add_argument(
        "--log-level", default="info", choices=LEVELS,
        help="lowest level logged (default info: no line per request; debug: one per request); "
        "changeable later through POST /v2/logging",
    )
    serve.add_argument(
        "--log-format", default="text", choices=FORMATS,
        help="one line per event: text (default) or json",
    )
    serve.add_argument("--log-file", default="", help="write logs to this file (default: stderr)")
    serve.add_argument(
        "--pinned-memory-pool-byte-size", type=_non_negative, default=256 * 2**20, metavar="N",
        help="page-locked host memory for GPU models' copies, in bytes (default 256 MiB; 0: "
        "none, copies use ordinary memory); staging beyond it falls back to ordinary memory",
    )
    build_engine.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "build-engine":
        raise SystemExit(build_engine.run(args))
    if args.command == "serve":
        if args.metrics_port is not None and args.metrics_port == args.http_port != 0:
            raise SystemExit(
                f"pyserver: --metrics-port {args.metrics_port} is the HTTP port; /metrics is "
                "served there already (leave --metrics-port out)"
            )
        if not args.model_repository.is_dir():
            raise SystemExit(f"pyserver: model repository {args.model_repository} is not a folder")
        settings = settings_for_level(args.log_level)
        try:
            LOGS.configure(replace(settings, log_format=args.log_format, log_file=args.log_file))
        except ServerError as exc:
            raise SystemExit(f"pyserver: {exc}") from None
        run(
            ServerOptions(
                model_repository=args.model_repository,
                host=args.host,
                http_port=args.http_port,
                max_request_size=args.max_request_size,
                pinned_memory_pool_byte_size=args.pinned_memory_pool_byte_size,
                allow_metrics=args.allow_metrics,
                metrics_port=args.metrics_port,
                allow_grpc=args.allow_grpc,
                grpc_port=args.grpc_port,
                grpc_host=args.grpc_address,
            )
        )
