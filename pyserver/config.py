"""A model's configuration: `<model_dir>/config.toml`, read into frozen dataclasses.

Names follow Triton's model configuration (max_batch_size, dynamic_batching, instance_group,
version_policy, ...) so that people who know Triton can read a config at sight, and so that
`to_triton()` can answer GET /v2/models/{m}/config in Triton's shape.

Every mistake in a config raises ModelLoadError with one message naming the file, the dotted key
(`input[1].dims`) and what was expected and found. Unknown keys are errors, not warnings: a typo
such as `max_batch_sise` must not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyserver.errors import ModelLoadError
from pyserver.types import DataType, ModelSignature, TensorSpec

CONFIG_FILENAME = "config.toml"
INT32_MAX = 2**31 - 1
MAX_BATCH_SIZE_LIMIT = 65536  # the core preallocates per-batch-size statistics up to this
MAX_INSTANCES = 64  # instances of one model on one device: threads, not a resource to hoard
MAX_PRIORITY_LEVELS = 1024  # the core's limit

# backend -> (platform, default model file name)
_BACKENDS: dict[str, tuple[str, str]] = {
    "onnxruntime": ("onnxruntime_onnx", "model.onnx"),
    "identity": ("identity", ""),
    "tensorrt": ("tensorrt_plan", "model.plan"),
    "pytorch": ("pytorch_libtorch", "model.pt"),
}
_PLATFORMS: dict[str, str] = {platform: backend for backend, (platform, _) in _BACKENDS.items()}
_INSTANCE_KINDS = ("KIND_CPU", "KIND_GPU", "KIND_AUTO")
_TOP_LEVEL_KEYS = (
    "name", "backend", "platform", "max_batch_size", "input", "inputs", "output", "outputs",
    "dynamic_batching", "instance_group", "version_policy", "parameters",
    "default_model_filename",
)


@dataclass(frozen=True)
class QueuePolicy:
    """Triton's ModelQueuePolicy: how long a request may wait and how many may wait. A timeout
    of 0 means none; a max_queue_size of 0 means unbounded. A request's own `timeout`
    parameter counts only with allow_timeout_override, and only to shorten the wait."""

    timeout_action: str = "REJECT"  # or "DELAY": move behind the level's other requests
    default_timeout_microseconds: int = 0
    allow_timeout_override: bool = False
    max_queue_size: int = 0

    def to_triton(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DynamicBatching:
    """Requests are gathered into batches; an empty preferred_batch_size means "as large as the
    queue allows, up to max_batch_size". Priority levels (1 = highest) each have a queue policy:
    their own from priority_queue_policy, else default_queue_policy. latency_target_microseconds
    (pyserver's, not Triton's) replaces the fixed queue delay with one chosen from measured
    execution times (see csrc/core/scheduler.h)."""

    preferred_batch_size: tuple[int, ...] = ()
    max_queue_delay_microseconds: int = 0
    preserve_ordering: bool = False
    priority_levels: int = 0
    default_priority_level: int = 0
    default_queue_policy: QueuePolicy = QueuePolicy()
    priority_queue_policy: tuple[tuple[int, QueuePolicy], ...] = ()  # (level, policy), ascending
    latency_target_microseconds: int = 0


@dataclass(frozen=True)
class InstanceGroup:
    """`count` instances of the model on one kind of device (KIND_CPU, KIND_GPU or KIND_AUTO,
    which lets the backend pick); `gpus` restricts KIND_GPU instances to those devices."""

    count: int = 1
    kind: str = "KIND_CPU"
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class VersionPolicy:
    """Which numbered version folders are served: the `num_versions` highest ("latest"), every
    one ("all"), or those listed in `versions` ("specific")."""

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    """One model's configuration. `inputs` and `outputs` may be empty when config.toml leaves
    them out; the backend then fills them from the model file (`with_tensors`)."""

    name: str
    backend: str
    platform: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dynamic_batching: DynamicBatching | None
    instance_group: tuple[InstanceGroup, ...]
    version_policy: VersionPolicy
    # A read-only mapping; not hashable, so it takes no part in the dataclass hash.
    parameters: Mapping[str, str] = field(hash=False)
    default_model_filename: str
    path: Path

    def signature(self) -> ModelSignature:
        return ModelSignature(self.name, self.max_batch_size, self.inputs, self.outputs)

    def with_tensors(
        self, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]
    ) -> ModelConfig:
        """A copy with the tensors filled in (from the model file)."""
        return dataclasses.replace(self, inputs=tuple(inputs), outputs=tuple(outputs))

    def to_triton(self) -> dict[str, Any]:
        """The JSON of GET /v2/models/{m}/config, with Triton's field names."""
        out: dict[str, Any] = {
            "name": self.name,
            "platform": self.platform,
            "backend": self.backend,
            "max_batch_size": self.max_batch_size,
            "input": [_tensor_to_triton(t) for t in self.inputs],
            "output": [_tensor_to_triton(t) for t in self.outputs],
        }
        batching = self.dynamic_batching
        if batching is not None:
            out["dynamic_batching"] = {
                "preferred_batch_size": list(batching.preferred_batch_size),
                "max_queue_delay_microseconds": batching.max_queue_delay_microseconds,
                "preserve_ordering": batching.preserve_ordering,
                "priority_levels": batching.priority_levels,
                "default_priority_level": batching.default_priority_level,
                "default_queue_policy": batching.default_queue_policy.to_triton(),
                "priority_queue_policy": {
                    str(level): policy.to_triton() for level, policy in batching.priority_queue_policy
                },
            }
            if batching.latency_target_microseconds:
                out["dynamic_batching"]["latency_target_microseconds"] = (
                    batching.latency_target_microseconds
                )
        # Triton names unnamed groups "<model>_<index>".
        out["instance_group"] = [
            {"name": f"{self.name}_{i}", "kind": g.kind, "count": g.count, "gpus": list(g.gpus)}
            for i, g in enumerate(self.instance_group)
        ]
        out["parameters"] = {k: {"string_value": v} for k, v in self.parameters.items()}
        policy = self.version_policy
        if policy.kind == "latest":
            out["version_policy"] = {"latest": {"num_versions": policy.num_versions}}
        elif policy.kind == "all":
            out["version_policy"] = {"all": {}}
        else:
            out["version_policy"] = {"specific": {"versions": list(policy.versions)}}
        out["default_model_filename"] = self.default_model_filename
        return out


