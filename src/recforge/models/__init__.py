"""Models: retrieval (recall) and ranking, all behind one API and one registry."""

from recforge.models.base import BaseModel, EmbeddingMixin, Ranker, RetrievalModel
from recforge.models.registry import available, from_config, get, get_class, load, register

__all__ = [
    "BaseModel",
    "EmbeddingMixin",
    "Ranker",
    "RetrievalModel",
    "available",
    "from_config",
    "get",
    "get_class",
    "load",
    "register",
]
