"""pyserver: a model server speaking KServe v2 over HTTP, batching in a C++ core."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
