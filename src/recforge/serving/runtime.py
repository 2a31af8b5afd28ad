"""Runtime parameters: what an operator changes on a running server without re-exporting a
model (k limits, channel quotas and blend weights, filters, diversity, rank_top).

A file (YAML or JSON) given to ``recforge serve --runtime FILE`` holds them per model name::

    models:
      demo:
        max_k: 50                        # largest k a request may ask for (422 above)
        rank_top: 100                    # candidates the ranker scores
        mmr_lambda: 0.3                  # MMR diversity weight in [0, 1)
        diversity_field: category        # item column whose equal values count as similar
        recall_k: 200                    # merged candidates per request
        merge: weighted                  # quota | weighted
        channels:                        # per recall channel of the bundle
          itemcf: {quota: 30, weight: 0.5}
        filters: {category: [c1, c2]}    # only items with these values (and the request's)
        exclude: {category: [c9]}        # never items with these values
        exclude_items: [17, 42]          # never these item ids

``ROOT/<name>/runtime.yaml`` (beside the versions) holds one name's parameters without the
``models:`` level and overrides the ``--runtime`` file key by key. A key left out keeps the
bundle's own value. Unknown keys and values of the wrong type are refused with the file and
the field named; the parameters in force then stay in force.

This module parses and versions the files; ``Recommender.prepare_runtime`` checks them
against a loaded bundle (channel names, item columns) and the version manager applies them
(``VersionManager.reload_runtime``, and its watcher when a file changes).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from recforge.config import check_keys, load_yaml
from recforge.exceptions import ConfigError

NAME_FILE = "runtime.yaml"  # ROOT/<name>/runtime.yaml
MERGES = ("quota", "weighted")


@dataclass(frozen=True)
class ChannelParams:
    """One recall channel's overrides."""

    quota: int | None = None  # top items asked of the channel per request
    weight: float | None = None  # weight of its normalised scores in the merged score

    def __post_init__(self) -> None:
        from recforge.jobs import check_types

        check_types(self, "")
        if self.quota is not None and self.quota < 1:
            raise ConfigError(f"quota: must be >= 1, got {self.quota!r}.")
        if self.weight is not None and not (math.isfinite(self.weight) and self.weight >= 0):
            raise ConfigError(f"weight: must be a finite number >= 0, got {self.weight!r}.")


