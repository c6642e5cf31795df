"""Triton's model configuration as JSON, both ways.

`to_triton` writes a ModelConfig as GET /v2/models/{m}/config answers it (Triton's field names
and shapes). `from_triton` reads the same shape - the `config` parameter of a load request, and
what pbtxt.py parses out of a config.pbtxt - into the table the one reader (reader.py) checks:
maps of `{"string_value": ...}` become plain values, int64 fields that protobuf's JSON writes as
strings become integers, and Triton's fields that pyserver does not support are either named in
a warning (their meaning can be ignored) or refused (it cannot: sequence batching, ensembles,
ragged or reshaped tensors, decoupled models).
"""

from __future__ import annotations

import json
from typing import Any

from pyserver.config.monitoring import PARAMETER as MONITORING_PARAMETER
from pyserver.config.monitoring import to_table as monitoring_table
from pyserver.config.schema import ModelConfig, VersionPolicyKind
from pyserver.errors import ModelLoadError
from pyserver.types import TensorSpec

# Fields of Triton's ModelConfig whose meaning pyserver cannot honour: a model that sets them
# would answer differently here, so its load fails.
_REFUSED = {
    "sequence_batching": "stateful sequence batching",
    "ensemble_scheduling": "ensembles",
    "batch_input": "batch inputs",
    "batch_output": "batch outputs",
}
# Fields whose meaning can be ignored (tuning, caching, tags): named in a warning at load.
_IGNORED = (
    "optimization", "runtime", "response_cache", "model_repository_agents",
    "cc_model_filenames", "metric_tags", "model_operations", "model_metrics",
)
# Tensor fields: their default needs nothing; another value is refused or warned about.
_TENSOR_DEFAULTS: dict[str, tuple[Any, bool]] = {
    # field: (the default, whether another value is refused rather than ignored)
    "format": ("FORMAT_NONE", False),
    "reshape": (None, True),
    "is_shape_tensor": (False, True),
    "allow_ragged_batch": (False, True),
    "optional": (False, True),
    "is_non_linear_format_io": (False, True),
    "label_filename": ("", False),
}
_GROUP_IGNORED = ("name", "host_policy", "profile", "secondary_devices", "rate_limiter")
# Integer fields that protobuf's JSON writes as strings (int64 and uint64).
_INTEGER_KEYS = frozenset({
    "max_batch_size", "dims", "preferred_batch_size", "max_queue_delay_microseconds",
    "priority_levels", "default_priority_level", "default_timeout_microseconds",
    "max_queue_size", "count", "gpus", "num_versions", "versions", "batch_size",
    "latency_target_microseconds",
})


def from_triton(doc: object, source: str) -> tuple[dict[str, Any], list[str]]:
    """The reader's table for Triton's JSON `doc`, and the warnings for ignored fields."""
    if not isinstance(doc, dict):
        raise ModelLoadError(f"{source}: expected a model configuration object, got "
                             f"{type(doc).__name__}")
    warnings: list[str] = []
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key in _REFUSED:
            raise ModelLoadError(
                f"{source}: {key}: pyserver does not support {_REFUSED[key]}; this model cannot "
                "be served as its configuration means it"
            )
        if key == "model_transaction_policy":
            if isinstance(value, dict) and value.get("decoupled") is True:
                raise ModelLoadError(
                    f"{source}: model_transaction_policy.decoupled: pyserver does not support "
                    "decoupled models (one response per request)"
                )
            continue
        if key in _IGNORED:
            warnings.append(f"{source}: {key}: not supported by pyserver; ignored")
            continue
        out[key] = value
    for plural in ("input", "output"):
        if isinstance(out.get(plural), list):
            out[plural] = [
                _tensor(item, f"{plural}[{i}]", source, warnings)
                for i, item in enumerate(out[plural])
            ]
    if isinstance(out.get("instance_group"), list):
        out["instance_group"] = [
            _group(item, f"instance_group[{i}]", source, warnings)
            for i, item in enumerate(out["instance_group"])
        ]
    if isinstance(out.get("parameters"), dict):
        out["parameters"] = _parameters(out["parameters"], source)
    return _integers(out), warnings


def _tensor(item: object, key: str, source: str, warnings: list[str]) -> object:
    if not isinstance(item, dict):
        return item  # the reader says what is wrong
    out = {}
    for field, value in item.items():
        if field in _TENSOR_DEFAULTS:
            default, refused = _TENSOR_DEFAULTS[field]
            if value == default or (field == "reshape" and not value):
                continue
            if refused:
                raise ModelLoadError(
                    f"{source}: {key}.{field}: pyserver does not support {field} "
                    f"(got {value!r}); the tensor would not mean what the configuration says"
                )
            warnings.append(f"{source}: {key}.{field}: not supported by pyserver; ignored")
            continue
        out[field] = value
    return out


