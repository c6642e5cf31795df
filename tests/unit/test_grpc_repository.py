"""RepositoryModelLoad / RepositoryModelUnload parameters as the data plane's arguments, and the
gRPC status of every error class (pyserver.errors -> grpc.StatusCode)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from pyserver import errors
from pyserver.errors import InvalidRequest
from pyserver.grpc import messages as pb
from pyserver.grpc.servicer import load_arguments, unload_arguments
from pyserver.grpc.status import status_code


def parameters(message: Any, values: dict[str, Any]) -> Any:
    field = {bool: "bool_param", int: "int64_param", str: "string_param", bytes: "bytes_param"}
    for key, value in values.items():
        setattr(message.parameters[key], field[type(value)], value)
    return message.parameters


def load(values: dict[str, Any] | None = None) -> Any:
    return parameters(pb.RepositoryModelLoadRequest(model_name="m"), values or {})


def unload(values: dict[str, Any] | None = None) -> Any:
    return parameters(pb.RepositoryModelUnloadRequest(model_name="m"), values or {})


def test_load_parameters() -> None:
    assert load_arguments(load()) == {"config": None, "version": None}
    got = load_arguments(load({"config": '{"backend": "identity"}', "file:1/model.onnx": b"\0\1",
                               "version": 2, "ignored": True}))
    assert got == {"config": '{"backend": "identity"}', "version": "2",
                   "files": {"1/model.onnx": b"\0\1"}}
    assert load_arguments(load({"version": "3"}))["version"] == "3"


@pytest.mark.parametrize(("values", "fragment"), [
    ({"config": 3}, "'config' must be a string_param"),
    ({"config": b"{}"}, "'config' must be a string_param"),
    ({"file:1/x": "text"}, "'file:1/x' must be a bytes_param"),
    ({"version": "latest"}, "'version' must be a positive version number"),
    ({"version": 0}, "'version' must be a positive version number"),
    ({"version": True}, "'version' must be a positive version number"),
])
def test_bad_load_parameters(values: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=fragment):
        load_arguments(load(values))


def test_a_parameter_without_a_value_is_refused() -> None:
    request = pb.RepositoryModelLoadRequest(model_name="m")
    request.parameters["config"].SetInParent()  # present, with no value chosen
    with pytest.raises(InvalidRequest, match="got no value"):
        load_arguments(request.parameters)


def test_unload_parameters() -> None:
    assert unload_arguments(unload()) == {"unload_dependents": False, "version": None}
    assert unload_arguments(unload({"unload_dependents": True, "version": 4})) == {
        "unload_dependents": True, "version": "4"}
    with pytest.raises(InvalidRequest, match="'unload_dependents' must be a bool_param"):
        unload_arguments(unload({"unload_dependents": "yes"}))


# what each HTTP status means, in gRPC's words (docs/protocol.md)
STATUS = {
    errors.InvalidRequest: (400, grpc.StatusCode.INVALID_ARGUMENT),
    errors.NotFound: (404, grpc.StatusCode.NOT_FOUND),
    errors.Forbidden: (403, grpc.StatusCode.PERMISSION_DENIED),
    errors.PayloadTooLarge: (413, grpc.StatusCode.RESOURCE_EXHAUSTED),
    errors.Unavailable: (503, grpc.StatusCode.UNAVAILABLE),
    errors.QueueFull: (503, grpc.StatusCode.RESOURCE_EXHAUSTED),
    errors.DeadlineExceeded: (503, grpc.StatusCode.DEADLINE_EXCEEDED),
    errors.Cancelled: (499, grpc.StatusCode.CANCELLED),
    errors.Unsupported: (501, grpc.StatusCode.UNIMPLEMENTED),
    errors.InternalError: (500, grpc.StatusCode.INTERNAL),
    errors.ModelLoadError: (400, grpc.StatusCode.INVALID_ARGUMENT),
    errors.ServerError: (500, grpc.StatusCode.INTERNAL),
}


def test_every_error_class_has_its_grpc_code() -> None:
    classes = {c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.ServerError)}
    assert classes == set(STATUS)  # a new class gets a row here
    for cls, (http, code) in STATUS.items():
        assert (cls.http_status, status_code(cls("x"))) == (http, code), cls.__name__


def test_core_status_codes_map_to_the_same_codes() -> None:
    """Every status the core can complete with (csrc/core/status.h's one table) has its error
    class, hence its HTTP status and gRPC code."""
    from pyserver import _core
    from pyserver.completions import StatusCode, from_status

    want = {StatusCode.INVALID_ARGUMENT: "INVALID_ARGUMENT", StatusCode.NOT_FOUND: "NOT_FOUND",
            StatusCode.UNAVAILABLE: "UNAVAILABLE", StatusCode.INTERNAL: "INTERNAL",
            StatusCode.DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED", StatusCode.CANCELLED: "CANCELLED",
            StatusCode.UNSUPPORTED: "UNIMPLEMENTED",
            StatusCode.RESOURCE_EXHAUSTED: "RESOURCE_EXHAUSTED"}
    assert set(want) | {StatusCode.OK} == set(StatusCode)
    assert set(_core.STATUS_CODES) == {code.name for code in StatusCode}
    for code, name in want.items():
        assert status_code(from_status(code, "m")).name == name
    assert isinstance(from_status(StatusCode.RESOURCE_EXHAUSTED, "m"), errors.QueueFull)
    assert from_status(99, "m").http_status == 500  # a code the core does not have