def _tensor_to_triton(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "data_type": spec.datatype.config_name, "dims": list(spec.dims)}


def load_config(model_dir: Path) -> ModelConfig:
    """Read and check `<model_dir>/config.toml`; raise ModelLoadError naming file and key."""
    model_dir = Path(model_dir)
    file = model_dir / CONFIG_FILENAME
    try:
        with file.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ModelLoadError(f"{file}: not found; every model folder needs one") from None
    except tomllib.TOMLDecodeError as exc:
        raise ModelLoadError(f"{file}: invalid TOML: {exc}") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise ModelLoadError(f"{file}: invalid TOML: arrays or tables nested too deeply") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{file}: cannot be read: {exc}") from None
    return _Reader(file).config(raw, model_dir)


def model_versions(config: ModelConfig) -> list[int]:
    """The version folders the policy serves, ascending. Like Triton, only folders named by a
    positive integer without leading zeros count; anything else in the model folder is ignored.
    Returns [] when there is no version folder; a "specific" version that has no folder is an
    error."""
    try:
        entries = list(config.path.iterdir())
    except OSError as exc:
        raise ModelLoadError(f"{config.path}: cannot list version folders: {exc}") from None
    present = sorted(
        int(p.name)
        for p in entries
        if p.is_dir() and p.name.isascii() and p.name.isdigit() and not p.name.startswith("0")
    )
    policy = config.version_policy
    if policy.kind == "all":
        return present
    if policy.kind == "latest":
        return present[-policy.num_versions:] if present else []
    missing = [v for v in policy.versions if v not in present]
    if missing:
        raise ModelLoadError(
            f"{config.path / CONFIG_FILENAME}: version_policy.specific.versions: expected a "
            f"folder for each listed version under {config.path}, got none for "
            f"{', '.join(map(str, missing))}"
        )
    return sorted(policy.versions)


def _describe(value: object) -> str:
    """How a found value reads in a message, in TOML's words so `true` is not taken for 1."""
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value!r} (a float)"
    if isinstance(value, dict):
        return "a table"
    text = repr(value)
    kind = "an array " if isinstance(value, list) else ""
    return kind + (text if len(text) <= 60 else text[:57] + "...")


