"""The model repository: which versions exist on disk (the source) and which serve (the manager).

Layout::

    <root>/<name>/<version>/      version: a decimal integer directory name (1, 2, 10, ...)
    <root>/<name>/<version>/READY the completion marker, written last

**Only complete versions.** A version directory is picked up only once it holds the marker
file ``READY``; until then it is listed as ``incomplete`` and never loaded, so a copy still in
progress (``cp -r``, ``rsync``) is never half-read. ``recforge models publish`` goes further: it
copies into a hidden ``.<version>.tmp-*`` directory beside the versions, writes ``READY`` last,
fsyncs every file and renames the directory into place (one atomic ``rename``), so a scanner
sees either nothing or a complete version. Anyone copying by hand writes ``READY`` last.

**Gate before traffic.** A version loads beside the one serving; it serves only after
(1) its loader verified and loaded every part (for a bundle: every file checksummed, no path
escaping the directory, corrupt content an ``ArtifactError``), (2) its schema equals the one
the name is serving (or the configured one), (3) a warm-up call scored finite numbers within
the latency budget. A version that fails any step is ``failed`` with the reason and never
serves; the current version keeps serving. It is retried only by an explicit ``reload``.

**Availability-preserving swap.** New requests go to the new version once it is available;
requests in flight hold a lease on the version they started with and finish on it; the old
version is ``unloading`` until its last lease ends, then it is dropped. The last available
version of a name is never unloaded by a change on disk. Before a load the memory budget is
checked (versions loaded + the new one's size on disk must fit), so old and new fit together.

The manager is driven by a polling :class:`Watcher` and by explicit calls (``load``,
``unload``, ``reload``, ``set_label``, ``set_policy``), all through one lock. It is the
``RecommenderSource`` of the HTTP/gRPC layer (``get`` and ``describe``) and knows nothing of
either protocol; tests drive it with fake loaders.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import logging
import math
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from recforge.artifacts import atomic_dir
from recforge.exceptions import ConfigError, RecforgeError
from recforge.serving.bundle import READY_MARKER
from recforge.serving.runtime import DEFAULT, RuntimeFiles, RuntimeState

log = logging.getLogger(__name__)

MARKER = READY_MARKER  # the one name, defined beside the bundle check that allows it
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
LABELS = ("stable", "canary")


class NoServableError(RecforgeError, LookupError):
    """No available version answers for the name/version/label asked. ``status``: 503 when
    the name exists but no version of it is available (yet); 404 for a name, version or
    label that does not exist; 409 for an admin call on a version in the wrong state."""

    def __init__(self, message: str, status: int = 503) -> None:
        self.status = status
        super().__init__(message)

    def __str__(self) -> str:  # LookupError would repr() the message
        return str(self.args[0])


class State(enum.StrEnum):
    INCOMPLETE = "incomplete"  # on disk without READY: a copy in progress, never loaded
    LOADING = "loading"
    AVAILABLE = "available"
    UNLOADING = "unloading"  # no new requests; waits for the in-flight ones
    FAILED = "failed"


# ---------------------------------------------------------------------------- the source
@dataclass(frozen=True)
class DiskVersion:
    """One version directory as the scan found it."""

    name: str
    version: int
    path: Path
    complete: bool
    size_bytes: int


class VersionSource:
    """Scans ``<root>/<name>/<version>/`` for integer versions and their completion markers."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def scan(self) -> dict[str, dict[int, DiskVersion]]:
        """{name: {version: DiskVersion}} for every valid name; non-integer and hidden
        directories (publish's ``.<version>.tmp-*``) are skipped."""
        if not self.root.is_dir():
            raise ConfigError(
                f"model root {self.root}: not a directory; create it or fix --models."
            )
        out: dict[str, dict[int, DiskVersion]] = {}
        for ndir in sorted(self.root.iterdir()):
            if not ndir.is_dir() or not NAME_RE.match(ndir.name):
                continue
            versions: dict[int, DiskVersion] = {}
            for vdir in ndir.iterdir():
                if not vdir.is_dir() or not vdir.name.isdigit() or vdir.is_symlink():
                    continue
                v = int(vdir.name)
                complete = (vdir / MARKER).is_file()
                versions[v] = DiskVersion(ndir.name, v, vdir, complete, _dir_size(vdir))
            out[ndir.name] = versions
        return out


def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