def _group(item: object, key: str, source: str, warnings: list[str]) -> object:
    if not isinstance(item, dict):
        return item
    out = {}
    for field, value in item.items():
        if field == "passive" and value is True:
            raise ModelLoadError(f"{source}: {key}.passive: pyserver has no passive instances")
        if field == "passive":
            continue
        if field in _GROUP_IGNORED:
            if field != "name" and value:
                warnings.append(f"{source}: {key}.{field}: not supported by pyserver; ignored")
            continue
        out[field] = value
    return out


def _parameters(value: dict[str, Any], source: str) -> dict[str, Any]:
    """Triton's map<string, {string_value}> as plain values (a plain value passes as it is)."""
    out = {}
    for name, item in value.items():
        if isinstance(item, dict):
            if set(item) != {"string_value"}:
                raise ModelLoadError(
                    f"{source}: parameters.{name}: expected {{\"string_value\": \"...\"}}, got "
                    f"the key(s) {', '.join(sorted(item)) or 'none'}"
                )
            item = item["string_value"]
        out[name] = item
    return out


def _integers(value: Any, key: str = "") -> Any:
    """Integer fields written as strings ("16") made integers again, everywhere in the tree."""
    if isinstance(value, dict):
        return {k: _integers(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_integers(v, key) for v in value]
    if key in _INTEGER_KEYS and isinstance(value, str) and _is_integer_text(value):
        return int(value)
    return value


def _is_integer_text(text: str) -> bool:
    digits = text[1:] if text[:1] == "-" else text
    return digits.isascii() and digits.isdigit() and len(digits) <= 20


# --------------------------------------------------------------------------------------------
# the writer


def to_triton(config: ModelConfig) -> dict[str, Any]:
    """The JSON of GET /v2/models/{m}/config, with Triton's field names."""
    out: dict[str, Any] = {
        "name": config.name,
        "platform": config.platform,
        "backend": str(config.backend),
        "max_batch_size": config.max_batch_size,
        "input": [_tensor_to_triton(t) for t in config.inputs],
        "output": [_tensor_to_triton(t) for t in config.outputs],
    }
    batching = config.dynamic_batching
    if batching is not None:
        out["dynamic_batching"] = {
            "preferred_batch_size": list(batching.preferred_batch_size),
            "max_queue_delay_microseconds": batching.max_queue_delay_microseconds,
            "preserve_ordering": batching.preserve_ordering,
            "priority_levels": batching.priority_levels,
            "default_priority_level": batching.default_priority_level,
            "default_queue_policy": _policy_to_triton(batching.default_queue_policy),
            "priority_queue_policy": {
                str(level): _policy_to_triton(policy)
                for level, policy in batching.priority_queue_policy
            },
        }
        if batching.latency_target_microseconds:
            out["dynamic_batching"]["latency_target_microseconds"] = (
                batching.latency_target_microseconds
            )
    # Triton names unnamed groups "<model>_<index>".
    out["instance_group"] = [
        {"name": f"{config.name}_{i}", "kind": str(g.kind), "count": g.count,
         "gpus": list(g.gpus)}
        for i, g in enumerate(config.instance_group)
    ]
    out["parameters"] = {k: {"string_value": v} for k, v in config.parameters.items()}
    if config.monitoring is not None:  # pyserver's own table, as Triton's formats carry it
        out["parameters"][MONITORING_PARAMETER] = {
            "string_value": json.dumps(monitoring_table(config.monitoring))}
    policy = config.version_policy
    if policy.kind is VersionPolicyKind.LATEST:
        out["version_policy"] = {"latest": {"num_versions": policy.num_versions}}
    elif policy.kind is VersionPolicyKind.ALL:
        out["version_policy"] = {"all": {}}
    else:
        out["version_policy"] = {"specific": {"versions": list(policy.versions)}}
    out["default_model_filename"] = config.default_model_filename
    if config.model_warmup:
        out["model_warmup"] = [
            {
                "name": w.name, "batch_size": w.batch_size, "count": w.count,
                "inputs": {
                    i.name: {"data_type": i.datatype.config_name, "dims": list(i.dims),
                             str(i.data): i.file or True}
                    for i in w.inputs
                },
            }
            for w in config.model_warmup
        ]
    return out


def _tensor_to_triton(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "data_type": spec.datatype.config_name, "dims": list(spec.dims)}


def _policy_to_triton(policy: Any) -> dict[str, Any]:
    return {
        "timeout_action": str(policy.timeout_action),
        "default_timeout_microseconds": policy.default_timeout_microseconds,
        "allow_timeout_override": policy.allow_timeout_override,
        "max_queue_size": policy.max_queue_size,
    }