class _Reader:
    """Checks the parsed TOML of one file; every error it raises names that file."""

    def __init__(self, file: Path) -> None:
        self.file = file

    def error(self, key: str, expected: str, found: object) -> ModelLoadError:
        return ModelLoadError(f"{self.file}: {key}: expected {expected}, got {_describe(found)}")

    # -- scalars and shapes ------------------------------------------------------------------

    def table(self, value: object, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(key, "a table", value)
        for name in value:
            if name not in allowed:
                close = difflib.get_close_matches(name, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                where = f"{key}.{name}" if key else name
                keys = f"one of the keys {', '.join(allowed)}" if allowed else "no keys"
                raise ModelLoadError(
                    f"{self.file}: {where}: expected {keys}, got the unknown key {name!r}{hint}"
                )
        return value

    def integer(self, value: object, key: str, minimum: int, maximum: int = INT32_MAX,
                expected: str | None = None) -> int:
        # bool is a subclass of int in Python; `true` is never a count. Every number also has
        # an upper bound, so that nothing the core receives can overflow its int64 arithmetic.
        if (isinstance(value, int) and not isinstance(value, bool)
                and minimum <= value <= maximum):
            return value
        if expected is None:
            expected = f"an integer from {minimum} to {maximum}"
        raise self.error(key, expected, value)

    def string(self, value: object, key: str, expected: str = "a non-empty string") -> str:
        if not isinstance(value, str) or not value:
            raise self.error(key, expected, value)
        return value

    def array(self, value: object, key: str, expected: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.error(key, expected, value)
        return value

    def choice(self, value: object, key: str, choices: tuple[str, ...] | list[str]) -> str:
        if not isinstance(value, str) or value not in choices:
            raise self.error(key, f"one of {', '.join(map(repr, choices))}", value)
        return value

    # -- the config ----------------------------------------------------------------------------

    def config(self, raw: dict[str, Any], model_dir: Path) -> ModelConfig:
        self.table(raw, "", _TOP_LEVEL_KEYS)
        folder = model_dir.name or model_dir.resolve().name
        name = folder
        if "name" in raw:
            name = self.string(raw["name"], "name")
            if name != folder:
                raise self.error("name", f"the model folder's name {folder!r}", name)
        backend, platform = self.backend_and_platform(raw)
        max_batch_size = self.integer(
            raw.get("max_batch_size", 0), "max_batch_size", 0, MAX_BATCH_SIZE_LIMIT)
        inputs = self.tensors(raw, "input")
        outputs = self.tensors(raw, "output")
        dynamic_batching = None
        if "dynamic_batching" in raw:
            dynamic_batching = self.dynamic_batching(raw["dynamic_batching"], max_batch_size)
        instance_group: tuple[InstanceGroup, ...] = (InstanceGroup(kind="KIND_AUTO"),)
        if "instance_group" in raw:
            instance_group = self.instance_groups(raw["instance_group"])
        version_policy = VersionPolicy()
        if "version_policy" in raw:
            version_policy = self.version_policy(raw["version_policy"])
        parameters = self.parameters(raw.get("parameters", {}))
        filename = _BACKENDS[backend][1]
        if "default_model_filename" in raw:
            filename = self.string(
                raw["default_model_filename"], "default_model_filename",
                "a file name inside the version folder")
            if "/" in filename or "\\" in filename or filename in (".", ".."):
                raise self.error(
                    "default_model_filename", "a file name inside the version folder", filename)
        return ModelConfig(
            name=name, backend=backend, platform=platform, max_batch_size=max_batch_size,
            inputs=inputs, outputs=outputs, dynamic_batching=dynamic_batching,
            instance_group=instance_group, version_policy=version_policy,
            parameters=parameters, default_model_filename=filename, path=model_dir,
        )

    def backend_and_platform(self, raw: dict[str, Any]) -> tuple[str, str]:
        backends = sorted(_BACKENDS)
        if "backend" in raw:
            backend = self.choice(raw["backend"], "backend", backends)
            platform = _BACKENDS[backend][0]
            if "platform" in raw and raw["platform"] != platform:
                raise self.error(
                    "platform", f"{platform!r} for backend {backend!r} (or no platform)",
                    raw["platform"])
            return backend, platform
        if "platform" in raw:
            platform = self.choice(raw["platform"], "platform", sorted(_PLATFORMS))
            return _PLATFORMS[platform], platform
        raise ModelLoadError(
            f"{self.file}: backend: expected one of {', '.join(map(repr, backends))} "
            f"(or a platform such as 'onnxruntime_onnx'), got neither backend nor platform"
        )

    def tensors(self, raw: dict[str, Any], singular: str) -> tuple[TensorSpec, ...]:
        plural = singular + "s"
        if singular in raw and plural in raw:
            raise ModelLoadError(
                f"{self.file}: {plural}: expected either [[{singular}]] or [[{plural}]], "
                f"got both"
            )
        key = plural if plural in raw else singular
        if key not in raw:
            return ()
        items = self.array(raw[key], key, f"an array of tables ([[{key}]])")
        specs: list[TensorSpec] = []
        seen: set[str] = set()
        for i, item in enumerate(items):
            spec = self.tensor(item, f"{key}[{i}]")
            if spec.name in seen:
                raise self.error(
                    f"{key}[{i}].name", f"a name no other {singular} uses", spec.name)
            seen.add(spec.name)
            specs.append(spec)
        return tuple(specs)

    def tensor(self, value: object, key: str) -> TensorSpec:
        item = self.table(value, key, ("name", "data_type", "datatype", "dims"))
        for required in ("name", "dims"):
            if required not in item:
                raise ModelLoadError(f"{self.file}: {key}.{required}: expected a value, got none")
        name = self.string(item["name"], f"{key}.name")
        if "data_type" in item and "datatype" in item:
            raise ModelLoadError(
                f"{self.file}: {key}.datatype: expected data_type or datatype, got both")
        type_key = "datatype" if "datatype" in item else "data_type"
        if type_key not in item:
            raise ModelLoadError(
                f"{self.file}: {key}.data_type: expected a datatype such as TYPE_FP32, got none")
        datatype = self.datatype(item[type_key], f"{key}.{type_key}")
        dims_expected = "a non-empty list of positive integers or -1"
        dims_raw = self.array(item["dims"], f"{key}.dims", dims_expected)
        if not dims_raw:
            raise self.error(f"{key}.dims", dims_expected, dims_raw)
        dims = tuple(
            self.dim(d, f"{key}.dims[{j}]", dims_expected) for j, d in enumerate(dims_raw))
        return TensorSpec(name, datatype, dims)

    def dim(self, value: object, key: str, expected: str) -> int:
        if value == -1 and not isinstance(value, bool):
            return -1
        return self.integer(value, key, 1, expected=expected)

    def datatype(self, value: object, key: str) -> DataType:
        expected = "a datatype such as TYPE_FP32, TYPE_STRING, FP32 or float32"
        if not isinstance(value, str):
            raise self.error(key, expected, value)
        try:
            return DataType.parse(value)
        except ValueError:
            raise self.error(key, expected, value) from None

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, "true or false", value)
        return value

    def dynamic_batching(self, value: object, max_batch_size: int) -> DynamicBatching:
        key = "dynamic_batching"
        item = self.table(value, key, (
            "preferred_batch_size", "max_queue_delay_microseconds", "preserve_ordering",
            "priority_levels", "default_priority_level", "default_queue_policy",
            "priority_queue_policy", "latency_target_microseconds",
        ))
        if max_batch_size == 0:
            raise ModelLoadError(
                f"{self.file}: {key}: expected max_batch_size >= 1 for dynamic batching, "
                f"got max_batch_size 0 (the model does not batch)"
            )
        preferred_key = f"{key}.preferred_batch_size"
        expected = f"an array of integers from 1 to max_batch_size ({max_batch_size})"
        preferred = tuple(
            self.integer(v, f"{preferred_key}[{i}]", 1, max_batch_size, expected)
            for i, v in enumerate(
                self.array(item.get("preferred_batch_size", []), preferred_key, expected))
        )
        delay = self.integer(
            item.get("max_queue_delay_microseconds", 0), f"{key}.max_queue_delay_microseconds", 0)
        target = self.integer(
            item.get("latency_target_microseconds", 0), f"{key}.latency_target_microseconds", 0)
        if target and "max_queue_delay_microseconds" in item:
            raise ModelLoadError(
                f"{self.file}: {key}.latency_target_microseconds: expected either it or "
                f"max_queue_delay_microseconds, got both (the target chooses the queue delay)"
            )
        levels = self.integer(
            item.get("priority_levels", 0), f"{key}.priority_levels", 0, MAX_PRIORITY_LEVELS)
        default_level_key = f"{key}.default_priority_level"
        if levels == 0:
            default_level = self.integer(
                item.get("default_priority_level", 0), default_level_key, 0, 0,
                "0 or no key (priority_levels is 0)")
        else:
            default_level = self.integer(
                item.get("default_priority_level", levels), default_level_key, 1, levels,
                f"an integer from 1 to priority_levels ({levels})")
        policies_key = f"{key}.priority_queue_policy"
        raw_policies = self.table(
            item.get("priority_queue_policy", {}), policies_key,
            tuple(str(level) for level in range(1, levels + 1)))
        policies = tuple(sorted(
            (int(level), self.queue_policy(raw, f"{policies_key}.{level}"))
            for level, raw in raw_policies.items()
        ))
        return DynamicBatching(
            preferred_batch_size=preferred,
            max_queue_delay_microseconds=delay,
            preserve_ordering=self.boolean(
                item.get("preserve_ordering", False), f"{key}.preserve_ordering"),
            priority_levels=levels,
            default_priority_level=default_level,
            default_queue_policy=self.queue_policy(
                item.get("default_queue_policy", {}), f"{key}.default_queue_policy"),
            priority_queue_policy=policies,
            latency_target_microseconds=target,
        )

    def queue_policy(self, value: object, key: str) -> QueuePolicy:
        item = self.table(value, key, (
            "timeout_action", "default_timeout_microseconds", "allow_timeout_override",
            "max_queue_size",
        ))
        return QueuePolicy(
            timeout_action=self.choice(
                item.get("timeout_action", "REJECT"), f"{key}.timeout_action", ("REJECT", "DELAY")),
            default_timeout_microseconds=self.integer(
                item.get("default_timeout_microseconds", 0),
                f"{key}.default_timeout_microseconds", 0),
            allow_timeout_override=self.boolean(
                item.get("allow_timeout_override", False), f"{key}.allow_timeout_override"),
            max_queue_size=self.integer(
                item.get("max_queue_size", 0), f"{key}.max_queue_size", 0),
        )

    def instance_groups(self, value: object) -> tuple[InstanceGroup, ...]:
        items = self.array(value, "instance_group", "an array of tables ([[instance_group]])")
        if not items:
            raise self.error("instance_group", "at least one [[instance_group]]", items)
        groups = []
        for i, raw in enumerate(items):
            key = f"instance_group[{i}]"
            item = self.table(raw, key, ("count", "kind", "gpus"))
            count = self.integer(item.get("count", 1), f"{key}.count", 1, MAX_INSTANCES)
            kind = self.choice(item.get("kind", "KIND_CPU"), f"{key}.kind", _INSTANCE_KINDS)
            gpus_expected = "an array of GPU indices (integers >= 0)"
            gpus = tuple(
                self.integer(g, f"{key}.gpus[{j}]", 0, expected=gpus_expected)
                for j, g in enumerate(self.array(item.get("gpus", []), f"{key}.gpus",
                                                 gpus_expected))
            )
            if gpus and kind == "KIND_CPU":
                raise self.error(f"{key}.gpus", "no gpus for kind KIND_CPU", list(gpus))
            groups.append(InstanceGroup(count, kind, gpus))
        return tuple(groups)

    def version_policy(self, value: object) -> VersionPolicy:
        key = "version_policy"
        item = self.table(value, key, ("latest", "all", "specific"))
        if len(item) != 1:
            raise ModelLoadError(
                f"{self.file}: {key}: expected exactly one of latest = {{num_versions = N}}, "
                f"all = {{}} or specific = {{versions = [...]}}, got "
                f"{', '.join(item) if item else 'none'}"
            )
        kind, body = next(iter(item.items()))
        if kind == "latest":
            body = self.table(body, f"{key}.latest", ("num_versions",))
            n = self.integer(body.get("num_versions", 1), f"{key}.latest.num_versions", 1)
            return VersionPolicy("latest", num_versions=n)
        if kind == "all":
            self.table(body, f"{key}.all", ())
            return VersionPolicy("all")
        body = self.table(body, f"{key}.specific", ("versions",))
        vkey = f"{key}.specific.versions"
        expected = "a non-empty array of version numbers (integers >= 1)"
        if "versions" not in body:
            raise ModelLoadError(f"{self.file}: {vkey}: expected {expected}, got none")
        raw_versions = self.array(body["versions"], vkey, expected)
        if not raw_versions:
            raise self.error(vkey, expected, raw_versions)
        versions = tuple(
            self.integer(v, f"{vkey}[{i}]", 1, expected=expected)
            for i, v in enumerate(raw_versions))
        return VersionPolicy("specific", versions=versions)

    def parameters(self, value: object) -> Mapping[str, str]:
        if not isinstance(value, dict):
            raise self.error("parameters", "a table of strings, numbers or booleans", value)
        out: dict[str, str] = {}
        for k, v in value.items():
            if isinstance(v, bool):
                out[k] = "true" if v else "false"  # TOML's spelling, not Python's
            elif isinstance(v, (str, int, float)):
                out[k] = str(v)
            else:
                raise self.error(f"parameters.{k}", "a string, number or boolean", v)
        return types.MappingProxyType(out)
