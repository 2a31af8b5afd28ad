"""The online service: the bundle (one artifact for the whole funnel), the recommender core
that runs it per request, the REST and gRPC servers over that core, the model repository
and the feedback store.

    from recforge.serving import Recommender
    Recommender.load("runs/bundle").recommend("u1", k=20, explain=True)

Names are imported on first use, so that ``recforge.serving.feedback`` (say) does not
load the models.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Bundle": "recforge.serving.bundle",
    "RerankConfig": "recforge.serving.bundle",
    "load_bundle": "recforge.serving.bundle",
    "verify_bundle": "recforge.serving.bundle",
    "write_bundle": "recforge.serving.bundle",
    "Recommendation": "recforge.serving.core",
    "Recommender": "recforge.serving.core",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'recforge.serving' has no attribute {name!r}")
