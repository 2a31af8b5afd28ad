"""The model registry: build any model by name with typed, checked parameters.

    >>> from recforge import models
    >>> models.get("itemcf", k=200)
    >>> models.available()              # {"itemcf": "retrieval", ...}

Model modules register themselves with ``@register("name")``; the registry finds them by
reading the sources under ``recforge.models`` (no list of modules is kept by hand) and
imports a model's module only when that model is asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
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
    for module in sorted(set(_module_index().values())):
        importlib.import_module(module)
    _LOADED = True


_REGISTER = re.compile(r"""^@register\(\s*["']([A-Za-z0-9_.-]+)["']\s*\)""", re.M)
_INDEX: dict[str, str] | None = None


def _module_index() -> dict[str, str]:
    """Model name -> the module that registers it, read from the sources (``@register("x")``
    lines) without importing them: loading one model imports only its own module, so a server
    holding an ItemCF never imports torch, gensim or LightGBM."""
    global _INDEX
    if _INDEX is None:
        import recforge.models as pkg

        index = {}
        for info in pkgutil.walk_packages(pkg.__path__, prefix="recforge.models."):
            spec = importlib.util.find_spec(info.name)
            origin = getattr(spec, "origin", None)
            if origin and origin.endswith(".py"):
                for name in _REGISTER.findall(Path(origin).read_text(encoding="utf-8")):
                    index[name] = info.name
        _INDEX = index
    return _INDEX


def available(kind: str | None = None) -> dict[str, str]:
    """Registered model names -> kind ("retrieval" / "ranker"), sorted by name."""
    _load_all()
    return {n: c.kind for n, c in sorted(_REGISTRY.items()) if kind is None or c.kind == kind}


def get_class(name: str) -> type:
    if name not in _REGISTRY and name in _module_index():
        importlib.import_module(_module_index()[name])
    if name not in _REGISTRY:
        _load_all()  # a model registered some other way (a plugin module): look everywhere
    if name not in _REGISTRY:
        names = sorted(_REGISTRY)
        raise ConfigError(
            f"unknown model {name!r}{suggest(name, names)}. Available: {', '.join(names)}."
        )
    return _REGISTRY[name]


def get(name: str, **params: Any):
    """A new, unfitted model ``name`` with ``params``; unknown parameter names and values
    of the wrong type (``k="ten"``) are a ConfigError naming the field."""
    cls = get_class(name)
    _check_params(cls, params)
    return cls(**params)


def _check_params(cls: type, params: dict[str, Any]) -> None:
    """Unknown names and values of the wrong type are a ConfigError naming the field."""
    from recforge.models.params import check_params

    check_params(cls, params)


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
