"""The rooms of docs/design.md (../shared/DESIGN.md as this project has moved it) stay true:
each module is imported in a fresh interpreter and what it pulled in is checked, and the http
and grpc rooms' own imports are read from their source."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# module -> modules it must not pull in, directly or indirectly
FORBIDDEN = {
    "pyserver.protocol.codec": ["aiohttp", "asyncio", "pyserver._core", "pyserver.http"],
    "pyserver.protocol.compression": ["aiohttp", "asyncio", "pyserver._core"],
    "pyserver.config": ["aiohttp", "pyserver._core", "pyserver.http"],
    "pyserver.types": ["aiohttp", "pyserver._core"],
    "pyserver.errors": ["aiohttp", "pyserver._core"],
    "pyserver.completions": ["aiohttp", "pyserver.http"],
    "pyserver.model": ["aiohttp", "pyserver.http"],
    "pyserver.repository": ["aiohttp", "pyserver.http", "onnxruntime", "tensorrt", "torch"],
    "pyserver.dataplane": ["aiohttp", "pyserver.http"],
    "pyserver.backends": ["aiohttp", "pyserver.http", "onnxruntime"],
    "pyserver.backends.identity": ["aiohttp", "pyserver.http", "onnxruntime"],
    "pyserver.backends.onnxruntime": ["aiohttp", "pyserver.http"],
    # the engine libraries are imported when a model loads, never with the module
    "pyserver.backends.tensorrt": ["aiohttp", "pyserver.http", "tensorrt", "torch"],
    "pyserver.backends.pytorch": ["aiohttp", "pyserver.http", "tensorrt", "torch"],
    "pyserver.cli.build_engine": ["tensorrt", "torch", "aiohttp"],
    "pyserver.metrics": ["aiohttp", "pyserver.http", "pyserver.backends"],
    "pyserver.logs": ["aiohttp", "pyserver._core", "pyserver.http"],
    "pyserver.http.app": ["pyserver.backends.onnxruntime", "onnxruntime", "pyserver.cli"],
    "pyserver.protocol.grpc_codec": ["aiohttp", "asyncio", "grpc", "pyserver._core", "pyserver.http"],
    # the gRPC room: the data plane, protocol, errors, logs; not the core, engines or aiohttp
    "pyserver.grpc": ["aiohttp", "pyserver.http", "onnxruntime", "pyserver.cli"],
    # an HTTP-only server does not load grpcio
    "pyserver.server": ["grpc", "pyserver.grpc"],
}


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_module_pulls_in_nothing_forbidden(module: str) -> None:
    code = f"import sys, json; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    bad = [f for f in FORBIDDEN[module] if f in loaded or any(m.startswith(f + ".") for m in loaded)]
    assert not bad, f"{module} pulls in {bad}"


def _direct_imports(path) -> set[str]:  # type: ignore[no-untyped-def]
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "pyserver" / "http").glob("*.py")), ids=lambda p: p.name)
def test_http_room_does_not_touch_core_or_engines(path) -> None:  # type: ignore[no-untyped-def]
    imports = _direct_imports(path)
    bad = sorted(i for i in imports if i.startswith(("pyserver._core", "pyserver.backends", "onnxruntime")))
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", sorted((ROOT / "pyserver" / "grpc").glob("*.py")), ids=lambda p: p.name)
def test_grpc_room_does_not_touch_core_engines_or_aiohttp(path) -> None:  # type: ignore[no-untyped-def]
    imports = _direct_imports(path)
    bad = sorted(i for i in imports
                 if i.startswith(("pyserver._core", "pyserver.backends", "onnxruntime", "aiohttp",
                                  "pyserver.http", "pyserver.model", "pyserver.repository")))
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", sorted((ROOT / "pyserver").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_imports_the_cli(path) -> None:  # type: ignore[no-untyped-def]
    if "cli" in path.parts or path.name == "__main__.py":
        return
    assert not any(i.startswith("pyserver.cli") for i in _direct_imports(path))


def test_every_module_imports_alone() -> None:
    """Catches import cycles: each module first in a fresh interpreter."""
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "pyserver").rglob("*.py")
        if p.name not in ("__main__.py",)
    )
    modules = [m.removesuffix(".__init__") for m in modules]
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    for module in modules:
        subprocess.run([sys.executable, "-c", code, module], cwd=ROOT, check=True)
