"""The `pyserver` command: `pyserver serve` (flags named as Triton names them)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from pyserver import __version__
from pyserver.http.app import DEFAULT_MAX_REQUEST_SIZE
from pyserver.http.server import ServerOptions, run


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyserver", description="pyserver model server")
    parser.add_argument("--version", action="version", version=f"pyserver {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a model repository over HTTP (KServe v2)")
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
        help="largest request body in bytes, after decompression (default 64 MiB)",
    )
    serve.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"],
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "serve":
        if not args.model_repository.is_dir():
            raise SystemExit(f"pyserver: model repository {args.model_repository} is not a folder")
        run(
            ServerOptions(
                model_repository=args.model_repository,
                host=args.host,
                http_port=args.http_port,
                max_request_size=args.max_request_size,
            )
        )
