"""GET /v2/openapi.json: an OpenAPI 3.1 document generated from the route table, valid in
structure, naming exactly the routes the application serves, each of which answers."""

from __future__ import annotations

import json

import pytest
from openapi_spec_validator import validate

from pyserver.http.app import make_router
from pyserver.http.openapi import openapi_document
from pyserver.http.routes import ROUTES
from tests.component.test_http_errors import request
from tests.conftest import RunningServer


def documented(document: dict) -> set[tuple[str, str]]:  # type: ignore[type-arg]
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item}


def test_the_served_document_is_valid_openapi_3_1(server: RunningServer) -> None:
    status, headers, body = request(server, "GET", "/v2/openapi.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    document = json.loads(body)
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on any structural error, unresolved $ref included
    assert document == json.loads(json.dumps(openapi_document(metrics=True)))


def test_every_table_route_is_documented_and_nothing_else() -> None:
    for metrics in (True, False):
        want = {(r.method, r.path) for r in ROUTES if metrics or not r.only_with_metrics}
        assert documented(openapi_document(metrics)) == want
    assert ("GET", "/metrics") not in documented(openapi_document(False))
    validate(openapi_document(False))
    operation_ids = [r.operation_id for r in ROUTES]
    assert len(operation_ids) == len(set(operation_ids))


@pytest.mark.parametrize("metrics", [True, False], ids=["metrics", "no-metrics"])
def test_the_application_serves_exactly_the_documented_routes(server: RunningServer, metrics: bool) -> None:
    router = make_router(server.server.dataplane, render_metrics=(lambda: b"") if metrics else None)  # type: ignore[attr-defined]
    served = {(method, pattern.replace("{version:[0-9]+}", "{version}"))
              for method, pattern in router.routes()}  # every GET also answers HEAD
    assert served == documented(openapi_document(metrics))


BODIES = {
    "infer": b'{"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [0]}]}',
    "update_log_settings": b"{}",
}


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_every_documented_route_answers(server: RunningServer, route) -> None:  # type: ignore[no-untyped-def]
    model = "digits" if route.handler == "model_monitoring" else "identity"  # digits monitors
    path = route.path.replace("{model}", model).replace("{version}", "1")
    body = BODIES.get(route.handler, b"") if route.method == "POST" else b""
    status, _, answer = request(server, route.method, path, body)
    # infer's JSON has 1 of 16 values: a 400 from the codec, which proves the route is there;
    # the session server runs with --model-control-mode none: load and unload say so
    want = 400 if route.handler in ("infer", "load_model", "unload_model") else 200
    assert status == want, answer
    if route.handler == "infer":
        assert b"INPUT0" in answer  # the codec's message, not "no such endpoint"
    if route.handler in ("load_model", "unload_model"):
        assert b"--model-control-mode none" in answer