# ---------------------------------------------------------------------------- policies
@dataclass(frozen=True)
class Policy:
    """Which complete, non-failed versions of a name should be loaded.

    ``latest`` keeps the newest ``n`` (default 1); ``specific`` keeps the listed versions.
    Parsed from ``"latest"``, ``"latest:2"`` or ``"specific:3,5"``.
    """

    kind: str = "latest"
    n: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("latest", "specific"):
            raise ConfigError(f"policy kind {self.kind!r}: use 'latest' or 'specific'.")
        if self.kind == "latest" and self.n < 1:
            raise ConfigError(f"policy latest:{self.n}: n must be >= 1.")
        if self.kind == "specific" and not self.versions:
            raise ConfigError("policy specific: list at least one version, e.g. 'specific:3'.")

    @classmethod
    def parse(cls, text: str) -> Policy:
        kind, _, arg = text.strip().partition(":")
        try:
            if kind == "latest":
                return cls("latest", int(arg) if arg else 1)
            if kind == "specific":
                return cls("specific", versions=tuple(int(x) for x in arg.split(",") if x))
        except ValueError:
            pass
        raise ConfigError(f"version policy {text!r}: use 'latest', 'latest:N' or 'specific:V1,V2'.")

    def select(self, eligible: set[int]) -> set[int]:
        if self.kind == "latest":
            return set(sorted(eligible)[-self.n :])
        return eligible & set(self.versions)

    def __str__(self) -> str:
        if self.kind == "latest":
            return "latest" if self.n == 1 else f"latest:{self.n}"
        return "specific:" + ",".join(map(str, self.versions))


# ---------------------------------------------------------------------------- loaders
class Loader(Protocol):
    """How a version directory becomes a servable, and how the gate checks it."""

    def load(self, path: Path) -> Any:
        """Verify and load every part; raise (ArtifactError, ...) on anything wrong."""

    def schema(self, servable: Any) -> dict[str, Any]:
        """What clients rely on (id types, context fields...); compared across versions."""

    def warmup(self, servable: Any) -> Any:
        """Run one representative request; return the scores it produced."""


class BundleLoader:
    """The production loader: a serving bundle through :class:`recforge.serving.core.Recommender`
    (``load_bundle`` verifies every file of every part before anything is built); a saved
    retrieval model or recall pipeline directory is served as a one-part bundle
    (``recforge.serving.single``, verified the same way)."""

    def load(self, path: Path) -> Any:
        from recforge.serving.core import Recommender

        return Recommender.load(path)

    def schema(self, servable: Any) -> dict[str, Any]:
        """What a client depends on: each ranker field's source (user/item/context), the
        context fields a request may send, the item fields it may filter on, the id types."""
        info = servable.info()
        return {
            "fields": {k: v.get("source") for k, v in sorted(info.get("fields", {}).items())},
            "context_fields": sorted(info.get("context_fields", [])),
            "filter_fields": sorted(info.get("filter_fields", [])),
            "ids": dict(getattr(servable, "_id_kind", {})),
        }

    def warmup(self, servable: Any) -> Any:
        """A known and a cold user (``Recommender.warmup`` raises on a non-finite score),
        then the cold user's scores for the gate's own finiteness check."""
        servable.warmup()
        k = min(10, servable._rt.rerank.max_k)
        return servable.recommend("__recforge_warmup__", k=k).scores

    def prepare_runtime(self, servable: Any, state: RuntimeState) -> Any:
        """Check runtime parameters against a loaded version (``ConfigError`` naming the
        field); ``use_runtime`` then swaps them in."""
        return servable.prepare_runtime(state.params)

    def use_runtime(self, servable: Any, prepared: Any) -> None:
        servable.use_runtime(prepared)


# ---------------------------------------------------------------------------- the manager
@dataclass
class VersionRecord:
    """One version as the manager knows it; ``servable`` is set while loaded."""

    name: str
    version: int
    path: Path
    size_bytes: int
    state: State
    reason: str | None = None
    load_seconds: float | None = None
    loaded_at: float | None = None
    servable: Any = field(default=None, repr=False)
    inflight: int = 0

    def as_dict(self, labels: list[str]) -> dict[str, Any]:
        return {
            "version": self.version,
            "state": self.state.value,
            "reason": self.reason,
            "labels": labels,
            "load_seconds": None if self.load_seconds is None else round(self.load_seconds, 4),
            "loaded_at": self.loaded_at,
            "size_bytes": self.size_bytes,
            "inflight": self.inflight,
        }


@dataclass(frozen=True)
class _Route:
    """What ``get`` reads for one name: replaced whole, never mutated (lock-free reads)."""

    default: VersionRecord | None
    by_version: dict[int, VersionRecord]
    by_label: dict[str, VersionRecord]


