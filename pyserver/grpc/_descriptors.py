"""pyserver's protobuf messages, made at import from its own .proto files.

`setup.py` compiles `protos/*.proto` once with protoc (grpcio-tools, a build requirement) into
`protos/descriptors.binpb`, a serialized FileDescriptorSet; this module turns that into message
classes in a descriptor pool of its own. Two choices, and why:

- A descriptor set rather than protoc's generated `_pb2.py` modules: generated code is tied to
  the protobuf runtime by the gencode/runtime version rules (the runtime may not be older than
  the protoc that generated the code, and a major version apart is refused or warned about), so
  a build with one grpcio-tools could fail to import beside another protobuf. A descriptor set
  is plain protobuf data that any protobuf 5 or later reads.
- A private pool rather than the default one: Triton's clients register messages of the same
  names (package `inference`) in the default pool, and a test process holds both.

In a source checkout with grpcio-tools installed, a descriptor set older than its .proto files
is rebuilt in memory, so editing a .proto needs no reinstall. This module imports only the
standard library at the top, so setup.py can load it by path before pyserver is installed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

PROTOS = Path(__file__).resolve().parent / "protos"
DESCRIPTOR_SET = "descriptors.binpb"


def compile_protos(proto_dir: Path = PROTOS) -> bytes:
    """Run protoc (from grpcio-tools) over every .proto in `proto_dir`; return the serialized
    FileDescriptorSet, imports included."""
    from grpc_tools import protoc  # build-time dependency only

    sources = sorted(p.name for p in proto_dir.glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, DESCRIPTOR_SET)
        code = protoc.main(
            ["protoc", f"-I{proto_dir}", f"--descriptor_set_out={out}", "--include_imports", *sources]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed ({code}) on {', '.join(sources)} in {proto_dir}")
        return Path(out).read_bytes()


def write_descriptor_set(proto_dir: Path = PROTOS) -> Path:
    """Compile into `proto_dir/descriptors.binpb` unless it is newer than every .proto there."""
    target = proto_dir / DESCRIPTOR_SET
    if not _stale(proto_dir, target):
        return target
    data = compile_protos(proto_dir)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


def _stale(proto_dir: Path, target: Path) -> bool:
    if not target.exists():
        return True
    built = target.stat().st_mtime
    return any(p.stat().st_mtime > built for p in proto_dir.glob("*.proto"))


def _descriptor_set() -> bytes:
    target = PROTOS / DESCRIPTOR_SET
    try:
        import grpc_tools  # noqa: F401  (present in a development checkout)
    except ImportError:
        if target.exists():
            return target.read_bytes()
        raise ImportError(
            f"{target} is missing: pyserver's gRPC messages are built at install time "
            "(pip install ., or python setup.py build_ext --inplace in a checkout)"
        ) from None
    if _stale(PROTOS, target):
        return compile_protos(PROTOS)
    return target.read_bytes()


def load_messages() -> dict[str, Any]:
    """Every message class of the .proto files, by full name ("inference.ModelInferRequest")."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    files = descriptor_pb2.FileDescriptorSet.FromString(_descriptor_set())
    pool = descriptor_pool.DescriptorPool()
    classes: dict[str, Any] = {}
    for file in files.file:
        pool.Add(file)
    for file in files.file:
        described = pool.FindFileByName(file.name)
        for message in described.message_types_by_name.values():
            classes[message.full_name] = message_factory.GetMessageClass(message)
    return classes
