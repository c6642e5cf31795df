"""The HTTP API as data: every route's method, path, handler, summary and body schemas.

make_router (app.py) builds the HTTP server's routes from this table, and the OpenAPI document
(GET /v2/openapi.json, pyserver/http/openapi.py) is generated from it, so the two cannot drift
apart. Paths are written in OpenAPI's form; `router_path` adds the patterns the router matches
path parameters with (a version is a number: /versions/x is no route at all, 404).
"""

from __future__ import annotations

from dataclasses import dataclass

# Path parameters: name -> (regular expression, description)
PATH_PARAMETERS = {
    "model": (None, "The model's name."),
    "version": ("[0-9]+", "The model version (a positive number); without it, the latest."),
}


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # OpenAPI form: /v2/models/{model}
    handler: str  # a method of handlers.Handlers, or infer, openapi, metrics (app.py)
    summary: str
    request: str | None = None  # schema names in openapi.SCHEMAS; None: no body
    response: str | None = None  # None: the status says it all (health)
    errors: tuple[int, ...] = ()  # statuses besides 200 this route answers with its reason
    only_with_metrics: bool = False  # served only when metrics are on
    name: str | None = None  # the OpenAPI operationId, where the handler's name is taken
    body_required: bool = True  # False: an empty body means {}
    # the API group --http-restricted-api names (pyserver/access.py); "": never restricted
    # (/metrics: Prometheus scrapes it, and Triton serves it apart from the restricted APIs)
    group: str = "metadata"

    @property
    def operation_id(self) -> str:
        if self.name is not None:
            return self.name
        return self.handler + ("_version" if "{version}" in self.path else "")


def router_path(path: str) -> str:
    """/v2/models/{model}/versions/{version} -> .../versions/{version:[0-9]+}"""
    for name, (pattern, _) in PATH_PARAMETERS.items():
        if pattern is not None:
            path = path.replace("{" + name + "}", "{" + name + ":" + pattern + "}")
    return path


MODEL = "/v2/models/{model}"
VERSION = "/v2/models/{model}/versions/{version}"


def _per_model() -> list[Route]:
    routes = []
    for prefix in (MODEL, VERSION):
        which = "the latest version" if prefix == MODEL else "one version"
        routes += [
            Route("GET", prefix, "model_metadata", f"Model metadata ({which})",
                  response="ModelMetadataResponse", errors=(404,)),
            Route("GET", prefix + "/ready", "model_ready",
                  f"Model readiness ({which}): 200 ready, 400 not", errors=(404,),
                  group="health"),
            Route("GET", prefix + "/config", "model_config",
                  f"Model configuration, Triton's model_configuration extension ({which})",
                  response="ModelConfig", errors=(404,)),
            Route("GET", prefix + "/stats", "model_stats",
                  f"Model statistics, Triton's statistics extension ({which})",
                  response="ModelStatisticsResponse", errors=(404,), group="statistics"),
            Route("GET", prefix + "/monitoring", "model_monitoring",
                  f"What the model sees and says ({which}): input and output distributions "
                  "over the window, drift against the reference (pyserver's own)",
                  response="ModelMonitoring", errors=(404,), group="statistics"),
            Route("POST", prefix + "/infer", "infer",
                  f"Inference ({which}); JSON, or JSON and binary tensors (Triton's "
                  "binary_tensor_data extension)",
                  request="InferenceRequest", response="InferenceResponse",
                  errors=(400, 404, 413, 501, 503), group="inference"),
        ]
    return routes


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v2/health/live", "live", "Server liveness: 200 live, 400 not",
          group="health"),
    Route("GET", "/v2/health/ready", "ready",
          "Server readiness: 200 when every model is ready, 400 not", group="health"),
    Route("GET", "/v2", "server_metadata", "Server metadata and extensions",
          response="ServerMetadataResponse"),
    Route("GET", "/v2/models/stats", "model_stats", "Statistics of every model version",
          response="ModelStatisticsResponse", name="all_model_stats", group="statistics"),
    *_per_model(),
    Route("POST", "/v2/repository/index", "repository_index",
          "Every model of the repository with its versions' states (Triton's model_repository "
          "extension)", request="RepositoryIndexRequest", response="RepositoryIndexResponse",
          errors=(400,), body_required=False, group="model-repository"),
    Route("POST", "/v2/repository/models/{model}/load", "load_model",
          "Load or reload a model (or one version: parameters.version), with an optional "
          "config and files; 200 once it is READY", request="RepositoryLoadRequest",
          errors=(400, 503), body_required=False, group="model-repository"),
    Route("POST", "/v2/repository/models/{model}/unload", "unload_model",
          "Unload a model (or one version: parameters.version) once it has answered what it "
          "accepted", request="RepositoryUnloadRequest", errors=(400, 404, 503),
          body_required=False, group="model-repository"),
    Route("GET", "/v2/logging", "log_settings", "Log settings (Triton's logging extension)",
          response="LogSettings", group="logging"),
    Route("POST", "/v2/logging", "update_log_settings",
          "Change the log settings the body names; a bad body changes nothing",
          request="LogSettings", response="LogSettings", errors=(400,), group="logging"),
    Route("GET", "/v2/openapi.json", "openapi", "This document: the HTTP API in OpenAPI 3.1",
          response="OpenAPI"),
    Route("GET", "/metrics", "metrics", "Prometheus metrics (text exposition format)",
          response="Metrics", only_with_metrics=True, group=""),
)