class VersionManager:
    """Loads, gates, serves and unloads versions of every name under a model root.

    ``names``: the configured names (readiness needs one available version of each); ``None``
    serves every name found. ``memory_budget_bytes``: the sum of loaded versions' on-disk
    sizes plus the candidate's may not exceed it (``None``: no limit). ``warmup_budget_s``:
    the warm-up call's latency budget. ``schemas``: per name, the schema a version must have
    (otherwise: the schema of the version serving now, if any). ``on_event``: called with
    ``(event, record)`` for metrics (``loaded``, ``failed``, ``unloaded``). ``load_share``: the
    largest share of the interpreter a load may take from the request threads (see
    ``run_yielding``); 1.0 lets it run flat out. ``loader_nice``: loads (and the freeing of
    unloaded versions) run in one dedicated thread whose scheduling priority is lowered by
    this many nice steps (Linux: a thread's own nice value), so that on busy cores the
    kernel runs request threads before it; 0 keeps the process's priority. ``runtime``: where each name's runtime
    parameters are read (``recforge.serving.runtime``); re-read by ``reload_runtime`` and by
    ``sync`` when a file changed, applied to every loaded version of the name at once.
    """

    def __init__(
        self,
        source: VersionSource,
        loader: Loader | None = None,
        *,
        names: list[str] | None = None,
        policies: Mapping[str, Policy] | None = None,
        default_policy: Policy | None = None,
        memory_budget_bytes: int | None = None,
        warmup_budget_s: float = 2.0,
        load_share: float = 0.3,
        schemas: Mapping[str, dict[str, Any]] | None = None,
        on_event: Callable[[str, VersionRecord], None] | None = None,
        runtime: RuntimeFiles | None = None,
        loader_nice: int = 10,
    ) -> None:
        for n in names or []:
            if not NAME_RE.match(n):
                raise ConfigError(f"model name {n!r}: letters, digits, '_', '.', '-' only.")
        self.source = source
        self.loader = loader or BundleLoader()
        self.names = list(names) if names is not None else None
        self.default_policy = default_policy or Policy()
        self.memory_budget_bytes = memory_budget_bytes
        self.warmup_budget_s = warmup_budget_s
        if not 0 < load_share <= 1:
            raise ConfigError(f"load_share {load_share!r}: a fraction in (0, 1].")
        self.load_share = load_share
        self._loads = _LoaderThread(loader_nice)
        self._policies: dict[str, Policy] = dict(policies or {})
        self._schemas: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (schemas or {}).items()}
        self.on_event = on_event
        self._records: dict[str, dict[int, VersionRecord]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._pinned: dict[str, set[int]] = {}  # explicit load(): kept besides the policy
        self._held_out: dict[str, set[int]] = {}  # explicit unload(): not reloaded by the policy
        self._routes: dict[str, _Route] = {}
        self._lock = threading.Lock()  # records, labels, routes: held briefly
        self._sync_lock = threading.RLock()  # one scan/load/unload at a time
        self._last_scan: dict[str, dict[int, DiskVersion]] = {}
        self._graveyard: list[VersionRecord] = []  # unloaded, not yet freed
        self.runtime = runtime
        self._runtime: dict[str, RuntimeState] = {}  # in force, per name
        self._runtime_stamp: dict[str, tuple] = {}  # the files' stat when last read
        self._runtime_error: dict[str, str] = {}  # why the last read was refused

    # ------------------------------------------------------------ RecommenderSource
    def get(self, name: str | None = None, *, version: int | None = None, label: str | None = None):
        """The servable for one request: ``name`` (or ``name@label`` / ``name@version``);
        the name's default version (label ``stable`` if set, else the newest available)."""
        return self._pick(name, version, label).servable

    def _pick(self, name: str | None, version: int | None, label: str | None) -> VersionRecord:
        name, version, label = self._parse_target(name, version, label)
        route = self._routes.get(name)  # a snapshot: replaced whole, read without the lock
        rec = None
        if route is not None:
            if version is not None:
                rec = route.by_version.get(version)
            elif label is not None:
                rec = route.by_label.get(label)
            else:
                rec = route.default
        if rec is None:  # 503: the name exists, nothing of it serves yet; 404: no such target
            known = name in self._records or (self.names is not None and name in self.names)
            waiting = known and version is None and label is None
            raise NoServableError(self._why_none(name, version, label), 503 if waiting else 404)
        return rec

    @contextlib.contextmanager
    def lease(
        self, name: str | None = None, *, version: int | None = None, label: str | None = None
    ) -> Iterator[Any]:
        """``get`` for the length of a request: the version cannot finish unloading until the
        lease ends (in-flight requests finish on the version they started with)."""
        with self._lock:  # routes change under this lock: the record is still routed
            rec = self._pick(name, version, label)
            rec.inflight += 1
            servable = rec.servable
        try:
            yield servable
        finally:
            with self._lock:
                rec.inflight -= 1
                done = rec.state is State.UNLOADING and rec.inflight == 0
            if done:
                self._finish_unload(rec)

    def describe(self) -> list[dict[str, Any]]:
        """Each name's policy, labels, default version and versions with state and reason."""
        with self._lock:
            out = []
            for name in sorted(set(self._records) | set(self.names or [])):
                labels = self._labels.get(name, {})
                by_v: dict[int, list[str]] = {}
                for lab, v in labels.items():
                    by_v.setdefault(v, []).append(lab)
                route = self._routes.get(name)
                recs = sorted(self._records.get(name, {}).values(), key=lambda r: r.version)
                out.append(
                    {
                        "name": name,
                        "policy": str(self.policy(name)),
                        "labels": dict(labels),
                        "default_version": route.default.version
                        if route and route.default
                        else None,
                        "versions": [r.as_dict(sorted(by_v.get(r.version, []))) for r in recs],
                        "runtime": {
                            **self._runtime.get(name, DEFAULT).as_dict(),
                            "error": self._runtime_error.get(name),
                        },
                    }
                )
            return out

    def available_count(self, name: str) -> int:
        """How many versions of ``name`` are available now."""
        route = self._routes.get(name)
        return len(route.by_version) if route else 0

    def ready(self) -> bool:
        """At least one version of every configured name (of every name seen) available."""
        names = self.names if self.names is not None else list(self._records)
        if not names:
            return False
        return all((r := self._routes.get(n)) is not None and r.default is not None for n in names)

    # ------------------------------------------------------------ driving
    def policy(self, name: str) -> Policy:
        return self._policies.get(name, self.default_policy)

    def set_policy(self, name: str, policy: Policy | str) -> None:
        """Change a name's policy and apply it now (``specific:V`` pins: a rollback)."""
        self._policies[name] = Policy.parse(policy) if isinstance(policy, str) else policy
        self.sync()

    def set_label(self, name: str, label: str, version: int | None) -> None:
        """Point ``label`` at ``version`` (loading it first if needed; ``None`` removes the
        label). Relabelling ``stable`` to an older version is a rollback."""
        if label not in LABELS:
            raise ConfigError(f"label {label!r}: use one of {', '.join(LABELS)}.")
        with self._sync_lock:
            if version is None:
                with self._lock:
                    self._labels.get(name, {}).pop(label, None)
                    self._rebuild_route(name)
                return
            self._ensure_loaded(name, version)
            with self._lock:
                self._labels.setdefault(name, {})[label] = version
                self._rebuild_route(name)
            self.sync()

    def load(self, name: str, version: int) -> None:
        """Load ``version`` and keep it loaded besides the policy until ``unload``."""
        with self._sync_lock:
            self._held_out.get(name, set()).discard(version)
            self._ensure_loaded(name, version)
            self._pinned.setdefault(name, set()).add(version)

    def unload(self, name: str, version: int) -> None:
        """Stop serving ``version`` (not reloaded by the policy until ``load``/``reload``).
        Refused when it is the only available version of the name."""
        with self._sync_lock:
            with self._lock:
                rec = self._records.get(name, {}).get(version)
                if rec is None or rec.state is not State.AVAILABLE:
                    raise NoServableError(f"{name} version {version} is not loaded.", 409)
                others = [
                    r
                    for r in self._records[name].values()
                    if r.state is State.AVAILABLE and r.version != version
                ]
                if not others:
                    raise ConfigError(
                        f"{name} version {version} is the only available version; load "
                        f"another one first (an unload would leave {name!r} unservable)."
                    )
                for lab in [k for k, v in self._labels.get(name, {}).items() if v == version]:
                    del self._labels[name][lab]
            self._pinned.get(name, set()).discard(version)
            self._held_out.setdefault(name, set()).add(version)
            self._begin_unload(rec)

    def reload(self, name: str | None = None, version: int | None = None) -> None:
        """Forget failures (and explicit unloads) for ``name`` (all names if ``None``), or only
        ``version``, then rescan: failed versions get another try."""
        with self._sync_lock:
            with self._lock:
                for n, recs in self._records.items():
                    if name is not None and n != name:
                        continue
                    for v in [
                        v
                        for v, r in recs.items()
                        if r.state is State.FAILED and (version is None or v == version)
                    ]:
                        del recs[v]
                    held = self._held_out.get(n, set())
                    if version is None:
                        held.clear()
                    else:
                        held.discard(version)
            self.sync()

    def sync(self) -> None:
        """Scan the source and load/unload so each name matches its policy."""
        with self._sync_lock:
            with self._lock:
                dead, self._graveyard = self._graveyard, []
            if dead:  # the last references: freed here, in the loader thread
                self._loads.run(lambda: run_yielding(dead.clear, self.load_share))
            disk = self.source.scan()
            self._last_scan = disk
            names = self.names if self.names is not None else sorted(disk)
            for name in names:
                self._sync_runtime(name)
                self._sync_name(name, disk.get(name, {}))

    # ------------------------------------------------------------ runtime parameters
    def runtime_state(self, name: str) -> RuntimeState:
        """The runtime parameters in force for ``name`` (the bundle's own when none set)."""
        return self._runtime.get(name, DEFAULT)

    def reload_runtime(self, name: str | None = None) -> None:
        """Re-read the runtime files of ``name`` (every name if ``None``) and apply them to
        every loaded version at once. A bad file or a parameter that does not fit a loaded
        version raises ``ConfigError`` naming the file and field; the parameters in force
        stay in force."""
        if self.runtime is None:
            raise ConfigError(
                "no runtime parameters configured: start the server with --runtime FILE or "
                "put ROOT/<name>/runtime.yaml beside the versions."
            )
        with self._sync_lock:
            names = [name] if name is not None else self._names_now()
            for n in names:
                self._apply_runtime(n, force=True)

    def _names_now(self) -> list[str]:
        return self.names if self.names is not None else sorted(self._records)

    def _sync_runtime(self, name: str) -> None:
        """The watcher's part: re-read ``name``'s runtime files when one changed; a bad file
        is logged and shown in the status API, the parameters in force keep serving."""
        if self.runtime is None:
            return
        try:
            self._apply_runtime(name, force=False)
        except ConfigError as e:
            log.warning("runtime parameters of %s refused: %s", name, e)

    def _apply_runtime(self, name: str, force: bool) -> None:
        """Called with ``_sync_lock`` held."""
        stamp = self.runtime.stamp(name)
        if not force and self._runtime_stamp.get(name) == stamp:
            return
        self._runtime_stamp[name] = stamp  # a bad file is not retried until it changes
        try:
            state = self.runtime.read(name)
            with self._lock:
                servables = [
                    r.servable
                    for r in self._records.get(name, {}).values()
                    if r.state in (State.AVAILABLE, State.UNLOADING) and r.servable is not None
                ]
            prepared = [(s, self._prepare_runtime(s, state, name)) for s in servables]
        except ConfigError as e:
            with self._lock:
                self._runtime_error[name] = str(e)
            raise
        with self._lock:  # every version of the name switches together
            for s, p in prepared:
                self.loader.use_runtime(s, p)
            self._runtime[name] = state
            self._runtime_error.pop(name, None)
        log.info("%s runtime parameters %s in force: %s", name, state.digest, state.params)

    def _prepare_runtime(self, servable: Any, state: RuntimeState, name: str) -> Any:
        if not hasattr(self.loader, "prepare_runtime"):
            return None
        try:
            return self.loader.prepare_runtime(servable, state)
        except ConfigError as e:
            where = " + ".join(state.sources) or "runtime parameters"
            raise ConfigError(f"{where}: {e} (model {name!r})") from None

    def close(self) -> None:
        """Drop every version (no request should be running)."""
        with self._sync_lock, self._lock:
            for recs in self._records.values():
                for r in recs.values():
                    r.servable = None
            self._records.clear()
            self._routes.clear()

    # ------------------------------------------------------------ internals
    def _parse_target(
        self, name: str | None, version: int | None, label: str | None
    ) -> tuple[str, int | None, str | None]:
        if name is None:
            known = self.names if self.names is not None else sorted(self._routes)
            if len(known) != 1:
                raise NoServableError(
                    f"several models are served ({', '.join(known) or 'none yet'}); name one.",
                    404 if known else 503,
                )
            name = known[0]
        if "@" in name:
            name, _, target = name.partition("@")
            if target.isdigit():
                version = int(target)
            else:
                label = target
        return name, version, label

    def _why_none(self, name: str, version: int | None, label: str | None) -> str:
        recs = self._records.get(name)
        if not recs and (self.names is None or name not in self.names):
            return f"no model named {name!r}."
        if version is not None:
            r = recs.get(version) if recs else None
            state = f"{r.state.value}" + (f" ({r.reason})" if r and r.reason else "") if r else None
            return f"{name} version {version} is not available" + (
                f": it is {state}." if state else "."
            )
        if label is not None:
            return f"{name} has no available version labelled {label!r}."
        return f"{name} has no available version yet."

    def _sync_name(self, name: str, versions: dict[int, DiskVersion]) -> None:
        with self._lock:
            recs = self._records.setdefault(name, {})
            for v, dv in versions.items():  # copies in progress: listed, never loaded
                r = recs.get(v)
                if not dv.complete and r is None:
                    recs[v] = VersionRecord(
                        name,
                        v,
                        dv.path,
                        dv.size_bytes,
                        State.INCOMPLETE,
                        f"no {MARKER} marker: a copy in progress or interrupted; "
                        f"publish with 'recforge models publish' or write {MARKER} last",
                    )
                elif dv.complete and r is not None and r.state is State.INCOMPLETE:
                    del recs[v]
            for v in [
                v for v, r in recs.items() if v not in versions and r.state is State.INCOMPLETE
            ]:
                del recs[v]
        tried: set[int] = set()
        while True:  # a failed load changes what the policy picks: repeat until stable
            aspired = self._aspired(name, versions)
            with self._lock:
                loaded = {v for v, r in recs.items() if r.state in (State.AVAILABLE, State.LOADING)}
            todo = sorted(aspired - loaded - tried, reverse=True)
            if not todo:
                break
            tried.add(todo[0])
            self._load_one(versions[todo[0]])
        with self._lock:
            available = [r for r in recs.values() if r.state is State.AVAILABLE]
            keep = aspired & {r.version for r in available}
            drop = [r for r in available if r.version not in aspired]
            if not keep:  # never unload the last available versions for a change on disk
                drop = []
        for r in drop:
            self._begin_unload(r)

    def _aspired(self, name: str, versions: dict[int, DiskVersion]) -> set[int]:
        with self._lock:
            recs = self._records.get(name, {})
            failed = {v for v, r in recs.items() if r.state is State.FAILED}
            held = self._held_out.get(name, set())
            eligible = {v for v, dv in versions.items() if dv.complete} - failed - held
            extra = (self._pinned.get(name, set()) | set(self._labels.get(name, {}).values())) & (
                eligible
            )
        return self.policy(name).select(eligible) | extra

    def _ensure_loaded(self, name: str, version: int) -> None:
        with self._lock:
            r = self._records.get(name, {}).get(version)
            if r is not None and r.state is State.AVAILABLE:
                return
        disk = self.source.scan().get(name, {})
        dv = disk.get(version)
        if dv is None:
            raise NoServableError(
                f"{name} version {version}: no such directory under the root.", 404
            )
        if not dv.complete:
            raise NoServableError(
                f"{name} version {version}: incomplete (no {MARKER} marker).", 409
            )
        with self._lock:
            r = self._records.get(name, {}).get(version)
            if r is not None and r.state is State.FAILED:
                del self._records[name][version]
        rec = self._load_one(dv)
        if rec.state is not State.AVAILABLE:
            raise NoServableError(f"{name} version {version} failed to load: {rec.reason}", 409)

    def _load_one(self, dv: DiskVersion) -> VersionRecord:
        rec = VersionRecord(dv.name, dv.version, dv.path, dv.size_bytes, State.LOADING)
        with self._lock:
            self._records.setdefault(dv.name, {})[dv.version] = rec
            used = sum(
                r.size_bytes
                for recs in self._records.values()
                for r in recs.values()
                if r is not rec and r.state in (State.LOADING, State.AVAILABLE, State.UNLOADING)
            )
        budget = self.memory_budget_bytes
        if budget is not None and used + dv.size_bytes > budget:
            return self._fail(
                rec,
                f"memory budget: needs {_mib(dv.size_bytes)} beside {_mib(used)} loaded, "
                f"budget {_mib(budget)}; raise the budget or unload a version",
            )
        t0 = time.perf_counter()
        try:
            servable = self._loads.run(
                lambda: run_yielding(lambda: self.loader.load(dv.path), self.load_share)
            )
        except Exception as e:  # the gate: any load error is the version's failure reason
            return self._fail(rec, f"load: {type(e).__name__}: {e}")
        try:
            schema = self.loader.schema(servable)
            expected = self._expected_schema(dv.name)
            if expected is not None and schema != expected:
                return self._fail(rec, "schema mismatch: " + _schema_diff(expected, schema))
            state = self._runtime.get(dv.name)
            if state is not None and hasattr(self.loader, "use_runtime"):
                try:
                    prepared = self._prepare_runtime(servable, state, dv.name)
                except ConfigError as e:
                    return self._fail(rec, f"runtime parameters: {e}")
                self.loader.use_runtime(servable, prepared)
            w0 = time.perf_counter()
            scores = np.asarray(self.loader.warmup(servable), dtype=np.float64)
            wsec = time.perf_counter() - w0
        except Exception as e:
            return self._fail(rec, f"warm-up: {type(e).__name__}: {e}")
        if scores.size == 0:
            return self._fail(rec, "warm-up returned no scores")
        if not np.isfinite(scores).all():
            bad = int((~np.isfinite(scores)).sum())
            return self._fail(rec, f"warm-up scored {bad} non-finite number(s) (NaN/inf weights?)")
        if wsec > self.warmup_budget_s:
            return self._fail(
                rec,
                f"warm-up took {wsec * 1000:.0f} ms, over the {self.warmup_budget_s * 1000:.0f} ms budget",
            )
        with self._lock:
            rec.servable = servable
            rec.state = State.AVAILABLE
            rec.load_seconds = time.perf_counter() - t0
            rec.loaded_at = time.time()
            self._schemas.setdefault(dv.name, schema)
            self._rebuild_route(dv.name)
        log.info("%s version %d available (%.3f s)", dv.name, dv.version, rec.load_seconds)
        self._emit("loaded", rec)
        return rec

    def _expected_schema(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._schemas.get(name)

    def _fail(self, rec: VersionRecord, reason: str) -> VersionRecord:
        with self._lock:
            rec.state = State.FAILED
            rec.reason = reason
            rec.servable = None
        log.warning("%s version %d failed: %s", rec.name, rec.version, reason)
        self._emit("failed", rec)
        return rec

    def _begin_unload(self, rec: VersionRecord) -> None:
        with self._lock:
            if rec.state is not State.AVAILABLE:
                return
            rec.state = State.UNLOADING
            self._rebuild_route(rec.name)
            done = rec.inflight == 0
        if done:
            self._finish_unload(rec)

    def _finish_unload(self, rec: VersionRecord) -> None:
        with self._lock:
            if rec.state is not State.UNLOADING:
                return
            recs = self._records.get(rec.name, {})
            if recs.get(rec.version) is rec:
                del recs[rec.version]
            # freed by the next sync in the watcher thread, not in the request thread whose
            # lease ended last (freeing a version's arrays and indexes takes time)
            self._graveyard.append(rec)
        log.info("%s version %d unloaded", rec.name, rec.version)
        self._emit("unloaded", rec)

    def _rebuild_route(self, name: str) -> None:
        """Called with ``_lock`` held."""
        recs = self._records.get(name, {})
        avail = {v: r for v, r in recs.items() if r.state is State.AVAILABLE}
        by_label = {lab: avail[v] for lab, v in self._labels.get(name, {}).items() if v in avail}
        default = by_label.get("stable") or (avail[max(avail)] if avail else None)
        routes = dict(self._routes)
        routes[name] = _Route(default, avail, by_label)
        self._routes = routes

    def _emit(self, event: str, rec: VersionRecord) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event, rec)
            except Exception:  # metrics must never break a load
                log.exception("version event hook failed")


class _LoaderThread:
    """One long-lived thread that runs every load at a lower scheduling priority (``nice``
    steps above the process's; Linux sets it per thread). A thread's priority cannot be
    raised back without privileges, so loads never run in a request or watcher thread."""

    def __init__(self, nice: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.nice = int(nice)
        self._pool = ThreadPoolExecutor(1, "recforge-loader", initializer=self._lower)

    def _lower(self) -> None:
        if self.nice <= 0 or not hasattr(os, "setpriority"):
            return
        try:
            tid = threading.get_native_id()
            now = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, now + self.nice))
        except OSError as e:  # not permitted here: loads run at the process's priority
            log.warning("loader thread priority unchanged: %s", e)

    def run(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` in the loader thread; its result or exception, here."""
        return self._pool.submit(fn).result()


def run_yielding(fn: Callable[[], Any], share: float, slice_s: float = 0.001) -> Any:
    """``fn()`` in this thread, giving the GIL back on a schedule: after each ``slice_s`` of
    running it sleeps long enough that it holds the interpreter at most ``share`` of the time.

    A version loads in the serving process beside the request threads; under the GIL a
    thread that loads flat out takes about half of the interpreter from them, which is what
    spikes request latency during a load (TF Serving #881). A profile hook (this thread only)
    checks the clock at every call; C code that holds the GIL for long is not interrupted.
    """
    if share >= 1.0:
        return fn()
    pause = slice_s * (1.0 - share) / share
    mark = time.perf_counter()

    def hook(frame: Any, event: str, arg: Any) -> None:
        nonlocal mark
        now = time.perf_counter()
        if now - mark > slice_s:
            time.sleep(pause)
            mark = time.perf_counter()

    previous = sys.getprofile()
    sys.setprofile(hook)
    try:
        return fn()
    finally:
        sys.setprofile(previous)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _schema_diff(expected: dict[str, Any], got: dict[str, Any]) -> str:
    parts = []
    for k in sorted(set(expected) | set(got)):
        if expected.get(k) != got.get(k):
            parts.append(f"{k!r} expected {expected.get(k)!r}, got {got.get(k)!r}")
    return "; ".join(parts) or "differs"


@contextlib.contextmanager
def lease(source: Any, name: str | None = None) -> Iterator[Any]:
    """The servable of ``source`` for one request: a lease where the source has them (the
    VersionManager: the version cannot finish unloading mid-request), else ``get``."""
    if hasattr(source, "lease"):
        with source.lease(name) as servable:
            yield servable
    else:
        yield source.get(name)


# ---------------------------------------------------------------------------- the watcher
class Watcher:
    """Polls the source every ``interval_s`` and syncs the manager, until ``stop``."""

    def __init__(self, manager: VersionManager, interval_s: float = 2.0) -> None:
        if not interval_s > 0 or not math.isfinite(interval_s):
            raise ConfigError(
                f"poll interval {interval_s!r}: must be a positive number of seconds."
            )
        self.manager = manager
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Watcher:
        self._thread = threading.Thread(target=self._run, name="recforge-watcher", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.manager.sync()
            except Exception:  # a bad scan (root vanished) must not kill the watcher
                log.exception("model repository scan failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def open_repository(settings: Any) -> tuple[VersionManager, Watcher]:
    """The manager over ``settings.models_root`` (policy, budgets from the ServerSettings),
    synced once, and its started watcher."""
    mb = settings.memory_budget_mb
    runtime = RuntimeFiles(settings.runtime_file, settings.models_root)
    manager = VersionManager(
        VersionSource(settings.models_root),
        BundleLoader(),
        names=list(settings.model_names) if settings.model_names else None,
        default_policy=Policy.parse(settings.version_policy),
        memory_budget_bytes=None if mb is None else int(mb * 2**20),
        warmup_budget_s=settings.warmup_budget_ms / 1000,
        runtime=runtime,
        loader_nice=settings.loader_nice,
    )
    manager.sync()
    if manager._runtime_error:  # refuse to start on a bad runtime file, as on a bad flag
        raise ConfigError("; ".join(manager._runtime_error.values()))
    return manager, Watcher(manager, settings.poll_interval_s).start()


# ---------------------------------------------------------------------------- publish
def publish(
    src: str | Path, dest: str | Path, *, verify: Callable[[Path], Any] | None = None
) -> Path:
    """Copy a bundle/model/run directory into ``dest`` (``ROOT/NAME``) as the next version.

    The copy goes to a hidden temporary directory, ``READY`` is written last, every file is
    fsynced and the directory renamed into place; a lock file serialises publishers.
    ``verify(src)`` (e.g. ``load_bundle``) runs first so that a broken artifact is refused
    here rather than failed later by the server. Returns the new version's directory.
    """
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise ConfigError(f"{src}: not a directory; give a run, model or bundle directory.")
    if not NAME_RE.match(dest.name):
        raise ConfigError(f"{dest}: the last part is the model name; letters, digits, '_.-' only.")
    if verify is not None:
        verify(src)
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / ".publish.lock", "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)  # one publisher picks a version number at a time
        existing = [int(p.name) for p in dest.iterdir() if p.is_dir() and p.name.isdigit()]
        version = max(existing, default=0) + 1
        final = dest / str(version)
        with atomic_dir(final, replaces=()) as tmp:  # hidden temp dir, synced, renamed
            shutil.copytree(src, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MARKER))
            marker = {"source": str(src.resolve()), "published": time.time(), "version": version}
            (tmp / MARKER).write_text(json.dumps(marker))  # last
    log.info("published %s as %s", src, final)
    return final
