"""The one check of a model configuration: a table with Triton's names in, a ModelConfig out.

config.toml is such a table as TOML parses it; Triton's config.pbtxt and the JSON of a load
request are turned into one by their own modules (pbtxt.py, triton_json.py) and checked here too,
so the three formats mean the same and fail with the same words.

Every mistake raises ModelLoadError with one message naming the source (the file), the dotted
key (`input[1].dims`) and what was expected and found. Unknown keys are errors, not warnings: a
typo such as `max_batch_sise` must not silently fall back to a default.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pyserver.config.monitoring import read_monitoring, split_parameter
from pyserver.config.schema import (
    BACKEND_BY_PLATFORM,
    INT32_MAX,
    MAX_BATCH_SIZE_LIMIT,
    MAX_INSTANCES,
    MAX_PRIORITY_LEVELS,
    MAX_WARMUP_COUNT,
    Backend,
    DynamicBatching,
    InstanceGroup,
    InstanceKind,
    ModelConfig,
    ModelWarmup,
    QueuePolicy,
    TimeoutAction,
    VersionPolicy,
    VersionPolicyKind,
    WarmupData,
    WarmupInput,
)
from pyserver.errors import ModelLoadError
from pyserver.types import DataType, TensorSpec

TOP_LEVEL_KEYS = (
    "name", "backend", "platform", "max_batch_size", "input", "inputs", "output", "outputs",
    "dynamic_batching", "instance_group", "version_policy", "parameters",
    "default_model_filename", "model_warmup", "monitoring",
)


def read_config(raw: dict[str, Any], model_dir: Path, source: str, *,
                name: str | None = None) -> ModelConfig:
    """Check the table `raw` (read from `source`) of the model in `model_dir`; the model's
    name is `name`, or the folder's."""
    return _Reader(source).config(raw, model_dir, name)


