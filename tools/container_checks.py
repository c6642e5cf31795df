#!/usr/bin/env python3
"""The checks .ci/container runs against pyserver's image with podman (deploy/podman.env
sourced), each printing what it found and exiting non-zero on the first failure.

    python tools/container_checks.py serve IMAGE     # run it as a user would; tritonclient
    python tools/container_checks.py drain IMAGE     # podman stop with a request in flight
    python tools/container_checks.py kube IMAGE RENDERED.yaml   # podman kube play a Deployment
    python tools/container_checks.py promql-rules    # deploy/'s PromQL as rules, for promtool

Servers listen on 127.0.0.1 with host networking, on free ports; every container started here
is removed before the check returns.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.http as httpclient
import yaml

ROOT = Path(__file__).resolve().parent.parent
SIZE_TARGET_BYTES = 500 * 10**6
UID = "1000"


def say(message: str) -> None:
    print(f"container_checks: {message}", flush=True)


def fail(message: str) -> None:
    print(f"container_checks: FAILED: {message}", flush=True)
    raise SystemExit(1)


def check(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def podman(*args: str, timeout: float = 120, check_rc: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check_rc and done.returncode != 0:
        fail(f"podman {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, container: str, limit_s: float = 90) -> float:
    """Seconds until /v2/health/ready answered 200; fails with the container's log if not."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        state = podman("inspect", "--format", "{{.State.Status}}", container, check_rc=False).stdout.strip()
        if state in ("exited", "stopped"):
            break
        time.sleep(0.25)
    log = podman("logs", container, check_rc=False)
    fail(f"{container} not ready on port {port}: {(log.stdout + log.stderr)[-3000:]}")
    return 0.0


@contextmanager
def container(name: str, *run_args: str) -> Iterator[str]:
    podman("rm", "--force", "--ignore", name, check_rc=False)
    # No health timer: podman would ask systemd for one, which these machines lack; the image's
    # HEALTHCHECK is run by hand below (`podman healthcheck run`).
    podman("run", "--detach", "--name", name, "--network", "host", "--health-interval", "disable", *run_args)
    try:
        yield name
    finally:
        podman("rm", "--force", "--time", "0", name, check_rc=False)


def non_root(name: str) -> None:
    uid = podman("exec", name, "id", "-u").stdout.strip()
    check(uid == UID, f"id -u in the container is {uid!r}, expected {UID}")
    status = podman("exec", name, "cat", "/proc/1/status").stdout
    uids = re.search(r"^Uid:\s+(.*)$", status, re.M)
    check(uids is not None and set(uids.group(1).split()) == {UID},
          f"PID 1's Uid line is {uids.group(0) if uids else 'missing'}")
    comm = podman("exec", name, "cat", "/proc/1/cmdline").stdout.replace("\0", " ").strip()
    check("pyserver serve" in comm, f"PID 1 is {comm!r}, not pyserver")
    say(f"non-root: uid {uid} (PID 1: {comm})")


def monitoring_metric_names() -> set[str]:
    """Scraped series the monitoring files and the KEDA query read (recorded series excepted)."""
    names: set[str] = set()
    texts = [p.read_text() for p in (ROOT / "deploy" / "monitoring").iterdir()
             if p.suffix in (".yaml", ".json") and not p.name.endswith(".test.yaml")]
    for text in texts:
        names |= set(re.findall(r"\b(?:nv_inference_[a-z_]+[a-z]|pyserver_[a-z_]+[a-z])\b", text))
    names.discard("pyserver_queue_time_per_request_us")  # the adapter's name for a recorded rule
    return names


