"""Exact and Faiss ANN indexes over any embedding model.

Public API (used by ``recforge index build|bench``):

* ``build_index(vectors, kind="flat"|"ivf_flat"|"ivf_pq"|"hnsw", metric="ip"|"l2", ...)``
  -> ``AnnIndex``; fields as in ``IndexConfig``.
* ``AnnIndex.search(queries, k) -> (idx, scores)``, ``AnnIndex.save(dir)``,
  ``AnnIndex.load(dir)`` (Faiss binary ``index.faiss`` + ``index.json`` with its sha256);
  ``verify_index(dir)`` checks a saved index without loading it.
* ``AnnRecommender(model, config)``: a fitted embedding model served through an index.
* ``ann_bench(vectors, queries, kinds, k=10)`` -> DataFrame of recall@k vs exact, queries/s,
  single-query p50/p99 latency and build time.
"""

from recforge.index.faiss_index import (
    KINDS,
    AnnIndex,
    AnnRecommender,
    IndexConfig,
    ann_bench,
    build_index,
    exact_search,
    recall_vs_exact,
    verify_index,
)

__all__ = [
    "KINDS",
    "AnnIndex",
    "AnnRecommender",
    "IndexConfig",
    "ann_bench",
    "build_index",
    "exact_search",
    "recall_vs_exact",
    "verify_index",
]
