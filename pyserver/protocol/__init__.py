"""The v2 / Open Inference Protocol codec, sans-IO: bytes in, objects out.

Nothing here touches a socket, an event loop or the C++ core; the HTTP layer calls these, and
the gRPC layer calls `pyserver.protocol.grpc_codec`, which applies the same checks.
"""

from __future__ import annotations

from pyserver.protocol.codec import (
    InferRequest,
    RequestedOutput,
    decode_request,
    encode_error,
    encode_response,
    parse_header_length,
)
from pyserver.protocol.compression import DEFAULT_MAX_BODY, choose_encoding, compress, decompress

__all__ = [
    "DEFAULT_MAX_BODY",
    "InferRequest",
    "RequestedOutput",
    "choose_encoding",
    "compress",
    "decode_request",
    "decompress",
    "encode_error",
    "encode_response",
    "parse_header_length",
]