def serve(image: str) -> None:
    port = free_port()
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())
    say(f"image {image}: {size / 1e6:.0f} MB (target <= {SIZE_TARGET_BYTES / 1e6:.0f} MB)")
    check(size <= SIZE_TARGET_BYTES, f"image is {size / 1e6:.0f} MB, over the target")
    inspected = json.loads(podman("image", "inspect", image).stdout)[0]
    config, healthcheck = inspected["Config"], inspected.get("Healthcheck")
    check(config.get("User") == f"{UID}:{UID}", f"image USER is {config.get('User')!r}")
    check(healthcheck is not None, "the image has no HEALTHCHECK (built without --format docker?)")
    say(f"image: USER {config['User']}, EXPOSE {sorted(config.get('ExposedPorts', {}))}, "
        f"ENTRYPOINT {config.get('Entrypoint')}, HEALTHCHECK {healthcheck['Test']}")

    started = time.monotonic()
    # As the user runs it: only --host and --http-port, the bundled models at /models.
    with container("pyserver-ci-serve", image, "--host", "127.0.0.1", "--http-port", str(port)) as name:
        ready_s = wait_ready(port, name)
        say(f"ready {ready_s:.1f} s after podman run returned ({time.monotonic() - started:.1f} s in all)")
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        check(client.is_server_live(), "not live")
        check(client.is_server_ready(), "not ready")
        metadata = client.get_server_metadata()
        say(f"server metadata: {metadata['name']} {metadata['version']} extensions {metadata.get('extensions')}")
        model = client.get_model_metadata("digits")
        check([t["name"] for t in model["inputs"]] == ["pixels"], f"digits metadata: {model}")
        say(f"digits metadata: inputs {model['inputs']}, outputs {[o['name'] for o in model['outputs']]}")

        import onnxruntime as ort
        from sklearn.datasets import load_digits

        digits = load_digits()
        pixels = digits.data[-64:].astype(np.float32)
        session = ort.InferenceSession(str(ROOT / "engines" / "digits" / "1" / "model.onnx"))
        want_label, want_prob = session.run(None, {"pixels": pixels})
        for binary in (True, False):
            inp = httpclient.InferInput("pixels", list(pixels.shape), "FP32")
            inp.set_data_from_numpy(pixels, binary_data=binary)
            outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")]
            result = client.infer("digits", [inp], outputs=outputs)
            np.testing.assert_array_equal(result.as_numpy("label"), want_label)
            np.testing.assert_allclose(result.as_numpy("probabilities"), want_prob, rtol=1e-5, atol=1e-6)
            accuracy = float((result.as_numpy("label")[:, 0] == digits.target[-64:]).mean())
            say(f"{'binary' if binary else 'JSON'} inference: 64 digits, labels equal ONNX Runtime's on the "
                f"host, accuracy {accuracy:.3f}")
        client.close()

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            scraped = r.read().decode()
        families = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", scraped, re.M))
        families |= set(re.findall(r"^# TYPE (\S+)", scraped, re.M))  # histograms' own names
        wanted = monitoring_metric_names()
        missing = sorted(wanted - families)
        check(not missing, f"/metrics lacks what deploy/monitoring reads: {missing}")
        say(f"/metrics has all {len(wanted)} series deploy/monitoring reads")

        non_root(name)
        health = podman("healthcheck", "run", name, check_rc=False)
        check(health.returncode == 0, f"podman healthcheck run: exit {health.returncode} {health.stdout}{health.stderr}")
        say(f"HEALTHCHECK: {(health.stdout.strip() or 'healthy')}")
        stop_timed(name)


def stop_timed(name: str) -> float:
    start = time.monotonic()
    done = subprocess.run(["timeout", "15", "podman", "stop", "-t", "10", name],
                          capture_output=True, text=True)
    took = time.monotonic() - start
    check(done.returncode == 0, f"timeout 15 podman stop -t 10: exit {done.returncode} {done.stderr}")
    code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    check(code == "0", f"the server exited with {code} (137: killed after the timeout)")
    check(took < 10, f"podman stop took {took:.1f} s")
    say(f"podman stop -t 10: {took:.1f} s, exit code {code}")
    return took


SLOW_MODEL = """# identity with a fixed delay per batch, so that a request is in flight when podman stops
backend = "identity"
max_batch_size = 8

[[input]]
name = "INPUT0"
data_type = "TYPE_FP32"
dims = [16]

[[output]]
name = "OUTPUT0"
data_type = "TYPE_FP32"
dims = [16]

[parameters]
execute_delay_us = "{delay_us}"
"""


def drain(image: str) -> None:
    """podman stop while a request runs: the request is answered, the server exits 0, the stop
    returns well inside its 10 s. The model comes as one model's folder at /mnt/models, read-only,
    served with --model-name as KServe runs it."""
    delay_s = 3.0
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "slow"
        (folder / "1").mkdir(parents=True)
        (folder / "config.toml").write_text(SLOW_MODEL.format(delay_us=int(delay_s * 1e6)))
        folder.chmod(0o755)
        Path(tmp).chmod(0o755)
        with container("pyserver-ci-drain", "--volume", f"{folder}:/mnt/models:ro", image,
                       "--model-repository=/mnt/models", "--model-name=slow",
                       "--host", "127.0.0.1", "--http-port", str(port)) as name:
            wait_ready(port, name)
            client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=30)
            check(client.is_model_ready("slow"), "model 'slow' (one model's folder, --model-name) not ready")
            client.close()
            say("one model's folder at /mnt/models (read-only) served as --model-name slow")
            data = np.arange(16, dtype=np.float32).reshape(1, 16)
            outcome: dict[str, Any] = {}

            def infer() -> None:
                # A client of its own: tritonclient.http's runs on gevent, one hub per thread.
                own = httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=30)
                try:
                    inp = httpclient.InferInput("INPUT0", [1, 16], "FP32")
                    inp.set_data_from_numpy(data)
                    outcome["result"] = own.infer("slow", [inp]).as_numpy("OUTPUT0")
                except Exception as exc:  # reported below
                    outcome["error"] = exc
                finally:
                    own.close()
                outcome["at"] = time.monotonic()

            sent = time.monotonic()
            thread = threading.Thread(target=infer)
            thread.start()
            time.sleep(1.0)  # the request is in the model's delay now (3 s per batch)
            check("at" not in outcome, f"the request finished before the stop: {outcome}")
            took = stop_timed(name)
            thread.join(timeout=15)
            check("error" not in outcome, f"the in-flight request failed: {outcome.get('error')!r}")
            check(np.array_equal(outcome.get("result"), data), f"the in-flight request got {outcome.get('result')}")
            answered = outcome["at"] - sent
            # The stop waited for the request: it cannot have returned before the delay ran out.
            check(took >= delay_s - 1.0 - 0.5, f"podman stop returned after {took:.1f} s, before the request could finish")
            say(f"in-flight request answered {answered:.1f} s after it was sent, output equal to its input; "
                f"stop waited for it ({took:.1f} s)")


