"""One hierarchy of errors, each carrying its HTTP status and the gRPC status code that means
the same (a name of grpc.StatusCode; kept as text so this module needs no grpc).

The HTTP protocol and the gRPC servicer are the single places that turn these into answers,
with the same message on both. A completion's status code from the C++ core becomes one of them
by its name (`from_core_status`): the numbers live only in csrc/core/status.h, which the
bindings export as pyserver._core.STATUS_CODES. docs/protocol.md lists the statuses side by side.
"""

from __future__ import annotations


class ServerError(Exception):
    """Base class: a failure a client should hear about, with the HTTP status that says so."""

    http_status = 500
    grpc_status = "INTERNAL"


class InvalidRequest(ServerError):
    http_status = 400
    grpc_status = "INVALID_ARGUMENT"


class NotFound(ServerError):
    http_status = 404
    grpc_status = "NOT_FOUND"


class Forbidden(ServerError):
    """An API group restricted by --http-restricted-api / --grpc-restricted-protocol, without
    the header value it needs."""

    http_status = 403
    grpc_status = "PERMISSION_DENIED"


class PayloadTooLarge(ServerError):
    http_status = 413
    grpc_status = "RESOURCE_EXHAUSTED"


class Unavailable(ServerError):
    """The server or model is not ready, or it is shutting down."""

    http_status = 503
    grpc_status = "UNAVAILABLE"


class QueueFull(Unavailable):
    """The model's queue is full: retry later. HTTP says 503, as for any Unavailable; gRPC has a
    code of its own for a resource that ran out."""

    grpc_status = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(ServerError):
    """The request's time in the queue ran out."""

    http_status = 503
    grpc_status = "DEADLINE_EXCEEDED"


class Cancelled(ServerError):
    """The client went away; nobody reads this, but it is counted."""

    http_status = 499
    grpc_status = "CANCELLED"


class Unsupported(ServerError):
    http_status = 501
    grpc_status = "UNIMPLEMENTED"


class InternalError(ServerError):
    http_status = 500
    grpc_status = "INTERNAL"


class ModelLoadError(ServerError):
    """A model's configuration or files are wrong; the message names the file and the key."""

    http_status = 400
    grpc_status = "INVALID_ARGUMENT"


# The core's status names (csrc/core/status.h, pyserver._core.STATUS_CODES) -> the error.
_BY_CORE_STATUS: dict[str, type[ServerError]] = {
    "INVALID_ARGUMENT": InvalidRequest,
    "NOT_FOUND": NotFound,
    "UNAVAILABLE": Unavailable,
    "RESOURCE_EXHAUSTED": QueueFull,
    "INTERNAL": InternalError,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
    "CANCELLED": Cancelled,
    "UNSUPPORTED": Unsupported,
}


def from_core_status(name: str, message: str) -> ServerError:
    """The exception for a core status, by its name (an unknown one is an internal error)."""
    return _BY_CORE_STATUS.get(name, InternalError)(message)


def internal_message(exc: BaseException) -> str:
    """What a client hears of an unexpected exception (a bug), on every transport."""
    return f"internal error: {type(exc).__name__}: {exc}"
