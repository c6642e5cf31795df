"""pyserver.errors -> gRPC status codes: the one translation on the gRPC side. Each error class
names its code (`grpc_status`, beside its `http_status`); this reads it as grpc.StatusCode."""

from __future__ import annotations

import grpc

from pyserver.errors import ServerError


def status_code(error: ServerError) -> grpc.StatusCode:
    """The gRPC code that means what `error`'s HTTP status means (docs/protocol.md's table)."""
    return grpc.StatusCode[error.grpc_status]
