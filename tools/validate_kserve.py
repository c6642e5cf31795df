#!/usr/bin/env python3
"""Validate KServe manifests offline against KServe's CRD schemas, as the API server would,
plus the rules KServe's webhook and pyserver add. No cluster needed.

    python tools/validate_kserve.py deploy/kserve/*.yaml
    python tools/validate_kserve.py --expect-invalid tests/fixtures/kserve_invalid/*.yaml

The schemas are the `openAPIV3Schema` of each CRD in ../shared/kserve-crds/ (found from the
repository upwards; --crds or KSERVE_CRDS names another folder). They are read as the API server
reads a structural schema:

- a field no schema declares is an error (the API server would drop it silently, which hides a
  misspelt field; `kubectl apply` in strict mode refuses it);
- `x-kubernetes-int-or-string` takes an integer or a string, `nullable` adds null,
  `x-kubernetes-preserve-unknown-fields` lets any field through, `format: int32/int64` bounds
  integers, `x-kubernetes-list-type` map/set refuses duplicate keys or items;
- `metadata` is checked against ObjectMeta's fields; duplicate YAML keys are errors.

Then the semantic rules, which schemas cannot say: KServe's webhook refuses one format with two
priorities in a runtime, and two runtimes offering the same format, version and protocol at the
same priority; protocol versions are v1, v2, grpc-v1 or grpc-v2; an InferenceService served by
one of these runtimes (named, or chosen by its format) must ask for a protocol the runtime
speaks (KServe's default, v1, pyserver does not); the deployment mode is one KServe knows.

With --expect-invalid every file must fail, and with the error its first `# expect: TEXT` line
names (so a fixture fails for the reason it was written for). Exit status: 0 all as expected,
1 otherwise, 2 the CRDs or a file could not be read.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import functools
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRD_FILES = (
    "serving.kserve.io_clusterservingruntimes.yaml",
    "serving.kserve.io_servingruntimes.yaml",
    "serving.kserve.io_inferenceservices.yaml",
)
RUNTIME_KINDS = ("ServingRuntime", "ClusterServingRuntime")
PROTOCOLS = ("v1", "v2", "grpc-v1", "grpc-v2")
# KServe's names, current and legacy (pkg/constants: Standard = RawDeployment, Knative = Serverless).
DEPLOYMENT_MODES = ("Standard", "RawDeployment", "Knative", "Serverless", "ModelMesh")
INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}

# ObjectMeta's fields a manifest may set (the rest are the server's: uid, resourceVersion...).
OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
        "generateName": {"type": "string"},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
    },
}


def find_crds(start: Path | None = None) -> Path | None:
    """KSERVE_CRDS, else the first `shared/kserve-crds` beside the repository or above it."""
    if os.environ.get("KSERVE_CRDS"):
        return Path(os.environ["KSERVE_CRDS"])
    here = (start or Path(__file__)).resolve()
    for folder in [here, *here.parents]:
        candidate = folder / "shared" / "kserve-crds"
        if (candidate / CRD_FILES[0]).is_file():
            return candidate
    return None


# --- YAML ------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_documents(text: str) -> list[Any]:
    return [doc for doc in yaml.load_all(text, Loader=_StrictLoader) if doc is not None]


# --- the schemas ------------------------------------------------------------------------------


def structural(schema: Any) -> Any:
    """An openAPIV3Schema node as JSON Schema (draft 4) that checks what the API server would,
    with unknown fields refused (see the module's docstring)."""
    if isinstance(schema, list):
        return [structural(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    named = ("properties", "patternProperties", "definitions")  # name -> schema maps
    out = {key: structural(value) for key, value in schema.items()
           if key not in ("description", "example", *named)}
    for key in named:
        if key in schema:
            out[key] = {name: structural(sub) for name, sub in schema[key].items()}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
    if schema.get("format") in INT_RANGES and out.get("type") in ("integer", ["integer", "null"]):
        low, high = INT_RANGES[schema["format"]]
        out.setdefault("minimum", low)
        out.setdefault("maximum", high)
    is_object = schema.get("type") == "object" or "properties" in schema
    if is_object and not schema.get("x-kubernetes-preserve-unknown-fields") \
            and "additionalProperties" not in schema:
        out["additionalProperties"] = False
        out.setdefault("properties", {})
    return out


def _list_type(validator: Any, list_type: Any, instance: Any, schema: dict[str, Any]) -> Iterator[jsonschema.ValidationError]:
    """x-kubernetes-list-type: map (unique by the list-map-keys, with their defaults) or set."""
    if not isinstance(instance, list):
        return
    if list_type == "set":
        seen: list[Any] = []
        for item in instance:
            if item in seen:
                yield jsonschema.ValidationError(f"duplicate item {item!r} in a list-type set")
            seen.append(item)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        defaults = {k: v.get("default") for k, v in schema.get("items", {}).get("properties", {}).items()}
        seen_keys: set[tuple[Any, ...]] = set()
        for item in instance:
            if not isinstance(item, dict):
                continue
            key = tuple(str(item.get(k, defaults.get(k))) for k in keys)
            if key in seen_keys:
                named = ", ".join(f"{k}={v}" for k, v in zip(keys, key))
                yield jsonschema.ValidationError(f"duplicate entry ({named}) in a list keyed by {', '.join(keys)}")
            seen_keys.add(key)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"x-kubernetes-list-type": _list_type}
)


@dataclass
class Schemas:
    """Validators by (apiVersion, kind), from the CRD files."""

    by_kind: dict[tuple[str, str], Any] = field(default_factory=dict)

    @classmethod
    @functools.lru_cache(maxsize=4)
    def load(cls, folder: Path) -> Schemas:
        """Read once per folder and process (the InferenceService CRD is 2 MB)."""
        schemas = cls()
        for name in CRD_FILES:
            # libyaml when PyYAML has it: the InferenceService CRD alone is 2 MB of YAML.
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            crd = yaml.load((folder / name).read_text(encoding="utf-8"), Loader=loader)
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served", True):
                    continue
                root = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                api_version = f"{group}/{version['name']}"
                schema = structural(root)
                schema["properties"]["metadata"] = OBJECT_META
                schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
                schemas.by_kind[(api_version, kind)] = _Validator(schema)
        return schemas


# --- checking ---------------------------------------------------------------------------------


def _where(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


def _explain(error: jsonschema.ValidationError) -> Iterator[str]:
    where = _where(error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = sorted(error.schema.get("properties", {}))
        for name in sorted(set(error.instance) - set(known)):
            close = [k for k in known if k.lower() == name.lower()] or difflib.get_close_matches(name, known, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            yield f"{where}: unknown field \"{name}\"{hint}"
    elif error.validator == "anyOf" and {"type": "integer"} in error.validator_value:
        yield f"{where}: expected an integer or a string, got {error.instance!r}"
    else:
        yield f"{where}: {error.message}"


@dataclass
class Document:
    source: str
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind"))

    @property
    def name(self) -> str:
        metadata = self.body.get("metadata")
        return str(metadata.get("name")) if isinstance(metadata, dict) else "?"

    @property
    def label(self) -> str:
        return f"{self.source}: {self.kind}/{self.name}"


def schema_errors(doc: Document, schemas: Schemas) -> list[str]:
    body = doc.body
    key = (str(body.get("apiVersion")), str(body.get("kind")))
    validator = schemas.by_kind.get(key)
    if validator is None:
        known = ", ".join(f"{k} ({a})" for a, k in sorted(schemas.by_kind))
        return [f"no KServe schema for apiVersion {key[0]!r} kind {key[1]!r} (known: {known})"]
    errors = sorted(validator.iter_errors(body), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [line for error in errors for line in _explain(error)]


def _formats(runtime: dict[str, Any]) -> list[dict[str, Any]]:
    spec = runtime.get("spec") or {}
    return [f for f in spec.get("supportedModelFormats") or [] if isinstance(f, dict)]


def runtime_rules(doc: Document) -> list[str]:
    """KServe's webhook (one priority per format in a runtime) and known protocol names."""
    errors = []
    spec = doc.body.get("spec") or {}
    for i, protocol in enumerate(spec.get("protocolVersions") or []):
        if protocol not in PROTOCOLS:
            errors.append(f"spec.protocolVersions[{i}]: unknown protocol {protocol!r} (KServe's: {', '.join(PROTOCOLS)})")
    priorities: dict[str, Any] = {}
    for i, fmt in enumerate(_formats(doc.body)):
        if not fmt.get("autoSelect"):
            continue
        name = str(fmt.get("name", "")).lower()
        if name in priorities and priorities[name] != fmt.get("priority") and None not in (priorities[name], fmt.get("priority")):
            errors.append(f"spec.supportedModelFormats[{i}]: different priorities assigned for the model format {name} (KServe's webhook refuses this)")
        priorities.setdefault(name, fmt.get("priority"))
    return errors


def cross_rules(docs: list[Document]) -> dict[int, list[str]]:
    """Rules between documents: runtimes competing at one priority, and InferenceServices
    against the runtimes among the documents. Keys are indexes into docs."""
    errors: dict[int, list[str]] = {}
    runtimes = [(i, d) for i, d in enumerate(docs) if d.kind in RUNTIME_KINDS]
    for n, (_, a) in enumerate(runtimes):
        for j, b in runtimes[n + 1:]:
            if a.kind != b.kind or set((a.body.get("spec") or {}).get("protocolVersions") or []).isdisjoint(
                    (b.body.get("spec") or {}).get("protocolVersions") or []):
                continue
            for fa in _formats(a.body):
                for fb in _formats(b.body):
                    same = str(fa.get("name")).lower() == str(fb.get("name")).lower() and fa.get("version") == fb.get("version")
                    if same and fa.get("autoSelect") and fb.get("autoSelect") and fa.get("priority") is not None \
                            and fa.get("priority") == fb.get("priority"):
                        version = f" {fa['version']}" if fa.get("version") else ""
                        errors.setdefault(j, []).append(
                            f"same priority {fa.get('priority')} as {a.kind}/{a.name} ({a.source}) for "
                            f"the model format {fa.get('name')}{version} (KServe's webhook refuses this)")
    by_name = {d.name: d for _, d in runtimes}
    for i, doc in enumerate(docs):
        if doc.kind != "InferenceService":
            continue
        errors.setdefault(i, []).extend(_inference_service_rules(doc, by_name, [d for _, d in runtimes]))
    return errors


def _inference_service_rules(doc: Document, runtimes: dict[str, Document], all_runtimes: list[Document]) -> list[str]:
    errors = []
    metadata = doc.body.get("metadata") or {}
    mode = (metadata.get("annotations") or {}).get("serving.kserve.io/deploymentMode")
    if mode is not None and mode not in DEPLOYMENT_MODES:
        errors.append(f"metadata.annotations: serving.kserve.io/deploymentMode {mode!r} is not one of {', '.join(DEPLOYMENT_MODES)}")
    model = ((doc.body.get("spec") or {}).get("predictor") or {}).get("model")
    if not isinstance(model, dict):
        return errors
    fmt = model.get("modelFormat") or {}
    protocol = model.get("protocolVersion")
    runtime_name = model.get("runtime")
    if runtime_name is not None:
        runtime = runtimes.get(runtime_name)
        candidates = [runtime] if runtime is not None else []
        if runtime is not None and not any(
            str(f.get("name")).lower() == str(fmt.get("name")).lower()
            and (fmt.get("version") is None or f.get("version") == fmt.get("version"))
            for f in _formats(runtime.body)
        ):
            errors.append(f"spec.predictor.model.modelFormat: runtime {runtime_name} does not list {fmt.get('name')} {fmt.get('version', '')}".rstrip())
    else:
        candidates = [
            r for r in all_runtimes
            if any(f.get("autoSelect") and str(f.get("name")).lower() == str(fmt.get("name")).lower()
                   and (fmt.get("version") is None or f.get("version") == fmt.get("version"))
                   for f in _formats(r.body))
        ]
    for runtime in candidates:
        spoken = (runtime.body.get("spec") or {}).get("protocolVersions") or ["v1"]
        if (protocol or "v1") not in spoken:
            said = f"protocolVersion {protocol}" if protocol else "no protocolVersion (KServe's default: v1)"
            errors.append(f"spec.predictor.model: {said}, but runtime {runtime.name} speaks {', '.join(spoken)}: set protocolVersion: {spoken[0]}")
    return errors


def validate(paths: list[Path], schemas: Schemas) -> dict[str, list[str]]:
    """Errors by document label (a file that cannot be parsed: by file name); every document
    appears, with [] when it is valid."""
    results: dict[str, list[str]] = {}
    docs: list[Document] = []
    for path in paths:
        try:
            loaded = load_documents(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            results[str(path)] = [f"invalid YAML: {exc}".replace("\n", " ")]
            continue
        for body in loaded:
            if not isinstance(body, dict):
                results[str(path)] = [f"a document is not a mapping: {body!r}"]
                continue
            docs.append(Document(str(path), body))
    cross = cross_rules(docs)
    for i, doc in enumerate(docs):
        errors = schema_errors(doc, schemas)
        if doc.kind in RUNTIME_KINDS:
            errors += runtime_rules(doc)
        errors += cross.get(i, [])
        label = doc.label
        while label in results:
            label += "'"
        results[label] = errors
    return results


def expected_error(path: Path) -> str | None:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# expect:"):
            return line.removeprefix("# expect:").strip()
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--crds", type=Path, help="folder of KServe's CRD files (default: ../shared/kserve-crds)")
    parser.add_argument("--expect-invalid", action="store_true",
                        help="each file must fail, with the error its '# expect:' line names")
    args = parser.parse_args(argv)
    crds = args.crds or find_crds()
    if crds is None or not all((crds / name).is_file() for name in CRD_FILES):
        print(f"validate_kserve: KServe's CRDs not found ({crds or 'no shared/kserve-crds above ' + str(Path(__file__).parent)}); "
              "set KSERVE_CRDS or --crds", file=sys.stderr)
        return 2
    schemas = Schemas.load(crds)
    try:
        if not args.expect_invalid:
            results = validate(args.files, schemas)
            for label, errors in results.items():
                print(f"{'OK  ' if not errors else 'FAIL'} {label}")
                for error in errors:
                    print(f"       {error}")
            return 1 if any(results.values()) else 0
        failed = 0
        for path in args.files:
            results = validate([path], schemas)
            errors = [e for errs in results.values() for e in errs]
            want = expected_error(path)
            if want is None:
                print(f"FAIL {path}: no '# expect: TEXT' line says which error it must raise")
                failed += 1
            elif not any(want in e for e in errors):
                print(f"FAIL {path}: expected an error containing {want!r}, got {errors or 'none'}")
                failed += 1
            else:
                print(f"OK   {path}: refused: {next(e for e in errors if want in e)}")
        return 1 if failed else 0
    except OSError as exc:
        print(f"validate_kserve: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
