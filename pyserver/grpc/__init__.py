"""The gRPC front end: Triton's `inference.GRPCInferenceService` and `grpc.health.v1.Health`
over the same data plane as HTTP, on grpcio's asyncio server in the server's event loop.

A thin adapter, like pyserver/http: each RPC turns its message into data-plane calls and the
answer back into a message; inference requests are decoded and responses encoded by
pyserver.protocol.grpc_codec. This room may use the data plane, protocol, errors and logs; not
the C++ core, the engines or aiohttp (tests/unit/test_import_boundaries.py checks it).
"""

from __future__ import annotations

from pyserver.grpc.server import GrpcFrontEnd

__all__ = ["GrpcFrontEnd"]
