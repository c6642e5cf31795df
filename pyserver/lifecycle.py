"""The live model set: which versions serve, and how they come and go without a gap.

Every model name has an entry; its served versions are READY `Model`s, the only ones requests
are routed to. Loading and unloading one model is serialized by its entry's lock; different
models load in parallel, each load's blocking work (reading files, building sessions, starting
the core's threads) in a pool of `model_load_thread_count` threads so that the event loop keeps
serving.

Reload without a gap: loading a model that serves already reads it again; a version whose
configuration and files did not change keeps serving untouched, a changed one is built beside
the old one and warmed up, then requests switch to it in one step on the loop thread. The old
version then finishes every request it accepted (queued, running, or still arriving) and stops,
freeing its engines and the core's threads. A reload that fails leaves the old versions serving
and records the reason.

Everything here runs on the event loop thread except the functions sent to the load pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from pyserver import _core, backends
from pyserver.completions import CompletionRouter
from pyserver.errors import ModelLoadError, NotFound, ServerError
from pyserver.model import Model, ModelState
from pyserver.repository import ModelRepository, ModelSource, files_folder
from pyserver.warmup import run_warmup

log = logging.getLogger("pyserver.lifecycle")

# pyserver_model_load_duration_seconds buckets: loads take from milliseconds to minutes
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass
class VersionStatus:
    """What the repository index says of one version that is not (only) serving: its state and
    the reason for it."""

    state: ModelState
    reason: str = ""


@dataclass
class _Entry:
    """One model name."""

    name: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    serving: dict[int, Model] = field(default_factory=dict)  # READY versions
    status: dict[int, VersionStatus] = field(default_factory=dict)  # the others, by version
    reason: str = ""  # the last failure of the model as a whole (its config, its folder)
    wanted: bool = False  # should be loaded (strict readiness counts it)
    pinned: set[int] = field(default_factory=set)  # versions loaded one by one through the API
    seen: object = None  # what the folder said at the last load from it (poll compares)


@dataclass
class LoadHistogram:
    """pyserver_model_load_duration_seconds, kept here and read at scrape time."""

    bounds: tuple[float, ...] = LOAD_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LOAD_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        index = next((i for i, b in enumerate(self.bounds) if seconds <= b), len(self.bounds))
        self.counts[index] += 1
        self.total += seconds
        self.count += 1


class ModelManager:
    """The model versions that serve, by name; their loads, reloads and unloads."""

    def __init__(
        self, repository: ModelRepository, router: CompletionRouter, load_threads: int = 4,
        pinned_memory_pool_bytes: int | None = None,
    ) -> None:
        self.repository = repository
        self._router = router
        self._entries: dict[str, _Entry] = {}
        self._pool = ThreadPoolExecutor(max_workers=max(load_threads, 1),
                                        thread_name_prefix="pyserver-load")
        self._retiring: set[asyncio.Task[None]] = set()
        if pinned_memory_pool_bytes is not None:
            # None: the core's default (256 MiB, Triton's); the pool is locked only when a GPU
            # model runs its first batch, so setting its size here costs nothing.
            _core.configure_pinned_memory(pinned_memory_pool_bytes)
        self.load_durations = LoadHistogram()
        # Called with (model, version, state, reason) on every change (the log line is here).
        self.on_state_change: Callable[[str, int | None, ModelState, str], None] | None = None

    # -- routing (loop thread) ------------------------------------------------------------------

    def get(self, name: str, version: str | None = None) -> Model:
        """The READY version a request names (the highest when none); NotFound with the
        reason otherwise."""
        entry = self._entries.get(name)
        if entry is None or not entry.serving:
            raise NotFound(self._why_not(name, entry, None))
        if version is None:
            return entry.serving[max(entry.serving)]
        model = entry.serving.get(int(version)) if version.isdigit() else None
        if model is None:
            raise NotFound(self._why_not(name, entry, version))
        return model

    def _why_not(self, name: str, entry: _Entry | None, version: str | None) -> str:
        if entry is None:
            return f"unknown model '{name}'"
        if version is not None and entry.serving:
            status = entry.status.get(int(version)) if version.isdigit() else None
            served = ", ".join(str(v) for v in sorted(entry.serving))
            if status is not None and status.reason:
                return (f"model '{name}' version {version} is {status.state.lower()}: "
                        f"{status.reason} (serving: {served})")
            return f"model '{name}' has no version '{version}' (serving: {served})"
        if entry.reason:
            return f"model '{name}' is not available: it failed to load: {entry.reason}"
        states = {s.state for s in entry.status.values()}
        if ModelState.LOADING in states:
            return f"model '{name}' is not available: it is loading"
        if ModelState.UNLOADING in states:
            return f"model '{name}' is not available: it is unloading"
        return f"model '{name}' is not loaded"

    def models(self) -> list[Model]:
        """Every READY version (statistics, metrics)."""
        return [m for e in list(self._entries.values()) for m in list(e.serving.values())]

    def versions(self, name: str) -> list[int]:
        entry = self._entries.get(name)
        return sorted(entry.serving) if entry is not None else []

    def ready(self) -> bool:
        """Every model that should be loaded serves (strict readiness)."""
        return all(e.serving for e in self._entries.values() if e.wanted)

    def loaded_names(self) -> list[str]:
        return sorted(name for name, e in self._entries.items() if e.wanted)

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Triton's repository index: one entry per known version with its state (and reason),
        and the name alone for a model folder never loaded."""
        out: list[dict[str, str]] = []
        try:
            names = set(self.repository.names())
        except ServerError:
            names = set()
        for name in sorted(names | set(self._entries)):
            entry = self._entries.get(name)
            rows: dict[int, dict[str, str]] = {}
            if entry is not None:
                for version, status in entry.status.items():
                    rows[version] = {"name": name, "version": str(version),
                                     "state": str(status.state), "reason": status.reason}
                for version in entry.serving:
                    rows[version] = {"name": name, "version": str(version), "state": "READY",
                                     "reason": entry.status.get(version, VersionStatus(
                                         ModelState.READY)).reason}
            if not rows:
                if entry is not None and entry.reason:
                    row = {"name": name, "state": "UNAVAILABLE", "reason": entry.reason}
                else:
                    row = {"name": name}
                if not ready_only:
                    out.append(row)
                continue
            for version in sorted(rows):
                row = rows[version]
                if not row["reason"]:
                    del row["reason"]
                if not ready_only or row["state"] == "READY":
                    out.append(row)
        return out

    # -- loading ------------------------------------------------------------------------------

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = _Entry(name)
        return entry

    async def load(
        self, name: str, *, config_json: str | None = None,
        files: Mapping[str, bytes] | None = None, version: int | None = None,
    ) -> None:
        """Load `name`, or read it again when it serves already (see the module's docstring);
        with `version`, load that version beside the ones serving. Returns when every wanted
        version is READY; raises ModelLoadError (nothing half-loaded left) otherwise."""
        if files and config_json is None:
            raise ModelLoadError(
                f"load of model '{name}': file: parameters need a 'config' parameter too (the "
                "files replace the model's folder, so the configuration must come with them)"
            )
        entry = self._entry(name)
        async with entry.lock:
            entry.wanted = True
            started = time.monotonic()
            try:
                with files_folder(name, files) if files else nullcontext() as folder:
                    await self._load_locked(entry, folder, config_json, version)
            except NotFound as exc:
                if not entry.serving and not entry.status:
                    del self._entries[name]  # no such model: nothing to remember of it
                else:
                    self._failed(entry, str(exc))
                raise ModelLoadError(str(exc)) from None
            except ServerError as exc:
                self._failed(entry, str(exc))
                raise ModelLoadError(str(exc)) from None
            except Exception as exc:  # a backend's or the core's own failure: this model only
                log.exception("model %s failed to load", name)
                reason = f"{type(exc).__name__}: {exc}"
                self._failed(entry, reason)
                raise ModelLoadError(f"model '{name}' failed to load: {reason}") from None
            finally:
                self.load_durations.observe(time.monotonic() - started)

    async def _load_locked(
        self, entry: _Entry, folder: Path | None, config_json: str | None, version: int | None
    ) -> None:
        loop = asyncio.get_running_loop()
        extra = tuple(entry.pinned | ({version} if version is not None else set()))
        try:
            source: ModelSource = await loop.run_in_executor(
                self._pool, lambda: self.repository.read(
                    entry.name, folder=folder, config_json=config_json, extra_versions=extra))
        except ServerError as exc:
            if folder is None and config_json is None:
                entry.seen = ("failed", str(exc))
            raise
        if not source.override:
            entry.seen = (source.config, source.versions)
        if version is not None:
            if version not in source.present:
                raise ModelLoadError(
                    f"model '{entry.name}' has no version folder '{version}' in {source.folder} "
                    f"(versions there: {', '.join(map(str, source.present)) or 'none'})"
                )
            # One version beside the others: those serving stay as they are.
            wanted = {v: fp for v, fp in source.versions.items()
                      if v == version or v in entry.serving}
        else:
            wanted = dict(source.versions)
        keep: dict[int, Model] = {}
        build: list[int] = []
        for v, folder_fingerprint in wanted.items():
            current = entry.serving.get(v)
            if current is not None and not source.override and \
                    current.fingerprint == (source.config, folder_fingerprint):
                keep[v] = current
            else:
                build.append(v)
        built = await self._build_all(entry, source, build, wanted)
        # Switch in one step: requests admitted from here on go to the new set.
        replaced = [m for v, m in entry.serving.items() if keep.get(v) is not m]
        entry.serving = {**keep, **built}
        if version is not None:
            entry.pinned.add(version)
        entry.reason = ""
        for v, model in built.items():
            model.state = ModelState.READY
            entry.status.pop(v, None)
            self._changed(entry.name, v, ModelState.READY, "")
        for v in keep:
            entry.status.pop(v, None)
        for model in replaced:
            self._retire(entry, model, "replaced by a reload" if model.version in entry.serving
                         else "no longer in the version policy")

    async def _build_all(
        self, entry: _Entry, source: ModelSource, versions: list[int],
        wanted: Mapping[int, object],
    ) -> dict[int, Model]:
        """Build and warm up `versions` side by side; all of them or none (a failure stops the
        ones built and leaves what serves as it was)."""
        built: dict[int, Model] = {}
        try:
            for v in versions:
                self._set_status(entry, v, ModelState.LOADING, "")
                model = await asyncio.get_running_loop().run_in_executor(
                    self._pool, self._build, source, v)
                built[v] = model
                model.fingerprint = (source.config, wanted[v])
                await run_warmup(model, source.folder)
        except BaseException as exc:
            for model in built.values():
                await asyncio.get_running_loop().run_in_executor(None, model.stop)
            for v in versions:
                if v not in entry.serving:  # (a serving one keeps serving: see _failed)
                    self._set_status(entry, v, ModelState.UNAVAILABLE, str(exc))
            raise
        return built

    def _build(self, source: ModelSource, version: int) -> Model:
        """In a load thread: the engines for one version and its scheduler."""
        result = backends.load(source.config, source.folder / str(version))
        return Model(result.config, version, result.engines, self._router, result.check_inputs)

    def _failed(self, entry: _Entry, reason: str) -> None:
        if entry.serving:
            log.error("model %s: reload failed, the versions serving keep serving: %s",
                      entry.name, reason)
            for v in entry.serving:  # the index shows why
                entry.status[v] = VersionStatus(ModelState.READY, f"reload failed: {reason}")
        else:
            entry.reason = reason
            if not any(status.reason == reason for status in entry.status.values()):
                self._changed(entry.name, None, ModelState.UNAVAILABLE, reason)

    # -- unloading ----------------------------------------------------------------------------

    async def unload(self, name: str, version: int | None = None) -> None:
        """Stop routing to `name` (or one version of it); return once what it accepted has been
        answered and everything it held is freed."""
        entry = self._entries.get(name)
        if entry is None or (not entry.serving and not entry.wanted):
            raise NotFound(f"unknown model '{name}': it is not loaded")
        async with entry.lock:
            if version is not None:
                model = entry.serving.get(version)
                if model is None:
                    served = ", ".join(map(str, sorted(entry.serving))) or "none"
                    raise NotFound(f"model '{name}' has no version '{version}' loaded "
                                   f"(serving: {served})")
                del entry.serving[version]
                entry.pinned.discard(version)
                retiring = [model]
                if not entry.serving:
                    entry.wanted = False
            else:
                retiring = list(entry.serving.values())
                entry.serving = {}
                entry.pinned.clear()
                entry.wanted = False
                entry.reason = ""
            await asyncio.gather(*(self._unload_version(entry, m, "unloaded") for m in retiring))

    def _retire(self, entry: _Entry, model: Model, reason: str) -> None:
        """Unload a version that is no longer routed to, in the background."""
        task = asyncio.get_running_loop().create_task(self._unload_version(entry, model, reason))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _unload_version(self, entry: _Entry, model: Model, reason: str) -> None:
        v = model.version
        self._set_status(entry, v, ModelState.UNLOADING, reason)
        await model.drain()
        await asyncio.get_running_loop().run_in_executor(None, model.stop)
        if v in entry.serving:  # a reload's new version serves in its place
            entry.status.pop(v, None)
        else:
            self._set_status(entry, v, ModelState.UNAVAILABLE, reason)
        log.info("model %s version %d: unloaded (%s)", entry.name, v, reason)

    async def wait_retired(self) -> None:
        """Wait for the versions replaced by reloads to finish unloading."""
        while self._retiring:
            await asyncio.gather(*list(self._retiring), return_exceptions=True)

    # -- poll mode ------------------------------------------------------------------------------

    async def poll(self) -> None:
        """Rescan the repository: new model folders load, removed ones unload, changed ones
        reload (a failed reload keeps the old versions serving)."""
        loop = asyncio.get_running_loop()
        try:
            present = set(await loop.run_in_executor(self._pool, self.repository.names))
        except ServerError as exc:
            log.error("repository poll: %s", exc)
            return
        for name, entry in list(self._entries.items()):
            if name not in present and entry.wanted:
                log.info("model %s: its folder is gone; unloading", name)
                await self.unload(name)
                entry.seen = None
        for name in sorted(present):
            known = self._entries.get(name)
            if known is not None and known.wanted and not await self._changed_on_disk(known):
                continue
            try:
                await self.load(name)
            except ServerError as exc:
                log.error("repository poll: model %s: %s", name, exc)

    async def _changed_on_disk(self, entry: _Entry) -> bool:
        """Whether the folder says something else than when the model was last loaded (or
        last failed to load)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self._snapshot, entry.name, tuple(entry.pinned)) != entry.seen

    def _snapshot(self, name: str, pinned: tuple[int, ...]) -> object:
        try:
            source = self.repository.read(name, extra_versions=pinned)
        except ServerError as exc:
            return ("failed", str(exc))
        return (source.config, source.versions)

    # -- shutdown -------------------------------------------------------------------------------

    def inflight(self) -> int:
        return sum(m.inflight for m in self.models())

    async def stop(self) -> None:
        """Stop every version (queued requests fail with 503), and the load threads."""
        loop = asyncio.get_running_loop()
        await self.wait_retired()
        models = self.models()
        for entry in self._entries.values():
            entry.serving = {}
        for model in models:
            await loop.run_in_executor(None, model.stop)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- state changes --------------------------------------------------------------------------

    def _set_status(self, entry: _Entry, version: int, state: ModelState, reason: str) -> None:
        entry.status[version] = VersionStatus(state, reason)
        self._changed(entry.name, version, state, reason)

    def _changed(self, name: str, version: int | None, state: ModelState, reason: str) -> None:
        where = f"model {name}" + (f" version {version}" if version is not None else "")
        if state is ModelState.UNAVAILABLE and reason and reason != "unloaded":
            log.error("%s: %s: %s", where, state, reason)
        else:
            log.info("%s: %s%s", where, state, f" ({reason})" if reason else "")
        if self.on_state_change is not None:
            self.on_state_change(name, version, state, reason)

    def states(self) -> list[tuple[str, str, str]]:
        """(model, version, state) of every known version, for pyserver_model_state."""
        out = []
        for name, entry in list(self._entries.items()):
            for v in entry.serving:
                out.append((name, str(v), "READY"))
            for v, status in entry.status.items():
                if v not in entry.serving:
                    out.append((name, str(v), str(status.state)))
        return out