@dataclass(frozen=True)
class RuntimeParams:
    """One model name's runtime parameters; ``None`` (or empty): the bundle's own value."""

    max_k: int | None = None  # largest k a request may ask for
    rank_top: int | None = None  # candidates the ranker scores, best by recall order
    mmr_lambda: float | None = None  # 0: no diversity; in (0, 1): MMR weight
    diversity_field: str | None = None  # item column for MMR
    recall_k: int | None = None  # merged recall candidates per request
    merge: str | None = None  # "quota" (round-robin) or "weighted" (score sum)
    channels: dict[str, ChannelParams] = field(default_factory=dict)
    filters: dict[str, list[Any]] = field(default_factory=dict)  # item column -> allowed values
    exclude: dict[str, list[Any]] = field(default_factory=dict)  # item column -> banned values
    exclude_items: list[Any] = field(default_factory=list)  # raw item ids never returned

    def __post_init__(self) -> None:
        from recforge.jobs import check_types

        check_types(self, "")
        for name in ("max_k", "rank_top", "recall_k"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"{name}: must be >= 1, got {v!r}.")
        if self.mmr_lambda is not None and not 0.0 <= self.mmr_lambda < 1.0:
            raise ConfigError(f"mmr_lambda: must be in [0, 1), got {self.mmr_lambda!r}.")
        if self.merge is not None and self.merge not in MERGES:
            raise ConfigError(f"merge: one of {', '.join(MERGES)}, got {self.merge!r}.")
        for group in ("filters", "exclude"):
            for col, values in getattr(self, group).items():
                if not values or not all(_scalar(v) for v in values):
                    raise ConfigError(
                        f"{group}.{col}: a non-empty list of strings or numbers, got {values!r}."
                    )
        if not all(_scalar(v) for v in self.exclude_items):
            raise ConfigError("exclude_items: a list of item ids (strings or numbers).")

    def as_dict(self) -> dict[str, Any]:
        """The keys that are set (what overrides the bundle), JSON-safe."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None or v == {} or v == []:
                continue
            if f.name == "channels":
                v = {c: {k: x for k, x in asdict(p).items() if x is not None} for c, p in v.items()}
            out[f.name] = v
        return out


def _scalar(v: Any) -> bool:
    return isinstance(v, str | int | float) and not isinstance(v, bool)


def parse_params(data: Any, where: str, path: str = "") -> RuntimeParams:
    """A ``RuntimeParams`` from a mapping; an error names the file ``where`` and the field
    (under ``path``, e.g. ``models.demo``)."""
    at = f"{where}: {path}." if path else f"{where}: "
    loc = f"{where}: {path}" if path else where  # where the mapping itself is
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{loc}: expected a mapping of runtime parameters.")
    data = dict(data)
    channels = data.pop("channels", None) or {}
    if not isinstance(channels, dict):
        raise ConfigError(f"{at}channels: a mapping of channel name -> {{quota, weight}}.")
    parsed = {}
    for name, spec in channels.items():
        here = f"{at}channels.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{here}: a mapping with quota and/or weight.")
        check_keys(spec, [f.name for f in fields(ChannelParams)], here)
        try:
            parsed[str(name)] = ChannelParams(**spec)
        except ConfigError as e:
            raise ConfigError(f"{here}.{e}") from None
    check_keys(data, [f.name for f in fields(RuntimeParams) if f.name != "channels"], loc)
    try:
        return RuntimeParams(channels=parsed, **data)
    except ConfigError as e:
        raise ConfigError(f"{at}{e}") from None


@dataclass(frozen=True)
class RuntimeState:
    """The runtime parameters in force for one name, and where they came from."""

    params: RuntimeParams
    sources: tuple[str, ...] = ()  # the files read, in override order
    digest: str = ""  # sha256 (12 hex) of the parameters: the "version" of the config
    loaded_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "params": self.params.as_dict(),
            "sources": list(self.sources),
            "digest": self.digest,
            "loaded_at": self.loaded_at,
        }


DEFAULT = RuntimeState(RuntimeParams())


class RuntimeFiles:
    """Where the runtime parameters of each name are read from: the ``--runtime`` file's
    ``models.<name>`` entry, then ``<root>/<name>/runtime.yaml`` key by key over it."""

    def __init__(self, file: str | Path | None = None, root: str | Path | None = None) -> None:
        self.file = Path(file) if file is not None else None
        self.root = Path(root) if root is not None else None
        if self.file is not None and not self.file.is_file():
            raise ConfigError(f"--runtime {self.file}: no such file.")

    def paths(self, name: str) -> list[Path]:
        out = [self.file] if self.file is not None else []
        if self.root is not None:
            out.append(self.root / name / NAME_FILE)
        return out

    def stamp(self, name: str) -> tuple:
        """Changes whenever one of ``name``'s files appears, goes or changes content (the
        files are small: hashing them at every poll costs microseconds)."""
        out = []
        for p in self.paths(name):
            try:
                out.append((str(p), hashlib.sha256(p.read_bytes()).hexdigest()))
            except OSError:
                out.append((str(p), None))
        return tuple(out)

    def read(self, name: str) -> RuntimeState:
        """Parse ``name``'s parameters; ``ConfigError`` naming the file and field."""
        merged: dict[str, Any] = {}
        sources: list[str] = []
        if self.file is not None:
            data = _read_file(self.file)
            check_keys(data, ["models"], str(self.file))
            entries = data.get("models") or {}
            if not isinstance(entries, dict):
                raise ConfigError(f"{self.file}: 'models' must map model names to parameters.")
            for n, entry in entries.items():  # every entry is checked, served or not
                parse_params(entry, str(self.file), f"models.{n}")
            if name in entries:
                merged.update(entries[name] or {})
                sources.append(str(self.file))
        if self.root is not None:
            local = self.root / name / NAME_FILE
            if local.is_file():
                data = _read_file(local)
                parse_params(data, str(local))
                channels = {**(merged.get("channels") or {}), **(data.get("channels") or {})}
                merged.update(data)
                if channels:
                    merged["channels"] = channels
                sources.append(str(local))
        params = parse_params(merged, " + ".join(sources) or "runtime")
        text = json.dumps(params.as_dict(), sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        return RuntimeState(params, tuple(sources), digest, time.time())


def _read_file(path: Path) -> dict[str, Any]:
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level.")
        return data
    return load_yaml(path)


def apply_file(recommender: Any, file: str | Path, name: str) -> RuntimeState:
    """Read ``file``'s parameters for ``name`` and put them in force on one
    ``Recommender`` (``recforge serve --bundle DIR --runtime FILE``: read once at start)."""
    state = RuntimeFiles(file).read(name)
    try:
        recommender.use_runtime(recommender.prepare_runtime(state.params))
    except ConfigError as e:
        raise ConfigError(f"{file}: models.{name}.{e}") from None
    return state
