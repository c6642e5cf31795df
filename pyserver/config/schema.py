"""A model's configuration, as frozen dataclasses with Triton's names.

Names follow Triton's model configuration (max_batch_size, dynamic_batching, instance_group,
version_policy, model_warmup, ...) so that people who know Triton read a config at sight. The
readers (config.toml, Triton's config.pbtxt, the JSON of a load request) all produce these; the
writer (`triton_json.to_triton`) turns them into the JSON of GET /v2/models/{m}/config.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pyserver.types import DataType, ModelSignature, TensorSpec

INT32_MAX = 2**31 - 1
MAX_BATCH_SIZE_LIMIT = 65536  # the core preallocates per-batch-size statistics up to this
MAX_INSTANCES = 64  # instances of one model on one device: threads, not a resource to hoard
MAX_PRIORITY_LEVELS = 1024  # the core's limit
MAX_WARMUP_COUNT = 1000  # warmup requests per sample: warming, not a benchmark


class Backend(enum.StrEnum):
    """The engines pyserver has, by Triton's backend names."""

    ONNXRUNTIME = "onnxruntime"
    IDENTITY = "identity"
    TENSORRT = "tensorrt"
    PYTORCH = "pytorch"

    @property
    def platform(self) -> str:
        """Triton's platform name for the backend."""
        return _PLATFORMS[self]

    @property
    def model_filename(self) -> str:
        """The model file a version folder holds by default ("" when there is none)."""
        return _FILENAMES[self]


_PLATFORMS = {
    Backend.ONNXRUNTIME: "onnxruntime_onnx",
    Backend.IDENTITY: "identity",
    Backend.TENSORRT: "tensorrt_plan",
    Backend.PYTORCH: "pytorch_libtorch",
}
_FILENAMES = {
    Backend.ONNXRUNTIME: "model.onnx",
    Backend.IDENTITY: "",
    Backend.TENSORRT: "model.plan",
    Backend.PYTORCH: "model.pt",
}
BACKEND_BY_PLATFORM = {platform: backend for backend, platform in _PLATFORMS.items()}


class InstanceKind(enum.StrEnum):
    """Where an instance group's instances run; KIND_AUTO lets the backend pick."""

    KIND_CPU = "KIND_CPU"
    KIND_GPU = "KIND_GPU"
    KIND_AUTO = "KIND_AUTO"


class TimeoutAction(enum.StrEnum):
    """What happens to a request whose queue timeout passes: refused (503) or moved behind its
    level's other requests."""

    REJECT = "REJECT"
    DELAY = "DELAY"


class VersionPolicyKind(enum.StrEnum):
    LATEST = "latest"
    ALL = "all"
    SPECIFIC = "specific"


class WarmupData(enum.StrEnum):
    """Where a warmup input's values come from (Triton's input_data_type oneof)."""

    ZERO = "zero_data"
    RANDOM = "random_data"
    FILE = "input_data_file"


@dataclass(frozen=True)
class QueuePolicy:
    """Triton's ModelQueuePolicy: how long a request may wait and how many may wait. A timeout
    of 0 means none; a max_queue_size of 0 means unbounded. A request's own `timeout`
    parameter counts only with allow_timeout_override, and only to shorten the wait."""

    timeout_action: TimeoutAction = TimeoutAction.REJECT
    default_timeout_microseconds: int = 0
    allow_timeout_override: bool = False
    max_queue_size: int = 0


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

    def level_policies(self) -> list[QueuePolicy]:
        """Each priority level's queue policy (one level when there are none)."""
        own = dict(self.priority_queue_policy)
        levels = max(self.priority_levels, 1)
        return [own.get(level, self.default_queue_policy) for level in range(1, levels + 1)]


@dataclass(frozen=True)
class InstanceGroup:
    """`count` instances of the model on one kind of device; `gpus` restricts KIND_GPU
    instances to those devices."""

    count: int = 1
    kind: InstanceKind = InstanceKind.KIND_CPU
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class VersionPolicy:
    """Which numbered version folders are served: the `num_versions` highest ("latest"), every
    one ("all"), or those listed in `versions` ("specific")."""

    kind: VersionPolicyKind = VersionPolicyKind.LATEST
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, present: list[int]) -> list[int]:
        """The versions to serve out of those `present` (ascending); a "specific" version that
        is not present is left out (the caller says it is missing)."""
        if self.kind is VersionPolicyKind.ALL:
            return present
        if self.kind is VersionPolicyKind.LATEST:
            return present[-self.num_versions:] if present else []
        return sorted(v for v in self.versions if v in present)


