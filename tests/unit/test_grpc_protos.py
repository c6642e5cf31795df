"""pyserver's own .proto files against the messages Triton's client ships: every message, field,
enum value and RPC pyserver declares has Triton's name, number and type, so the two speak the
same wire format. (Reading tritonclient's compiled descriptors: no network, no Triton.)"""

from __future__ import annotations

import pytest
from google.protobuf import descriptor, descriptor_pool
from tritonclient.grpc import model_config_pb2, service_pb2

from pyserver.grpc import _descriptors
from pyserver.grpc import messages as pb

TRITON_FILES = (service_pb2.DESCRIPTOR, model_config_pb2.DESCRIPTOR)


def _ours() -> list[descriptor.Descriptor]:
    out = []
    for name in sorted(_descriptors.load_messages()):
        if name.startswith("inference."):
            out.append(pb.by_name(name).DESCRIPTOR)
    return out


def _triton(full_name: str) -> descriptor.Descriptor:
    return descriptor_pool.Default().FindMessageTypeByName(full_name)  # type: ignore[no-any-return]


def _field_signature(field: descriptor.FieldDescriptor) -> tuple[object, ...]:
    target = field.message_type or field.enum_type
    return (
        field.name, field.number, field.type, field.is_repeated,
        None if target is None else target.full_name,
        None if field.containing_oneof is None else field.containing_oneof.name,
    )


def _compare(ours: descriptor.Descriptor, theirs: descriptor.Descriptor) -> None:
    their_fields = {f.number: f for f in theirs.fields}
    for field in ours.fields:
        assert field.number in their_fields, f"{ours.full_name}.{field.name}: no field {field.number}"
        mine, triton = _field_signature(field), _field_signature(their_fields[field.number])
        if mine[5] != triton[5] and ours.full_name == "inference.ModelConfig":
            # Triton wraps dynamic_batching in the oneof scheduling_choice, which pyserver does
            # not declare: a oneof member and a plain field are the same on the wire.
            mine, triton = mine[:5], triton[:5]
        assert mine == triton, f"{ours.full_name}.{field.name}"
    for enum in ours.enum_types:
        their_values = {v.name: v.number for v in theirs.enum_types_by_name[enum.name].values}
        assert {v.name: v.number for v in enum.values} == {
            k: v for k, v in their_values.items() if k in enum.values_by_name
        }
    for nested in ours.nested_types:
        _compare(nested, theirs.nested_types_by_name[nested.name])


@pytest.mark.parametrize("message", _ours(), ids=lambda d: d.full_name)
def test_every_message_matches_triton(message: descriptor.Descriptor) -> None:
    _compare(message, _triton(message.full_name))


def test_the_service_matches_triton() -> None:
    ours = pb.by_name("inference.ModelInferRequest").DESCRIPTOR.file.pool.FindServiceByName(
        "inference.GRPCInferenceService"
    )
    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours.full_name == theirs.full_name == pb.SERVICE
    for method in ours.methods:
        triton = theirs.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            triton.input_type.full_name, triton.output_type.full_name
        )
        assert (method.client_streaming, method.server_streaming) == (
            triton.client_streaming, triton.server_streaming
        )


def test_the_datatype_enum_is_pyservers() -> None:
    from pyserver.types import DataType

    enum = pb.ModelConfig.DESCRIPTOR.file.enum_types_by_name["DataType"]
    for datatype in DataType:
        assert enum.values_by_name[datatype.config_name].number == int(datatype)


def test_messages_live_in_a_pool_of_their_own() -> None:
    """tritonclient's messages of the same names stay in the default pool, untouched."""
    ours = pb.ModelInferRequest.DESCRIPTOR
    assert ours.file.pool is not descriptor_pool.Default()
    assert _triton("inference.ModelInferRequest") is not ours
    # and a message written by one side reads on the other
    request = service_pb2.ModelInferRequest(model_name="m", raw_input_contents=[b"\x01\x02"])
    request.inputs.add(name="x", datatype="UINT8", shape=[1, 2])
    read = pb.ModelInferRequest.FromString(request.SerializeToString())
    assert (read.model_name, read.inputs[0].name, list(read.inputs[0].shape)) == ("m", "x", [1, 2])


def test_protoc_compiles_the_checked_in_protos(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """What setup.py runs: a stale descriptor set is rebuilt from the .proto files."""
    pytest.importorskip("grpc_tools", reason="grpcio-tools is a build requirement, not installed")
    for source in _descriptors.PROTOS.glob("*.proto"):
        (tmp_path / source.name).write_text(source.read_text())
    target = _descriptors.write_descriptor_set(tmp_path)
    assert target.read_bytes() == _descriptors.compile_protos(_descriptors.PROTOS)
    built = target.stat().st_mtime_ns
    assert _descriptors.write_descriptor_set(tmp_path).stat().st_mtime_ns == built  # fresh: kept
