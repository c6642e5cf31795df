"""The `pyserver` command: `pyserver serve` (flags named as Triton names them) and
`pyserver build-engine` (pyserver/cli/build_engine.py)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from pyserver import __version__
from pyserver.access import API_GROUPS, AccessPolicy, Restriction, parse_restriction
from pyserver.cli import build_engine, model_layout
from pyserver.config import DEFAULT_MAX_BATCH_SIZE, MAX_BATCH_SIZE_LIMIT
from pyserver.dataplane import ControlMode
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
    serve.add_argument(
        "--model-name", default=None, metavar="NAME",
        help="serve --model-repository as the model NAME when it holds one model's folder "
        "(config and version folders) or a bare model file (model.onnx, model.plan, ...), as "
        "KServe's storage initializer leaves /mnt/models; with a repository, NAME must be in it",
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
    _add_model_management(serve)
    _add_http_limits(serve)
    _add_access_control(serve)
    build_engine.add_parser(commands)
    return parser


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _backend_config(text: str) -> tuple[str, str, str]:
    """Triton's --backend-config=[<backend>,]<setting>=<value>."""
    backend, _, setting = text.rpartition(",")
    key, equals, value = setting.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(
            f"expected [<backend>,]<setting>=<value> (e.g. default-max-batch-size=8), got {text!r}")
    return backend, key.strip(), value.strip()


def _add_http_limits(serve: argparse.ArgumentParser) -> None:
    """Deadlines and bounds for slow and hostile HTTP clients (pyserver's own names: Triton has
    none). A client that misses a deadline is answered 408 and its connection closed."""
    group = serve.add_argument_group("HTTP clients")
    o = ServerOptions
    group.add_argument(
        "--http-header-timeout-secs", type=_seconds, default=o.http_header_timeout_secs,
        metavar="N", help="a request's headers must arrive within N s of its first byte "
        f"(default {o.http_header_timeout_secs:g}; 0: no limit)")
    group.add_argument(
        "--http-body-timeout-secs", type=_seconds, default=o.http_body_timeout_secs, metavar="N",
        help="a request's body must arrive within N s of its headers, however slowly it "
        f"trickles (default {o.http_body_timeout_secs:g}; 0: no limit)")
    group.add_argument(
        "--http-keepalive-timeout-secs", type=_seconds, default=o.http_keepalive_timeout_secs,
        metavar="N", help="an idle keep-alive connection is closed after N s "
        f"(default {o.http_keepalive_timeout_secs:g}; 0: never)")
    group.add_argument(
        "--http-max-header-count", type=_positive, default=o.http_max_header_count, metavar="N",
        help=f"headers per request (default {o.http_max_header_count}; more: 431)")
    group.add_argument(
        "--http-max-header-size", type=_positive, default=o.http_max_header_bytes,
        metavar="BYTES", help="the request line and headers together "
        f"(default {o.http_max_header_bytes // 1024} KiB; more: 414 or 431)")


