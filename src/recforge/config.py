"""Typed configs that reject unknown keys.

Every config in recforge is a dataclass. ``from_dict`` builds one from a plain mapping (for
example a parsed YAML file) and fails on a key the dataclass does not declare, naming the
key, the valid keys and the closest match, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from recforge.exceptions import ConfigError

T = TypeVar("T")


def suggest(name: str, valid: list[str]) -> str:
    """A ' (did you mean X?)' hint, or ''."""
    close = difflib.get_close_matches(name, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(given: Mapping[str, Any], valid: list[str], where: str) -> None:
    """Raise ConfigError if ``given`` has a key outside ``valid``."""
    for key in given:
        if key not in valid:
            raise ConfigError(
                f"{where}: unknown key {key!r}{suggest(str(key), valid)}. "
                f"Valid keys: {', '.join(sorted(valid))}."
            )


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``; nested dataclass fields are built recursively."""
    where = where or cls.__name__
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}.")
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    check_keys(data, list(fields), where)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        sub = _dataclass_in(hints.get(name))
        if sub is not None and isinstance(value, Mapping):
            value = from_dict(sub, value, f"{where}.{name}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{where}: {e}") from None


def _dataclass_in(hint: Any) -> type | None:
    if hint is None:
        return None
    if dataclasses.is_dataclass(hint):
        return hint  # type: ignore[return-value]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        for arg in typing.get_args(hint):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a plain dict (YAML/JSON friendly)."""
    return dataclasses.asdict(obj)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with the file named in any error."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level.")
    return data
