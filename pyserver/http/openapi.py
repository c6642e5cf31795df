"""The HTTP API's OpenAPI 3.1 document, generated from the route table (routes.py) and the v2
schemas below (JSON Schema 2020-12, as OpenAPI 3.1 has it). Served at GET /v2/openapi.json;
docs/protocol.md is the prose beside it."""

from __future__ import annotations

from typing import Any

from pyserver import __version__
from pyserver.http.routes import PATH_PARAMETERS, ROUTES, Route
from pyserver.types import DataType

HEADER_LENGTH = "Inference-Header-Content-Length"
_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


_PARAMETERS = {
    "type": "object",
    "description": "Parameters by name: strings, numbers or booleans.",
    "additionalProperties": {"type": ["string", "number", "boolean"]},
}
_DURATION = {
    "type": "object",
    "properties": {"count": {"type": "integer"}, "ns": {"type": "integer"}},
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "ErrorResponse": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "string", "description": "What was wrong."}},
    },
    "Datatype": {"type": "string", "enum": [dt.name for dt in DataType]},
    "Parameters": _PARAMETERS,
    "TensorMetadata": {
        "type": "object", "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"}, "datatype": _ref("Datatype"),
            "shape": {**_array({"type": "integer"}),
                      "description": "-1: any size; the batch dimension first when batching"},
        },
    },
    "ServerMetadataResponse": {
        "type": "object", "required": ["name", "version", "extensions"],
        "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                       "extensions": _array({"type": "string"})},
    },
    "ModelMetadataResponse": {
        "type": "object", "required": ["name", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"}, "versions": _array({"type": "string"}),
            "platform": {"type": "string"},
            "inputs": _array(_ref("TensorMetadata")), "outputs": _array(_ref("TensorMetadata")),
        },
    },
    "RequestInput": {
        "type": "object", "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"}, "shape": _array({"type": "integer", "minimum": 0}),
            "datatype": _ref("Datatype"),
            "parameters": {**_PARAMETERS, "properties": {"binary_data_size": {
                "type": "integer", "minimum": 0,
                "description": "The tensor's bytes follow the JSON (binary extension)"}}},
            "data": {"type": "array", "description": "Row-major elements, flat or nested"},
        },
    },
    "RequestOutput": {
        "type": "object", "required": ["name"],
        "properties": {"name": {"type": "string"}, "parameters": {
            **_PARAMETERS, "properties": {"binary_data": {"type": "boolean"}}}},
    },
    "InferenceRequest": {
        "type": "object", "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {**_PARAMETERS, "properties": {
                "priority": {"type": "integer", "minimum": 0, "description": "1 = highest"},
                "timeout": {"type": "integer", "minimum": 0,
                            "description": "Microseconds the request may wait in the queue"},
                "binary_data_output": {"type": "boolean"},
            }},
            "inputs": _array(_ref("RequestInput")),
            "outputs": {**_array(_ref("RequestOutput")), "description": "None: every output"},
        },
    },
    "ResponseOutput": {
        "type": "object", "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"}, "shape": _array({"type": "integer"}),
            "datatype": _ref("Datatype"), "data": {"type": "array"},
            "parameters": {**_PARAMETERS, "properties": {
                "binary_data_size": {"type": "integer", "minimum": 0}}},
        },
    },
    "InferenceResponse": {
        "type": "object", "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"}, "model_version": {"type": "string"},
            "id": {"type": "string"}, "parameters": _ref("Parameters"),
            "outputs": _array(_ref("ResponseOutput")),
        },
    },
    "ModelConfig": {
        "type": "object", "description": "Triton's model configuration, as JSON",
        "properties": {
            "name": {"type": "string"}, "platform": {"type": "string"},
            "backend": {"type": "string"}, "max_batch_size": {"type": "integer"},
            "input": _array({"type": "object"}), "output": _array({"type": "object"}),
            "dynamic_batching": {"type": "object"}, "instance_group": _array({"type": "object"}),
            "version_policy": {"type": "object"}, "parameters": {"type": "object"},
            "default_model_filename": {"type": "string"},
        },
    },
    "ModelStatistics": {
        "type": "object", "required": ["name", "version"],
        "properties": {
            "name": {"type": "string"}, "version": {"type": "string"},
            "last_inference": {"type": "integer"}, "inference_count": {"type": "integer"},
            "execution_count": {"type": "integer"},
            "inference_stats": {"type": "object", "additionalProperties": _DURATION},
            "batch_stats": _array({"type": "object"}),
            "memory_usage": _array({"type": "object"}),
        },
    },
    "ModelStatisticsResponse": {
        "type": "object", "required": ["model_stats"],
        "properties": {"model_stats": _array(_ref("ModelStatistics"))},
    },
    "LogSettings": {
        "type": "object",
        "properties": {
            "log_file": {"type": "string"}, "log_info": {"type": "boolean"},
            "log_warnings": {"type": "boolean"}, "log_errors": {"type": "boolean"},
            "log_verbose_level": {"type": "integer", "minimum": 0},
            "log_format": {"type": "string", "enum": ["text", "json", "default", "ISO8601"]},
        },
    },
    "RepositoryIndexRequest": {
        "type": "object", "properties": {"ready": {"type": "boolean"}},
        "additionalProperties": False,
    },
    "RepositoryIndexResponse": _array({
        "type": "object", "required": ["name"],
        "properties": {
            "name": {"type": "string"}, "version": {"type": "string"},
            "state": {"type": "string",
                      "enum": ["UNKNOWN", "READY", "UNAVAILABLE", "LOADING", "UNLOADING"]},
            "reason": {"type": "string"},
        },
    }),
    "RepositoryLoadRequest": {
        "type": "object",
        "properties": {"parameters": {
            "type": "object",
            "properties": {
                "config": {"type": "string",
                           "description": "Triton's model configuration as JSON"},
                "version": {"type": ["string", "integer"],
                            "description": "pyserver's own: load just this version"},
            },
            "patternProperties": {"^file:": {
                "type": "string", "contentEncoding": "base64",
                "description": "file:<version>/<name>: a file of the model (needs config)"}},
            "additionalProperties": False,
        }},
    },
    "RepositoryUnloadRequest": {
        "type": "object",
        "properties": {"parameters": {
            "type": "object",
            "properties": {
                "unload_dependents": {"type": "boolean"},
                "version": {"type": ["string", "integer"],
                            "description": "pyserver's own: unload just this version"},
            },
            "additionalProperties": False,
        }},
    },
    "ModelMonitoring": {
        "type": "object", "required": ["name", "version"],
        "description": "The current window against the reference: per input histograms, NaN "
                       "and Inf counts and drift (population stability index); per output "
                       "class counts or value histograms and the top class's share (README)",
        "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
    },
    "OpenAPI": {"type": "object", "description": "An OpenAPI 3.1 document"},
    "Metrics": {"type": "string", "description": "Prometheus text exposition format 0.0.4"},
}

