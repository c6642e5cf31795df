"""One hierarchy of errors, each carrying its HTTP status.

The HTTP layer's middleware is the single place that turns these into responses; the data plane
is the single place that turns a core status code into one of them (`from_status`).
"""

from __future__ import annotations

from pyserver.types import StatusCode


class ServerError(Exception):
    """Base class: a failure a client should hear about, with the HTTP status that says so."""

    http_status = 500


class InvalidRequest(ServerError):
    http_status = 400


class NotFound(ServerError):
    http_status = 404


class PayloadTooLarge(ServerError):
    http_status = 413


class Unavailable(ServerError):
    """The server or model is not ready, or its queue is full."""

    http_status = 503


class DeadlineExceeded(ServerError):
    """The request's time in the queue ran out."""

    http_status = 503


class Cancelled(ServerError):
    """The client went away; nobody reads this, but it is counted."""

    http_status = 499


class Unsupported(ServerError):
    http_status = 501


class InternalError(ServerError):
    http_status = 500


class ModelLoadError(ServerError):
    """A model's configuration or files are wrong; the message names the file and the key."""

    http_status = 400


_BY_STATUS: dict[StatusCode, type[ServerError]] = {
    StatusCode.INVALID_ARGUMENT: InvalidRequest,
    StatusCode.NOT_FOUND: NotFound,
    StatusCode.UNAVAILABLE: Unavailable,
    StatusCode.INTERNAL: InternalError,
    StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    StatusCode.CANCELLED: Cancelled,
    StatusCode.UNSUPPORTED: Unsupported,
}


def from_status(code: int, message: str) -> ServerError:
    """The exception for a core status code (the one translation table on the Python side)."""
    try:
        cls = _BY_STATUS[StatusCode(code)]
    except (ValueError, KeyError):
        cls = InternalError
    return cls(message)
