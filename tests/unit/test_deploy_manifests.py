"""The deployment manifests (deploy/): KServe's against the CRD schemas with the project's
validator (tools/validate_kserve.py) and its negative fixtures, the kustomize overlays rendered
and validated when kubectl is there, and the monitoring files against the metrics pyserver
exports. What runs in a container is checked by .ci/container."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pyserver.cli.main import build_parser
from tests.conftest import ROOT

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the manifests (pip install '.[test]')")
pytest.importorskip("jsonschema", reason="jsonschema is needed by tools/validate_kserve.py (pip install '.[test]')")

DEPLOY = ROOT / "deploy"
KSERVE = sorted((DEPLOY / "kserve").glob("*.yaml"))
FIXTURES = sorted((ROOT / "tests" / "fixtures" / "kserve_invalid").glob("*.yaml"))
OVERLAYS = sorted(p.parent for p in (DEPLOY / "k8s" / "overlays").glob("*/kustomization.yaml"))
PYSERVER_FORMATS = {"onnx", "tensorrt", "pytorch"}


def _load_validator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("validate_kserve", ROOT / "tools" / "validate_kserve.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["validate_kserve"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


validate_kserve = _load_validator()


@pytest.fixture(scope="module")
def schemas() -> Any:
    crds = validate_kserve.find_crds(ROOT)
    if crds is None:
        pytest.skip("KServe's CRDs not found (../shared/kserve-crds above the repository, or KSERVE_CRDS)")
    return validate_kserve.Schemas.load(crds)


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kserve_docs(kind: str) -> list[dict[str, Any]]:
    return [d for p in KSERVE for d in documents(p) if d["kind"] == kind]


def serve_args(args: list[str]) -> Any:
    """Parsed as `pyserver serve` parses them after the image's entrypoint, so every flag a
    manifest passes exists (KServe fills {{.Name}} with the InferenceService's name)."""
    filled = [a.replace("{{.Name}}", "digits") for a in args]
    return build_parser().parse_args(["serve", "--model-repository", "/models", *filled])


# --- KServe: schemas and the validator -------------------------------------------------------------


def test_there_are_runtimes_and_inference_services() -> None:
    names = {p.name for p in KSERVE}
    assert {"clusterservingruntime.yaml", "inferenceservice-onnx-cpu.yaml",
            "inferenceservice-tensorrt-gpu.yaml"} <= names
    assert len(FIXTURES) >= 10


def test_every_kserve_manifest_is_valid_together(schemas: Any) -> None:
    results = validate_kserve.validate(KSERVE, schemas)
    assert len(results) == sum(len(documents(p)) for p in KSERVE)
    assert {label: errors for label, errors in results.items() if errors} == {}


@pytest.mark.parametrize("path", KSERVE, ids=lambda p: p.name)
def test_each_kserve_manifest_is_valid_alone(schemas: Any, path: Path) -> None:
    results = validate_kserve.validate([path], schemas)
    assert results and all(errors == [] for errors in results.values()), results


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_negative_fixture_fails_for_its_reason(schemas: Any, path: Path) -> None:
    want = validate_kserve.expected_error(path)
    assert want, f"{path.name} has no '# expect:' line"
    errors = [e for errs in validate_kserve.validate([path], schemas).values() for e in errs]
    assert any(want in e for e in errors), errors


def _mutated(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    node: Any = doc
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    for part in parents:
        node = node[part]
    node[last] = value
    return doc


@pytest.mark.parametrize(("path", "value", "error"), [
    ("spec.containers.0.readinessProbe.httpGet.paht", "/x",
     'spec.containers[0].readinessProbe.httpGet: unknown field "paht" (did you mean "path"?)'),
    ("spec.containers.0.securityContext.runAsNonRoot", "true",
     "spec.containers[0].securityContext.runAsNonRoot: 'true' is not of type 'boolean'"),
    ("spec.containers.0.resources.requests", ["cpu"], "spec.containers[0].resources.requests: ['cpu'] is not of type 'object'"),
    ("spec.supportedModelFormats.0.autoSelect", "yes", "'yes' is not of type 'boolean'"),
    ("spec.containers.0.ports.0.containerPort", 2**31, "is greater than the maximum of 2147483647"),
    ("spec.volumes.0.emptyDir.sizeLimit", "16 megabytes", "does not match"),
    ("spec.containers.0.args", "--http-port=8080", "spec.containers[0].args: '--http-port=8080' is not of type 'array'"),
    ("spec.containers.0.name", None, "None is not of type 'string'"),
])
def test_the_validator_reads_deep_into_the_runtime(schemas: Any, path: str, value: Any, error: str) -> None:
    [runtime] = [d for d in kserve_docs("ClusterServingRuntime") if d["metadata"]["name"] == "pyserver"]
    assert validate_kserve.schema_errors(validate_kserve.Document("t", runtime), schemas) == []
    errors = validate_kserve.schema_errors(validate_kserve.Document("t", _mutated(runtime, path, value)), schemas)
    assert any(error in e for e in errors), errors


def test_the_command_line_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    crds = validate_kserve.find_crds(ROOT)
    if crds is None:
        pytest.skip("KServe's CRDs not found")
    main = validate_kserve.main
    assert main(["--crds", str(crds), *map(str, KSERVE)]) == 0
    assert capsys.readouterr().out.count("OK ") == sum(len(documents(p)) for p in KSERVE)
    assert main(["--crds", str(crds), str(FIXTURES[0])]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert main(["--crds", str(crds), "--expect-invalid", *map(str, FIXTURES)]) == 0
    # A fixture that does not fail is itself a failure under --expect-invalid.
    assert main(["--crds", str(crds), "--expect-invalid", str(KSERVE[0])]) == 1
    assert "no '# expect: TEXT' line" in capsys.readouterr().out
    assert main(["--crds", str(tmp_path), str(KSERVE[0])]) == 2
    assert "CRDs not found" in capsys.readouterr().err


# --- KServe: what the issue asks of the manifests -------------------------------------------


def test_runtimes_make_pyserver_the_choice_for_its_formats() -> None:
    chosen = set()
    for runtime in kserve_docs("ClusterServingRuntime"):
        spec = runtime["spec"]
        assert {"v2", "grpc-v2"} <= set(spec["protocolVersions"])
        for fmt in spec["supportedModelFormats"]:
            if fmt.get("autoSelect"):
                # KServe's own runtimes for these formats (Triton, TorchServe) have priority 1.
                assert fmt["priority"] >= 2 and fmt.get("version"), fmt
                chosen.add(fmt["name"])
        assert spec["annotations"]["prometheus.kserve.io/path"] == "/metrics"
    assert chosen == PYSERVER_FORMATS


@pytest.mark.parametrize("runtime", kserve_docs("ClusterServingRuntime"), ids=lambda r: r["metadata"]["name"])
def test_runtime_container(runtime: dict[str, Any]) -> None:
    [container] = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"
    args = serve_args(container["args"])
    assert args.model_repository == Path("/mnt/models") and args.model_name == "digits"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": args.http_port, "grpc": 8001}
    assert runtime["spec"]["annotations"]["prometheus.kserve.io/port"] == str(args.http_port)
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": args.http_port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": args.http_port}
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True and security["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    # --model-name's links go under /tmp, which must be writable with a read-only root.
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


@pytest.mark.parametrize("isvc", kserve_docs("InferenceService"), ids=lambda r: r["metadata"]["name"])
def test_inference_service_examples(isvc: dict[str, Any]) -> None:
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["protocolVersion"] in ("v2", "grpc-v2")  # KServe's default is v1
    assert predictor["model"]["modelFormat"]["name"] in PYSERVER_FORMATS
    assert 1 <= predictor["minReplicas"] < predictor["maxReplicas"]
    assert predictor["autoScaling"]["metrics"], "an autoscaling target"


def test_the_gpu_example_asks_for_a_gpu_and_scales_on_queue_time() -> None:
    [isvc] = [d for d in kserve_docs("InferenceService") if d["spec"]["predictor"]["model"]["modelFormat"]["name"] == "tensorrt"]
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    [metric] = predictor["autoScaling"]["metrics"]
    assert "pyserver:queue_time_per_request_us:rate1m" in metric["external"]["metric"]["query"]


# --- plain Kubernetes: kustomize ----------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomize overlays cannot be rendered here "
                    "(.ci/container renders them where it is)")
    out = {}
    for overlay in OVERLAYS:
        done = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        out[overlay.name] = [d for d in yaml.safe_load_all(done.stdout) if d is not None]
    return out


def test_overlays_cpu_and_gpu_exist() -> None:
    assert [o.name for o in OVERLAYS] == ["cpu", "gpu"]


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_rendered_overlay(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    deployment, service, hpa = (_one(docs, k) for k in ("Deployment", "Service", "HorizontalPodAutoscaler"))
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    args = serve_args(container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": args.http_port, "grpc": 8001}
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {"http": "http", "grpc": "grpc"}
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(args.http_port)
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > 30  # preStop + pyserver's drain
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    kinds = {m["type"] for m in hpa["spec"]["metrics"]}
    assert kinds == {"Pods", "Resource"}
    gpu_limit = container["resources"]["limits"].get("nvidia.com/gpu")
    if overlay == "gpu":
        assert gpu_limit == "1" and container["image"].endswith(":latest-gpu")
        assert args.model_repository == Path("/mnt/models")
        assert _one(docs, "PersistentVolumeClaim")["metadata"]["name"] == "pyserver-models"
    else:
        assert gpu_limit is None and container["image"].endswith(":latest")
        assert args.model_repository == Path("/models")


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_rendered_overlay_is_valid_kubernetes_1_32(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (.ci/container installs it)")
    for doc in rendered[overlay]:
        kubernetes_validate.validate(doc, "1.32.0", strict=True)


def test_kubernetes_validate_would_catch_a_misspelt_field(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (.ci/container installs it)")
    deployment = json.loads(json.dumps(_one(rendered["cpu"], "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.32.0", strict=True)


# --- monitoring -------------------------------------------------------------------------------


MONITORING = DEPLOY / "monitoring"
METRIC = re.compile(r"\b(?:nv_[a-z_]+|pyserver_[a-z_]+|pyserver:[a-z0-9_:]+)")


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Metric families pyserver exports (rendered with no model loaded: every family still
    writes its # TYPE line), with a histogram's _bucket/_sum/_count series."""
    from pyserver.metrics import Metrics

    text = Metrics(lambda: []).render().decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def recorded() -> set[str]:
    rules = yaml.safe_load((MONITORING / "recording-rules.yaml").read_text())
    return {r["record"] for g in rules["groups"] for r in g["rules"]}


def test_the_exported_names_are_read_from_pyserver(exported: set[str]) -> None:
    assert {"nv_inference_queue_duration_us", "nv_inference_request_success",
            "pyserver_request_duration_seconds_bucket"} <= exported


def promql_expressions() -> list[str]:
    """Every PromQL expression in deploy/: recording rules, the adapter's queries, the
    dashboard's targets and variables, the KEDA query of the GPU InferenceService."""
    rules = yaml.safe_load((MONITORING / "recording-rules.yaml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    adapter = yaml.safe_load((MONITORING / "prometheus-adapter.yaml").read_text())
    exprs += [q for r in adapter["rules"] for q in (r["seriesQuery"], r["metricsQuery"])]
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    for isvc in kserve_docs("InferenceService"):
        for metric in isvc["spec"]["predictor"].get("autoScaling", {}).get("metrics", []):
            if metric["type"] == "External":
                exprs.append(metric["external"]["metric"]["query"])
    return exprs


def test_every_metric_the_monitoring_files_read_exists(exported: set[str]) -> None:
    used = {m for expr in promql_expressions() for m in METRIC.findall(expr)}
    assert len(used) >= 10, used
    assert sorted(used - exported - recorded()) == []


def test_dashboard_covers_what_the_issue_asks(exported: set[str]) -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for needed in ("nv_inference_request_success", "nv_inference_queue_duration_us",
                   "nv_inference_compute_infer_duration_us", "histogram_quantile(0.5",
                   "histogram_quantile(0.99", "pyserver_batch_size_bucket",
                   "nv_inference_request_failure", "reason"):
        assert needed in exprs, needed
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_hpa_adapter_and_rule_agree() -> None:
    adapter = yaml.safe_load((MONITORING / "prometheus-adapter.yaml").read_text())
    [rule] = adapter["rules"]
    hpa = yaml.safe_load((DEPLOY / "k8s" / "base" / "hpa.yaml").read_text())
    [pods] = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods["metric"]["name"] == rule["name"]["as"]
    assert re.fullmatch(rule["name"]["matches"], "pyserver:queue_time_per_request_us:rate1m")
    assert "pyserver:queue_time_per_request_us:rate1m" in recorded()
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}


def test_recording_rules_under_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (.ci/container takes it from Debian's prometheus package)")
    done = subprocess.run([promtool, "test", "rules", str(MONITORING / "recording-rules.test.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


# --- the image's health check ------------------------------------------------------------


def _healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pyserver_healthcheck", DEPLOY / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("argv", "address"), [
    (["pyserver", "serve", "--model-repository", "/models"], ("127.0.0.1", 8000)),
    (["pyserver", "serve", "--host", "127.0.0.1", "--http-port", "9000"], ("127.0.0.1", 9000)),
    (["pyserver", "serve", "--http-port=8000", "--http-port=8080"], ("127.0.0.1", 8080)),  # last wins
    (["pyserver", "serve", "--http-address", "10.1.2.3"], ("10.1.2.3", 8000)),
    (["pyserver", "serve", "--host", "::"], ("[::1]", 8000)),
    (["pyserver", "serve", "--host=fd00::5", "--http-port", "81"], ("[fd00::5]", 81)),
    (["pyserver", "serve", "--http-port"], ("127.0.0.1", 8000)),  # argparse would refuse it
])
def test_healthcheck_asks_the_port_the_server_was_started_with(argv: list[str], address: tuple[str, int]) -> None:
    assert _healthcheck().server_address(argv) == address