def kube(image: str, rendered: Path) -> None:
    """The rendered Deployment as `podman kube play` runs it: the overlay's args, securityContext
    and volumes as written; ports and probes dropped (host network, no systemd timers), one
    replica, the CI image, and --host/--http-port appended."""
    port = free_port()
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    deployment["spec"]["replicas"] = 1
    [spec] = deployment["spec"]["template"]["spec"]["containers"]
    spec["image"] = image
    for key in ("ports", "readinessProbe", "livenessProbe", "startupProbe"):
        spec.pop(key, None)
    spec["args"] = [*spec.get("args", []), "--host=127.0.0.1", f"--http-port={port}"]
    with tempfile.TemporaryDirectory() as tmp:
        play = Path(tmp) / "deployment.yaml"
        play.write_text(yaml.safe_dump(deployment))
        podman("kube", "down", str(play), check_rc=False)
        podman("kube", "play", "--network", "host", str(play), timeout=180)
        try:
            pod = f"{deployment['metadata']['name']}-pod-0"
            name = f"{pod}-{spec['name']}"
            ready_s = wait_ready(port, name)
            say(f"podman kube play {rendered.name}: {name} ready in {ready_s:.1f} s, args {spec['args']}")
            non_root(name)
            readonly = podman("exec", name, "sh", "-c", "touch /probe 2>&1 || true").stdout
            check("Read-only file system" in readonly, f"the root file system is writable: {readonly!r}")
            podman("exec", name, "sh", "-c", "touch /tmp/probe")
            say("readOnlyRootFilesystem holds; /tmp (emptyDir) is writable")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/digits/ready", timeout=5) as r:
                check(r.status == 200, f"digits not ready: {r.status}")
        finally:
            podman("kube", "down", str(play), check_rc=False)


def promql_rules() -> None:
    """Print a Prometheus rule file holding every PromQL expression of deploy/ that is not a
    recording rule already (the dashboard's, the adapter's, the KEDA query), Grafana's and the
    adapter's placeholders filled in, for `promtool check rules` to parse."""
    monitoring = ROOT / "deploy" / "monitoring"
    dashboard = json.loads((monitoring / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    adapter = yaml.safe_load((monitoring / "prometheus-adapter.yaml").read_text())
    exprs += [q for r in adapter["rules"] for q in (r["seriesQuery"], r["metricsQuery"])]
    for path in sorted((ROOT / "deploy" / "kserve").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            metrics = ((doc or {}).get("spec", {}).get("predictor", {}).get("autoScaling") or {}).get("metrics", [])
            exprs += [m["external"]["metric"]["query"] for m in metrics if m.get("type") == "External"]
    fills = {"$__rate_interval": "1m", "$namespace": ".*", "$model": ".*",
             "<<.GroupBy>>": "namespace, pod", "<<.LabelMatchers>>": 'namespace="ci"'}
    rules = []
    for i, expr in enumerate(exprs):
        # label_values(...) is Grafana's, not PromQL: its first argument is a selector.
        match = re.fullmatch(r"label_values\((.*),\s*\w+\)", expr.strip(), re.S)
        expr = match.group(1) if match else expr
        for placeholder, value in fills.items():
            expr = expr.replace(placeholder, value)
        rules.append({"record": f"ci:deploy_expression_{i}", "expr": expr})
    print(yaml.safe_dump({"groups": [{"name": "deploy-expressions", "rules": rules}]}, sort_keys=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="check", required=True)
    for name in ("serve", "drain", "kube"):
        p = sub.add_parser(name)
        p.add_argument("image")
        if name == "kube":
            p.add_argument("rendered", type=Path)
    sub.add_parser("promql-rules")
    args = parser.parse_args()
    if args.check == "promql-rules":
        promql_rules()
    elif args.check == "serve":
        serve(args.image)
    elif args.check == "drain":
        drain(args.image)
    else:
        kube(args.image, args.rendered)


if __name__ == "__main__":
    main()
