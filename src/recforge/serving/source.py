"""Where the server gets the ``Recommender`` for a request.

A *source* is any object with ``get(name=None) -> Recommender`` (the servable that answers
one request; a request keeps the one it got even if a newer version arrives meanwhile) and
``describe() -> list[dict]`` (what is loaded). ``SingleBundle`` serves one bundle; the model
repository's version manager is the other implementation.
"""

from __future__ import annotations

from typing import Any, Protocol

from recforge.serving.core import Recommender


class ModelNotFound(LookupError):
    """A request named a model the source does not serve."""


class RecommenderSource(Protocol):
    def get(self, name: str | None = None) -> Recommender: ...

    def describe(self) -> list[dict[str, Any]]: ...

    def ready(self) -> bool: ...


class SingleBundle:
    """One loaded bundle, served under its manifest name."""

    def __init__(self, recommender: Recommender, name: str | None = None) -> None:
        self.recommender = recommender
        self.name = name or recommender.bundle.manifest.get("name") or "recforge"

    def get(self, name: str | None = None) -> Recommender:
        if name not in (None, self.name):
            raise ModelNotFound(f"model {name!r} is not served here; served: [{self.name!r}].")
        return self.recommender

    def describe(self) -> list[dict[str, Any]]:
        info = self.recommender.info()
        return [{"name": self.name, "state": "available", **info}]

    def ready(self) -> bool:
        return True
