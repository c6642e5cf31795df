"""The protobuf message classes of pyserver's gRPC service, by name (from protos/*.proto, made at
import: see _descriptors.py). Classes made at run time have no static types: they are Any."""

from __future__ import annotations

from typing import Any

from pyserver.grpc._descriptors import load_messages

_ALL = load_messages()

SERVICE = "inference.GRPCInferenceService"
HEALTH_SERVICE = "grpc.health.v1.Health"

ServerLiveRequest: Any = _ALL["inference.ServerLiveRequest"]
ServerLiveResponse: Any = _ALL["inference.ServerLiveResponse"]
ServerReadyRequest: Any = _ALL["inference.ServerReadyRequest"]
ServerReadyResponse: Any = _ALL["inference.ServerReadyResponse"]
ModelReadyRequest: Any = _ALL["inference.ModelReadyRequest"]
ModelReadyResponse: Any = _ALL["inference.ModelReadyResponse"]
ServerMetadataRequest: Any = _ALL["inference.ServerMetadataRequest"]
ServerMetadataResponse: Any = _ALL["inference.ServerMetadataResponse"]
ModelMetadataRequest: Any = _ALL["inference.ModelMetadataRequest"]
ModelMetadataResponse: Any = _ALL["inference.ModelMetadataResponse"]
ModelInferRequest: Any = _ALL["inference.ModelInferRequest"]
ModelInferResponse: Any = _ALL["inference.ModelInferResponse"]
ModelStreamInferResponse: Any = _ALL["inference.ModelStreamInferResponse"]
ModelConfigRequest: Any = _ALL["inference.ModelConfigRequest"]
ModelConfigResponse: Any = _ALL["inference.ModelConfigResponse"]
ModelConfig: Any = _ALL["inference.ModelConfig"]
ModelStatisticsRequest: Any = _ALL["inference.ModelStatisticsRequest"]
ModelStatisticsResponse: Any = _ALL["inference.ModelStatisticsResponse"]
RepositoryIndexRequest: Any = _ALL["inference.RepositoryIndexRequest"]
RepositoryIndexResponse: Any = _ALL["inference.RepositoryIndexResponse"]
RepositoryModelLoadRequest: Any = _ALL["inference.RepositoryModelLoadRequest"]
RepositoryModelLoadResponse: Any = _ALL["inference.RepositoryModelLoadResponse"]
RepositoryModelUnloadRequest: Any = _ALL["inference.RepositoryModelUnloadRequest"]
RepositoryModelUnloadResponse: Any = _ALL["inference.RepositoryModelUnloadResponse"]
LogSettingsRequest: Any = _ALL["inference.LogSettingsRequest"]
LogSettingsResponse: Any = _ALL["inference.LogSettingsResponse"]
HealthCheckRequest: Any = _ALL["grpc.health.v1.HealthCheckRequest"]
HealthCheckResponse: Any = _ALL["grpc.health.v1.HealthCheckResponse"]


def by_name(full_name: str) -> Any:
    """Any message class by its full name ("inference.ModelInferRequest")."""
    return _ALL[full_name]