def describe(value: object) -> str:
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

    def __init__(self, source: str) -> None:
        self.file = source

    def error(self, key: str, expected: str, found: object) -> ModelLoadError:
        return ModelLoadError(f"{self.file}: {key}: expected {expected}, got {describe(found)}")

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

    def choice(self, value: object, key: str, choices: Sequence[str]) -> str:
        if not isinstance(value, str) or value not in choices:
            raise self.error(key, f"one of {', '.join(repr(str(c)) for c in choices)}", value)
        return value

    # -- the config ----------------------------------------------------------------------------

    def config(self, raw: dict[str, Any], model_dir: Path, model_name: str | None) -> ModelConfig:
        self.table(raw, "", TOP_LEVEL_KEYS)
        folder = model_name or model_dir.name or model_dir.resolve().name
        name = folder
        if "name" in raw:
            name = self.string(raw["name"], "name")
            if name != folder:
                what = "the model's name" if model_name else "the model folder's name"
                raise self.error("name", f"{what} {folder!r}", name)
        backend, platform = self.backend_and_platform(raw)
        max_batch_size = self.integer(
            raw.get("max_batch_size", 0), "max_batch_size", 0, MAX_BATCH_SIZE_LIMIT)
        inputs = self.tensors(raw, "input")
        outputs = self.tensors(raw, "output")
        dynamic_batching = None
        if "dynamic_batching" in raw:
            dynamic_batching = self.dynamic_batching(raw["dynamic_batching"], max_batch_size)
        instance_group: tuple[InstanceGroup, ...] = (InstanceGroup(kind=InstanceKind.KIND_AUTO),)
        if "instance_group" in raw:
            instance_group = self.instance_groups(raw["instance_group"])
        version_policy = VersionPolicy()
        if "version_policy" in raw:
            version_policy = self.version_policy(raw["version_policy"])
        # [monitoring], or Triton's formats' `monitoring` parameter (config/monitoring.py)
        monitoring, monitoring_key, raw_parameters = split_parameter(self, raw)
        parameters = self.parameters(raw_parameters)
        filename = backend.model_filename
        if raw.get("default_model_filename", "") != "":  # "" is protobuf's default: the default
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
            model_warmup=self.warmups(raw.get("model_warmup", []), max_batch_size),
            source=self.file,
            monitoring=None if monitoring is None else read_monitoring(
                self, monitoring, monitoring_key),
        )

    def backend_and_platform(self, raw: dict[str, Any]) -> tuple[Backend, str]:
        backends = sorted(Backend)
        if "backend" in raw:
            backend = Backend(self.choice(raw["backend"], "backend", backends))
            platform = backend.platform
            if "platform" in raw and raw["platform"] != platform:
                raise self.error(
                    "platform", f"{platform!r} for backend '{backend}' (or no platform)",
                    raw["platform"])
            return backend, platform
        if "platform" in raw:
            platform = self.choice(raw["platform"], "platform", sorted(BACKEND_BY_PLATFORM))
            return BACKEND_BY_PLATFORM[platform], platform
        raise ModelLoadError(
            f"{self.file}: backend: expected one of {', '.join(repr(str(b)) for b in backends)} "
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
            timeout_action=TimeoutAction(self.choice(
                item.get("timeout_action", "REJECT"), f"{key}.timeout_action", list(TimeoutAction))),
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
            kind = InstanceKind(
                self.choice(item.get("kind", "KIND_CPU"), f"{key}.kind", list(InstanceKind)))
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
            return VersionPolicy(VersionPolicyKind.LATEST, num_versions=n)
        if kind == "all":
            self.table(body, f"{key}.all", ())
            return VersionPolicy(VersionPolicyKind.ALL)
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
        return VersionPolicy(VersionPolicyKind.SPECIFIC, versions=versions)

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

    def warmups(self, value: object, max_batch_size: int) -> tuple[ModelWarmup, ...]:
        key = "model_warmup"
        items = self.array(value, key, "an array of tables ([[model_warmup]])")
        out = []
        for i, raw in enumerate(items):
            where = f"{key}[{i}]"
            item = self.table(raw, where, ("name", "batch_size", "count", "inputs"))
            name = self.string(item.get("name", f"warmup_{i}"), f"{where}.name")
            if max_batch_size > 0:
                batch_size = self.integer(
                    item.get("batch_size", 1), f"{where}.batch_size", 1, max_batch_size,
                    f"an integer from 1 to max_batch_size ({max_batch_size})")
            else:
                batch_size = self.integer(
                    item.get("batch_size", 1), f"{where}.batch_size", 0, 1,
                    "1 (or 0): the model does not batch")
            count = self.integer(item.get("count", 1), f"{where}.count", 0, MAX_WARMUP_COUNT)
            inputs_raw = item.get("inputs")
            if not isinstance(inputs_raw, dict) or not inputs_raw:
                raise self.error(f"{where}.inputs", "a table of inputs by name", inputs_raw)
            inputs = tuple(
                self.warmup_input(input_name, spec, f"{where}.inputs.{input_name}")
                for input_name, spec in inputs_raw.items()
            )
            out.append(ModelWarmup(name, batch_size, max(count, 1), inputs))
        return tuple(out)

    def warmup_input(self, name: str, value: object, key: str) -> WarmupInput:
        item = self.table(value, key, ("data_type", "datatype", "dims", *list(WarmupData)))
        type_key = "datatype" if "datatype" in item else "data_type"
        if type_key not in item:
            raise ModelLoadError(
                f"{self.file}: {key}.data_type: expected a datatype such as TYPE_FP32, got none")
        datatype = self.datatype(item[type_key], f"{key}.{type_key}")
        dims_expected = "a list of positive integers (no -1: warmup data has a fixed shape)"
        dims = tuple(
            self.integer(d, f"{key}.dims[{j}]", 1, expected=dims_expected)
            for j, d in enumerate(self.array(item.get("dims", []), f"{key}.dims", dims_expected))
        )
        sources = [d for d in WarmupData if d in item and item[d] not in (False, "")]
        if len(sources) != 1:
            raise ModelLoadError(
                f"{self.file}: {key}: expected exactly one of zero_data = true, random_data = "
                f"true or input_data_file = \"name\", got "
                f"{', '.join(sources) if sources else 'none'}"
            )
        data = sources[0]
        file = ""
        if data is WarmupData.FILE:
            file = self.string(item[data], f"{key}.{data}", "a file name under the model's warmup/ folder")
            if file.startswith("/") or ".." in Path(file).parts:
                raise self.error(f"{key}.{data}", "a file name under the model's warmup/ folder", file)
        else:
            if item[data] is not True:
                raise self.error(f"{key}.{data}", "true", item[data])
        return WarmupInput(name, datatype, dims, data, file)