def _restriction(text: str) -> Restriction:
    try:
        return parse_restriction(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_access_control(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group("access control (Triton's flags)")
    groups = ", ".join(API_GROUPS)
    group.add_argument(
        "--http-restricted-api", action="append", default=[], type=_restriction,
        metavar="API[,API...]:HEADER=VALUE",
        help=f"HTTP requests to these API groups ({groups}) need HEADER with VALUE, else 403; "
        "VALUE may be env:NAME or file:PATH to keep it out of process listings (repeatable)")
    group.add_argument(
        "--grpc-restricted-protocol", action="append", default=[], type=_restriction,
        metavar="API[,API...]:KEY=VALUE",
        help="gRPC calls to these API groups need metadata KEY with VALUE, else "
        "PERMISSION_DENIED (repeatable; grpc.health.v1 stays open for probes)")


def _add_model_management(serve: argparse.ArgumentParser) -> None:
    """Model management flags, named and meaning as Triton's."""
    group = serve.add_argument_group("model management")
    group.add_argument(
        "--model-control-mode", choices=[m.value for m in ControlMode], default="none",
        help="none (default): every model at start, the repository API cannot load or unload; "
        "poll: every model at start, then the repository is rescanned every "
        "--repository-poll-secs; explicit: --load-model's models at start, the rest through "
        "the repository API",
    )
    group.add_argument(
        "--load-model", action="append", default=[], metavar="NAME",
        help="explicit mode: load this model at start (repeatable; '*' loads every model)",
    )
    group.add_argument(
        "--repository-poll-secs", type=_seconds, default=15.0, metavar="N",
        help="poll mode: seconds between rescans of the repository (default 15)",
    )
    group.add_argument(
        "--model-load-thread-count", type=_positive, default=4, metavar="N",
        help="threads that load models, off the event loop (default 4)",
    )
    group.add_argument(
        "--exit-timeout-secs", type=_seconds, default=30.0, metavar="N",
        help="on SIGTERM, wait at most this long for accepted requests (default 30); what is "
        "left gets 503 and the exit status is 1",
    )
    group.add_argument(
        "--strict-readiness", type=_boolean, default=True, metavar="true|false",
        help="true (default): ready only when every model that should be loaded is READY; "
        "false: ready once the server is up",
    )
    group.add_argument(
        "--backend-config", action="append", default=[], type=_backend_config,
        metavar="[BACKEND,]SETTING=VALUE",
        help="backend settings; default-max-batch-size=N (default 4) is the max_batch_size of "
        "models whose configuration is completed from the model file",
    )


def _default_max_batch_size(settings: list[tuple[str, str, str]]) -> int:
    value = DEFAULT_MAX_BATCH_SIZE
    for backend, key, text in settings:
        if key != "default-max-batch-size":
            raise SystemExit(
                f"pyserver: --backend-config {backend + ',' if backend else ''}{key}: unknown "
                "setting; pyserver knows default-max-batch-size")
        try:
            value = int(text)
        except ValueError:
            value = -1
        if not 0 <= value <= MAX_BATCH_SIZE_LIMIT:
            raise SystemExit(
                f"pyserver: --backend-config default-max-batch-size: expected an integer from 0 "
                f"to {MAX_BATCH_SIZE_LIMIT}, got {text!r}")
    return value


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
        for restricted in (args.http_restricted_api, args.grpc_restricted_protocol):
            try:
                AccessPolicy(restricted)
            except ValueError as exc:
                raise SystemExit(f"pyserver: {exc}") from None
        mode = ControlMode(args.model_control_mode)
        if args.load_model and mode is not ControlMode.EXPLICIT:
            raise SystemExit(
                "pyserver: --load-model needs --model-control-mode explicit (in the other modes "
                "every model loads at start)")
        try:
            repository = model_layout.prepare(args.model_repository, args.model_name)
        except model_layout.ModelLayoutError as exc:
            raise SystemExit(f"pyserver: {exc}") from None
        drained = run(
            ServerOptions(
                model_repository=repository,
                host=args.host,
                http_port=args.http_port,
                max_request_size=args.max_request_size,
                pinned_memory_pool_byte_size=args.pinned_memory_pool_byte_size,
                allow_metrics=args.allow_metrics,
                metrics_port=args.metrics_port,
                model_control_mode=mode,
                load_models=tuple(args.load_model),
                repository_poll_secs=args.repository_poll_secs,
                model_load_thread_count=args.model_load_thread_count,
                exit_timeout_secs=args.exit_timeout_secs,
                strict_readiness=args.strict_readiness,
                default_max_batch_size=_default_max_batch_size(args.backend_config),
                http_header_timeout_secs=args.http_header_timeout_secs,
                http_body_timeout_secs=args.http_body_timeout_secs,
                http_keepalive_timeout_secs=args.http_keepalive_timeout_secs,
                http_max_header_count=args.http_max_header_count,
                http_max_header_bytes=args.http_max_header_size,
                http_restricted=tuple(args.http_restricted_api),
                grpc_restricted=tuple(args.grpc_restricted_protocol),
                allow_grpc=args.allow_grpc,
                grpc_port=args.grpc_port,
                grpc_host=args.grpc_address,
            )
        )
        if not drained:
            raise SystemExit(1)
