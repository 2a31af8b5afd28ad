"""The model registry: build any model by name with typed, checked parameters.

    >>> from recforge import models
    >>> models.get("itemcf", k=200)
    >>> models.available()              # {"itemcf": "retrieval", ...}

Model modules register themselves with ``@register("name")``; the first lookup imports
every module under ``recforge.models`` so that no list of modules has to be kept by hand.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any, TypeVar

from recforge.config import load_yaml, suggest
from recforge.exceptions import ConfigError

_REGISTRY: dict[str, type] = {}
_LOADED = False

T = TypeVar("T", bound=type)


def register(name: str):
    """Class decorator: make a model buildable by ``name``."""

    def deco(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ConfigError(
                f"model name {name!r} is registered twice ({_REGISTRY[name]} and {cls})."
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    import recforge.models as pkg

    for info in pkgutil.walk_packages(pkg.__path__, prefix="recforge.models."):
        importlib.import_module(info.name)
    _LOADED = True


def available(kind: str | None = None) -> dict[str, str]:
    """Registered model names -> kind ("retrieval" / "ranker"), sorted by name."""
    _load_all()
    return {n: c.kind for n, c in sorted(_REGISTRY.items()) if kind is None or c.kind == kind}


def get_class(name: str) -> type:
    _load_all()
    if name not in _REGISTRY:
        names = sorted(_REGISTRY)
        raise ConfigError(
            f"unknown model {name!r}{suggest(name, names)}. Available: {', '.join(names)}."
        )
    return _REGISTRY[name]


def get(name: str, **params: Any):
    """A new, unfitted model ``name`` with ``params``; unknown parameter names are an error."""
    cls = get_class(name)
    valid = cls.param_names()
    for key in params:
        if key not in valid:
            raise ConfigError(
                f"model {name!r}: unknown parameter {key!r}{suggest(key, valid)}. Valid: {', '.join(valid)}."
            )
    return cls(**params)


def from_config(config: dict[str, Any] | str | Path):
    """Build a model from ``{"name": ..., "params": {...}}`` or a YAML file holding that
    (or holding it under a top-level ``model`` key)."""
    if isinstance(config, str | Path):
        config = load_yaml(config)
    if "model" in config and isinstance(config["model"], dict):
        config = config["model"]
    extra = set(config) - {"name", "params"}
    if extra or "name" not in config:
        raise ConfigError(
            f"model config needs 'name' and optional 'params'; got keys {sorted(config)}."
        )
    return get(config["name"], **(config.get("params") or {}))


def load(path: str | Path):
    """Load whatever model a model directory holds."""
    from recforge.artifacts import read_manifest

    manifest = read_manifest(path)
    return get_class(manifest["name"]).load(path)