_BINARY = {
    "description": "Binary tensor extension: the JSON header, then each tensor's raw bytes",
    "contentMediaType": "application/octet-stream",
}
_STATUS_TEXT = {
    400: "Malformed request", 404: "Unknown model or version", 413: "Body over the size limit",
    501: "Unsupported feature (e.g. an unknown Content-Encoding)",
    503: "Not ready, queue full, or timed out in the queue",
}


def _content(route: Route, schema: str) -> dict[str, Any]:
    if schema == "Metrics":
        return {"text/plain": {"schema": _ref(schema)}}
    content: dict[str, Any] = {"application/json": {"schema": _ref(schema)}}
    if route.handler == "infer":
        content["application/octet-stream"] = {"schema": _BINARY}
    return content


def _operation(route: Route) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": route.operation_id, "summary": route.summary}
    parameters = [
        {"name": name, "in": "path", "required": True, "description": description,
         "schema": {"type": "string"} if pattern is None
         else {"type": "string", "pattern": f"^{pattern}$"}}
        for name, (pattern, description) in PATH_PARAMETERS.items()
        if "{" + name + "}" in route.path
    ]
    if route.handler == "infer":
        parameters.append({
            "name": HEADER_LENGTH, "in": "header", "required": False,
            "description": "Length of the JSON header when binary tensors follow it",
            "schema": {"type": "integer", "minimum": 0},
        })
    if parameters:
        operation["parameters"] = parameters
    if route.request is not None:
        operation["requestBody"] = {"required": route.body_required,
                                    "content": _content(route, route.request)}
    ok: dict[str, Any] = {"description": "OK"}
    if route.response is not None:
        ok["content"] = _content(route, route.response)
    if route.handler == "infer":
        ok["headers"] = {HEADER_LENGTH: {
            "description": "Length of the JSON header when binary outputs follow it",
            "schema": {"type": "integer"}}}
    responses: dict[str, Any] = {"200": ok}
    if route.response is None and route.handler in ("live", "ready", "model_ready"):
        responses["400"] = {"description": "Not live / not ready"}  # the status is the answer
    for status in route.errors:
        responses[str(status)] = {
            "description": _STATUS_TEXT[status],
            "content": {"application/json": {"schema": _ref("ErrorResponse")}},
        }
    operation["responses"] = responses
    return operation


def served_routes(metrics: bool) -> list[Route]:
    """The routes an application serves: /metrics only when metrics are on."""
    return [r for r in ROUTES if metrics or not r.only_with_metrics]


def openapi_document(metrics: bool) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in served_routes(metrics):
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pyserver",
            "version": __version__,
            "summary": "KServe v2 / Open Inference Protocol over HTTP, in Triton's dialect",
            "description": "Every error answers {\"error\": message}. docs/protocol.md describes "
            "the binary tensor extension, the validation order and the statuses; the same "
            "service is also served over gRPC (inference.GRPCInferenceService).",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