@dataclass(frozen=True)
class WarmupInput:
    """One input of a warmup sample: its datatype and dims (without the batch dimension when
    the model batches) and where its values come from (`file`: under <model>/warmup/)."""

    name: str
    datatype: DataType
    dims: tuple[int, ...]
    data: WarmupData
    file: str = ""


@dataclass(frozen=True)
class ModelWarmup:
    """Triton's ModelWarmup: `count` requests of `batch_size` rows each, run through the model's
    scheduler before the version turns READY."""

    name: str
    batch_size: int
    count: int
    inputs: tuple[WarmupInput, ...]


@dataclass(frozen=True)
class MonitoredInput:
    """[[monitoring.input]]: a value histogram of the input (its `buckets`, upper bounds as
    Prometheus' `le`), over every value or, with per_feature, per position of its dims; NaN and
    infinities are counted apart. A drift reference comes from `reference` (a .npy sample of
    training inputs, relative to the model folder) or, with reference_first_window, from the
    first window after the version turned READY. BYTES inputs: `buckets` are element lengths."""

    name: str
    buckets: tuple[float, ...] = ()
    per_feature: bool = False
    reference: str = ""
    reference_first_window: bool = False


@dataclass(frozen=True)
class MonitoredOutput:
    """[[monitoring.output]]: class counts of an integer output (`classes`), or a value
    histogram (`buckets`) of a float output: of every value, or with `top` of each row's
    largest score, whose position is then counted as the row's class."""

    name: str
    classes: int = 0
    buckets: tuple[float, ...] = ()
    top: bool = False


@dataclass(frozen=True)
class PayloadLogging:
    """[monitoring] log_payloads: every `every`-th request (the first, then every Nth) as one
    JSON line appended to `path` (relative to the server's working directory), rotated at
    `max_bytes` with `backups` older files kept; each tensor's data cut after `max_elements`
    values."""

    path: str
    every: int = 1000
    max_bytes: int = 64 * 1024 * 1024
    backups: int = 3
    max_elements: int = 256


@dataclass(frozen=True)
class Monitoring:
    """The [monitoring] table (pyserver's own): what the core measures of the inputs and outputs
    of every `sample_every`-th batch, over a sliding window of `window_seconds`, and optional
    payload logging. `key` is where the table was written (`monitoring`, or
    `parameters.monitoring` in Triton's formats), for messages."""

    sample_every: int = 1
    window_seconds: float = 300.0
    inputs: tuple[MonitoredInput, ...] = ()
    outputs: tuple[MonitoredOutput, ...] = ()
    log_payloads: PayloadLogging | None = None
    key: str = field(default="monitoring", compare=False)


@dataclass(frozen=True)
class ModelConfig:
    """One model's configuration. `inputs` and `outputs` may be empty when the config leaves
    them out; the backend then fills them from the model file (`with_tensors`). `source` is the
    file the configuration came from (what error messages name): config.toml, config.pbtxt, the
    model folder itself when its configuration was completed from the model file, or the
    description of a load request's `config` parameter."""

    name: str
    backend: Backend
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
    model_warmup: tuple[ModelWarmup, ...] = ()
    source: str = ""
    # No configuration file: the backend completes max_batch_size and batching from the model
    # file (a dynamic first dimension on every tensor -> the model batches).
    auto_complete: bool = False
    monitoring: Monitoring | None = None

    def signature(self) -> ModelSignature:
        return ModelSignature(self.name, self.max_batch_size, self.inputs, self.outputs)

    def with_tensors(
        self, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]
    ) -> ModelConfig:
        """A copy with the tensors filled in (from the model file)."""
        return dataclasses.replace(self, inputs=tuple(inputs), outputs=tuple(outputs))

    def with_batching(
        self, max_batch_size: int, dynamic_batching: DynamicBatching | None
    ) -> ModelConfig:
        """A copy with batching completed (auto-complete, or what an engine file says)."""
        return dataclasses.replace(
            self, max_batch_size=max_batch_size, dynamic_batching=dynamic_batching
        )

    def where(self, key: str = "") -> str:
        """The prefix of an error message about `key` of this configuration."""
        return f"{self.source}: {key}" if key else self.source
