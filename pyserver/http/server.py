"""The server's composition moved to pyserver/server.py (it starts the HTTP and the gRPC front
ends over one data plane); these names stay importable from here."""

from __future__ import annotations

from pyserver.server import Server, ServerOptions, run, serve_forever

__all__ = ["Server", "ServerOptions", "run", "serve_forever"]
