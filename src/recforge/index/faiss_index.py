"""Faiss indexes over item vectors, and an ANN-backed recommender over any embedding model.

``build_index(vectors, kind=..., metric=...)`` returns an ``AnnIndex``:

=============  ==============================================================================
``flat``       exact search (``IndexFlatIP`` / ``IndexFlatL2``), the reference for recall
``ivf_flat``   inverted lists over ``nlist`` k-means cells, ``nprobe`` cells searched
``ivf_pq``     IVF with product-quantised residuals: ``m`` sub-quantisers of ``nbits`` bits
``hnsw``       HNSW graph (``hnsw_m`` links per node, ``ef_construction``, ``ef_search``);
               ``mips=True`` searches ``ip`` as L2 over the MIPS-to-L2 reduction
=============  ==============================================================================

``AnnIndex.search(queries, k) -> (idx, scores)``: idx (n, k) int64 row numbers of the
indexed vectors (-1 in slots the index could not fill), scores (n, k) float32, higher is
better: the inner product for ``metric="ip"``, the negative squared L2 distance for
``metric="l2"``. ``save(dir)`` writes ``index.faiss`` (Faiss's own binary format, via
``faiss.write_index``) and ``index.json`` (the ``IndexConfig``, the vector count and the
sha256 of index.faiss), atomically; ``AnnIndex.load(dir)`` verifies and reads them back
(``verify_index(dir)`` verifies only). No pickle.

``AnnRecommender(model, config)`` puts a fitted ``EmbeddingMixin`` model behind an index:
queries are the model's user vectors, results are over-fetched by the largest number of
items a queried user has seen, seen items are filtered out, raw item ids come back.

``ann_bench(vectors, queries, kinds)`` compares index kinds against the exact index
(recall@k, batch queries/s, single-query p50/p99 latency, build time); ``recforge index
bench`` prints its table.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recforge.artifacts import atomic_dir, checksums, read_json, verify_files
from recforge.config import from_dict, suggest
from recforge.exceptions import ArtifactError, ConfigError, DataError, NotFittedError

log = logging.getLogger(__name__)

KINDS = ("flat", "ivf_flat", "ivf_pq", "hnsw")
METRICS = ("ip", "l2")
INDEX_FILE = "index.faiss"
CONFIG_FILE = "index.json"
INDEX_FORMAT_VERSION = 1  # index.json with "files" checksums
_USER_BATCH = 1024  # users per search in AnnRecommender.recommend_idx


@dataclass
class IndexConfig:
    """How to build an ANN index (every field has a working default)."""

    kind: str = "hnsw"  # flat | ivf_flat | ivf_pq | hnsw
    metric: str = "ip"  # ip (inner product, = model scores) | l2
    nlist: int | None = None  # IVF cells; None: about 4 * sqrt(n), at least 39 vectors per cell
    nprobe: int = 16  # IVF cells searched per query (recall/speed knob)
    m: int | None = None  # PQ sub-quantisers, must divide d; None: about d / 4
    nbits: int = 8  # bits per PQ code
    hnsw_m: int = 32  # HNSW links per node
    ef_construction: int = 200  # HNSW build-time candidate list
    ef_search: int = 128  # HNSW search-time candidate list (recall/speed knob)
    train_size: int | None = 100_000  # vectors sampled to train IVF/PQ; None: all
    seed: int = 0  # training sample and k-means seed
    refine: int = 0  # ivf_pq: re-rank refine * k PQ candidates with exact vectors (0: off)
    # hnsw + ip: search an L2 graph over the MIPS-to-L2 reduction. Off by default: on ALS
    # item vectors (Amazon Beauty) recall@10 at ef_search=128 was 0.54 with it, 0.9995 without;
    # it helped only on synthetic clustered vectors (docs/BENCHMARKS.md).
    mips: bool = False

    def check(self) -> IndexConfig:
        if self.kind not in KINDS:
            raise ConfigError(
                f"index kind {self.kind!r}{suggest(self.kind, list(KINDS))} unknown; choose from {KINDS}."
            )
        if self.metric not in METRICS:
            raise ConfigError(f"index metric {self.metric!r} unknown; choose 'ip' or 'l2'.")
        if self.refine < 0:
            raise ConfigError(f"index refine must be >= 0, got {self.refine!r}.")
        for name in ("nprobe", "nbits", "hnsw_m", "ef_construction", "ef_search"):
            if getattr(self, name) < 1:
                raise ConfigError(f"index {name} must be >= 1, got {getattr(self, name)!r}.")
        return self


def _faiss() -> Any:
    import faiss

    return faiss


class AnnIndex:
    """A Faiss index with its build config; search returns (row ids, higher-is-better scores)."""

    def __init__(self, index: Any, config: IndexConfig, mips_norm: float | None = None) -> None:
        self.index = index
        self.config = config
        # set when inner products are searched as L2 over vectors augmented with
        # sqrt(M^2 - |x|^2) (Bachrach et al. 2014): then |q - x'|^2 = |q|^2 + M^2 - 2 q.x
        self.mips_norm = mips_norm
        self._apply_search_params()

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d) - (1 if self.mips_norm is not None else 0)

    def __repr__(self) -> str:
        return f"AnnIndex(kind={self.config.kind!r}, metric={self.config.metric!r}, n={self.ntotal}, d={self.dim})"

    def _apply_search_params(self) -> None:
        faiss = _faiss()
        if self.config.kind in ("ivf_flat", "ivf_pq"):
            faiss.extract_index_ivf(self.index).nprobe = int(self.config.nprobe)
        elif self.config.kind == "hnsw":
            self.index.hnsw.efSearch = int(self.config.ef_search)

    def set_search_params(
        self, *, nprobe: int | None = None, ef_search: int | None = None
    ) -> AnnIndex:
        """Change the recall/speed knobs without rebuilding; returns self."""
        if nprobe is not None:
            self.config.nprobe = int(nprobe)
        if ef_search is not None:
            self.config.ef_search = int(ef_search)
        self.config.check()
        self._apply_search_params()
        return self

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k nearest rows for each query.

        queries: (n, d). Returns (idx (n, k') int64, scores (n, k') float32), k' = min(k,
        ntotal), best first; idx -1 / score -inf where the index found fewer than k'.
        """
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise DataError(
                f"AnnIndex.search: queries have dimension {q.shape[1]}, the index holds {self.dim}."
            )
        if not isinstance(k, int | np.integer) or k < 1:
            raise ConfigError(f"AnnIndex.search: k must be a positive integer, got {k!r}.")
        k = min(int(k), self.ntotal)
        if self.mips_norm is not None:
            qa = np.hstack([q, np.zeros((len(q), 1), dtype=np.float32)])  # (n, d + 1)
            dist, idx = self.index.search(qa, k)
            q2 = (q.astype(np.float64) ** 2).sum(1, keepdims=True)
            scores = (q2 + self.mips_norm**2 - dist) / 2.0  # back to inner products
        else:
            dist, idx = self.index.search(q, k)
            scores = dist if self.config.metric == "ip" else -dist
        scores = np.where(idx >= 0, scores, -np.inf).astype(np.float32)
        return idx.astype(np.int64), scores

    def save(self, path: str | Path) -> Path:
        """Write ``path/index.faiss`` (Faiss binary) and ``path/index.json`` (config, vector
        count, sha256 of index.faiss) atomically; returns path."""
        path = Path(path)
        meta = {
            "format_version": INDEX_FORMAT_VERSION,
            "config": dataclasses.asdict(self.config),
            "ntotal": self.ntotal,
            "dim": self.dim,
            "mips_norm": self.mips_norm,
        }
        with atomic_dir(path, replaces=(CONFIG_FILE,)) as tmp:
            _faiss().write_index(self.index, str(tmp / INDEX_FILE))
            meta["files"] = checksums(tmp, [INDEX_FILE])
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> AnnIndex:
        """Read an index directory written by ``save`` (verified first: ``verify_index``)."""
        path = Path(path)
        meta = verify_index(path)
        config = from_dict(IndexConfig, meta.get("config"), where=str(path / CONFIG_FILE)).check()
        try:
            index = _faiss().read_index(str(path / INDEX_FILE))
        except RuntimeError as e:
            raise ArtifactError(f"{path / INDEX_FILE}: Faiss cannot read it ({e}).") from None
        if int(index.ntotal) != int(meta.get("ntotal", index.ntotal)):
            raise ArtifactError(
                f"{path}: index holds {index.ntotal} vectors, {CONFIG_FILE} says {meta['ntotal']}."
            )
        return cls(index, config, meta.get("mips_norm"))


def verify_index(path: str | Path) -> dict[str, Any]:
    """Check an index directory without reading the index into Faiss; returns index.json.

    ``index.json`` must be a JSON object of a known format version whose ``files`` lists the
    sha256 of ``index.faiss``, and the file must match it. Raises ``ArtifactError`` naming
    the file.
    """
    path = Path(path)
    mfile = path / CONFIG_FILE
    for f in (INDEX_FILE, CONFIG_FILE):
        if not (path / f).exists():
            raise ArtifactError(
                f"{path / f}: missing; {path} is not an index directory written by AnnIndex.save."
            )
    meta = read_json(mfile)
    version = meta.get("format_version")
    if not isinstance(version, int) or version > INDEX_FORMAT_VERSION:
        raise ArtifactError(
            f"{mfile}: format version {version!r} unknown to this recforge (it reads "
            f"{INDEX_FORMAT_VERSION}); an index saved before checksums: build it again."
        )
    verify_files(path, meta.get("files"), required=[INDEX_FILE], where=mfile)
    return meta


def _default_nlist(n: int) -> int:
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def _default_m(d: int) -> int:
    """Sub-quantisers of about 4 dimensions each (1-d sub-quantisers train very slowly)."""
    return next((m for m in (64, 32, 16, 8, 4, 2) if d % m == 0 and d // m >= 4), 1)


def build_index(vectors: np.ndarray, config: IndexConfig | None = None, **params: Any) -> AnnIndex:
    """Build an index over ``vectors`` (n, d).

    Either pass an ``IndexConfig`` or its fields as keywords, e.g.
    ``build_index(v, kind="ivf_pq", nlist=1024, m=16)``. IVF/PQ are trained on up to
    ``train_size`` sampled vectors. Returns the ``AnnIndex``.
    """
    faiss = _faiss()
    if config is None:
        config = from_dict(IndexConfig, params, where="build_index")
    elif params:
        config = dataclasses.replace(config, **params)
    config = dataclasses.replace(config).check()
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise DataError(
            f"build_index: vectors must be a non-empty (n, d) array, got shape {x.shape}."
        )
    if not np.isfinite(x).all():
        raise DataError("build_index: vectors hold NaN or inf; check the model that produced them.")
    n, d = x.shape
    mips_norm = None
    fmetric = faiss.METRIC_INNER_PRODUCT if config.metric == "ip" else faiss.METRIC_L2
    t0 = time.perf_counter()
    if config.kind == "flat":
        index = faiss.IndexFlatIP(d) if config.metric == "ip" else faiss.IndexFlatL2(d)
    elif config.kind == "hnsw":
        if config.metric == "ip" and config.mips:
            norms = np.linalg.norm(x.astype(np.float64), axis=1)
            mips_norm = float(norms.max())
            extra = np.sqrt(np.maximum(mips_norm**2 - norms**2, 0.0))[:, None]
            x = np.ascontiguousarray(np.hstack([x, extra]), dtype=np.float32)  # (n, d + 1)
            index = faiss.IndexHNSWFlat(d + 1, int(config.hnsw_m), faiss.METRIC_L2)
        else:
            index = faiss.IndexHNSWFlat(d, int(config.hnsw_m), fmetric)
        index.hnsw.efConstruction = int(config.ef_construction)
    else:
        nlist = int(config.nlist) if config.nlist else _default_nlist(n)
        if nlist > n:
            raise ConfigError(f"build_index: nlist={nlist} exceeds the {n} vectors; lower nlist.")
        config.nlist = nlist
        quantizer = faiss.IndexFlatIP(d) if config.metric == "ip" else faiss.IndexFlatL2(d)
        if config.kind == "ivf_flat":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, fmetric)
        else:
            m = int(config.m) if config.m else _default_m(d)
            if d % m:
                raise ConfigError(
                    f"build_index: ivf_pq needs m dividing the dimension {d}; m={m} does not."
                )
            config.m = m
            if n < (1 << int(config.nbits)):
                raise ConfigError(
                    f"build_index: ivf_pq with nbits={config.nbits} trains {1 << int(config.nbits)} "
                    f"centroids per sub-quantizer but there are only {n} vectors; lower nbits "
                    f"(e.g. {max(1, n.bit_length() - 1)}) or use ivf_flat / hnsw."
                )
            index = faiss.IndexIVFPQ(quantizer, d, nlist, m, int(config.nbits), fmetric)
            _quiet_small_pq_training(index, n, config)
        index.cp.seed = int(config.seed)
        if config.kind == "ivf_pq" and config.refine > 0:
            index = faiss.IndexRefineFlat(index)  # keeps the raw vectors for exact re-ranking
            index.k_factor = float(config.refine)
        train = x
        if config.train_size is not None and n > config.train_size:
            rows = np.random.default_rng(config.seed).choice(
                n, size=int(config.train_size), replace=False
            )
            train = x[np.sort(rows)]
        index.train(train)
    index.add(x)
    log.info("build_index: %s over %d x %d in %.2fs", config.kind, n, d, time.perf_counter() - t0)
    return AnnIndex(index, config, mips_norm)


# faiss k-means wants this many training points per centroid and prints a warning from C++
# (once per PQ sub-quantiser, e.g. 16 identical lines) when it has fewer.
_POINTS_PER_CENTROID = 39


def _quiet_small_pq_training(index: Any, n: int, config: IndexConfig) -> None:
    """Say once, through logging, that the PQ codebooks train on few vectors, and stop faiss
    from printing the same warning for every sub-quantiser."""
    n_train = min(n, config.train_size) if config.train_size is not None else n
    need = _POINTS_PER_CENTROID * (1 << int(config.nbits))
    if n_train < need:
        log.warning(
            "build_index: ivf_pq trains %d centroids per sub-quantiser on %d vectors (faiss "
            "recommends %d); codes will be coarse: lower nbits or index more vectors.",
            1 << int(config.nbits),
            n_train,
            need,
        )
        index.pq.cp.min_points_per_centroid = 1


# ---------------------------------------------------------------------------- recommender
class AnnRecommender:
    """A fitted embedding model served through an ANN index.

    model: a fitted retrieval model with ``user_vectors`` / ``item_vectors``
    (``EmbeddingMixin``). config: ``IndexConfig`` or a dict of its fields; the index is built
    at construction, over ``model.item_vectors()``. With ``metric="ip"`` the ANN scores are
    the model's own scores.
    """

    def __init__(
        self,
        model: Any,
        config: IndexConfig | dict[str, Any] | None = None,
        *,
        index: AnnIndex | None = None,
    ) -> None:
        if not hasattr(model, "item_vectors") or not hasattr(model, "user_vectors"):
            raise ConfigError(
                f"AnnRecommender: {type(model).__name__} has no user/item vectors; only "
                f"embedding models (EmbeddingMixin) can be served through an ANN index."
            )
        if not getattr(model, "is_fitted", False):
            raise NotFittedError(model, "AnnRecommender")
        if isinstance(config, dict):
            config = from_dict(IndexConfig, config, where="AnnRecommender config")
        self.model = model
        self.index = (
            index
            if index is not None
            else build_index(model.item_vectors(), config or IndexConfig())
        )
        if self.index.ntotal != model.n_items:
            raise ConfigError(
                f"AnnRecommender: index holds {self.index.ntotal} vectors, the model has {model.n_items} items."
            )

    @property
    def config(self) -> IndexConfig:
        return self.index.config

    def _recommend_one(self, u: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``recommend_idx`` of one user with seen items excluded (the online path)."""
        from recforge.models.base import seen_row

        k = min(int(k), self.model.n_items)
        seen = seen_row(self.model.seen_, u)
        fetch = min(k + len(seen), self.model.n_items)
        idx, scores = self.index.search(self.model.user_vectors(np.array([u])), fetch)
        drop = (idx[0] < 0) | np.isin(idx[0], seen)
        idx, scores = idx[0][~drop][:k], scores[0][~drop][:k].astype(np.float32)
        if len(idx) < k:
            idx = np.pad(idx, (0, k - len(idx)), constant_values=-1)
            scores = np.pad(scores, (0, k - len(scores)), constant_values=-np.inf)
        return idx[None, :], scores[None, :]

    def recommend_idx(
        self, user_idx: np.ndarray, k: int = 10, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top k internal item indices per internal user index: ((B, k) int64, (B, k) float32).

        Slots the index could not fill (after removing seen items) hold -1 and -inf.
        Users are searched ``_USER_BATCH`` at a time (each batch over-fetches by its own
        largest seen count).
        """
        user_idx = np.asarray(user_idx, dtype=np.int64)
        if len(user_idx) == 1 and exclude_seen:
            return self._recommend_one(int(user_idx[0]), k)
        if len(user_idx) > _USER_BATCH:
            parts = [
                self.recommend_idx(user_idx[s : s + _USER_BATCH], k, exclude_seen)
                for s in range(0, len(user_idx), _USER_BATCH)
            ]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        k = min(int(k), self.model.n_items)
        seen = self.model.seen_[user_idx]
        n_seen = np.diff(seen.indptr)
        fetch = min(
            k + (int(n_seen.max()) if exclude_seen and len(n_seen) else 0), self.model.n_items
        )
        idx, scores = self.index.search(self.model.user_vectors(user_idx), fetch)  # (B, fetch)
        if exclude_seen:
            rows = np.repeat(np.arange(len(user_idx)), n_seen)
            width = self.model.n_items
            seen_keys = np.sort(rows.astype(np.int64) * width + seen.indices)
            keys = np.arange(len(user_idx), dtype=np.int64)[:, None] * width + np.maximum(idx, 0)
            pos = np.minimum(np.searchsorted(seen_keys, keys), max(len(seen_keys) - 1, 0))
            is_seen = (seen_keys[pos] == keys) if len(seen_keys) else np.zeros(idx.shape, bool)
            drop = is_seen | (idx < 0)
            # stable partition of each row: kept items first, in the index's order
            order = np.argsort(drop, axis=1, kind="stable")
            idx = np.take_along_axis(idx, order, axis=1)
            scores = np.take_along_axis(scores, order, axis=1)
            dropped = np.take_along_axis(drop, order, axis=1)
            idx = np.where(dropped, -1, idx)
            scores = np.where(dropped, -np.inf, scores).astype(np.float32)
        idx, scores = idx[:, :k], scores[:, :k]
        if idx.shape[1] < k:  # fewer vectors than k
            pad = k - idx.shape[1]
            idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return idx, scores

    def recommend(
        self, user_ids: Any, k: int = 10, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top k raw item ids per raw user id: (ids (n, k) object/int, scores (n, k) float32).

        Unfillable slots hold None and -inf. Unknown users raise ``UnknownIdError``.
        """
        from recforge.models.base import _as_list

        user_idx = self.model.user_vocab_.index(_as_list(user_ids))
        idx, scores = self.recommend_idx(user_idx, k=k, exclude_seen=exclude_seen)
        if (idx < 0).any():
            ids = np.empty(idx.shape, dtype=object)
            ok = idx >= 0
            ids[ok] = self.model.item_vocab_.ids(idx[ok])
            return ids, scores
        return self.model.item_vocab_.ids(idx), scores

    def save(self, path: str | Path) -> Path:
        """``path/model`` (the model directory) and ``path/index`` (the Faiss index), written
        together atomically; returns path."""
        path = Path(path)
        with atomic_dir(path, replaces=("model", "index")) as tmp:
            self.model.save(tmp / "model")
            self.index.save(tmp / "index")
        return path

    @classmethod
    def load(cls, path: str | Path) -> AnnRecommender:
        from recforge.models import load as load_model

        path = Path(path)
        return cls(load_model(path / "model"), index=AnnIndex.load(path / "index"))


# ---------------------------------------------------------------------------- benchmark
def exact_search(
    vectors: np.ndarray, queries: np.ndarray, k: int, metric: str = "ip"
) -> np.ndarray:
    """Ground-truth top-k row ids (n_queries, k) by a Flat index."""
    return build_index(vectors, kind="flat", metric=metric).search(queries, k)[0]


def recall_vs_exact(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top k that the approximate top k contains.

    found, exact: (n, k) row ids (-1 = empty slot).
    """
    n, k = exact.shape
    hits = 0
    for f, e in zip(found, exact):
        hits += len(np.intersect1d(f[f >= 0], e, assume_unique=False))
    return hits / float(n * k)


def ann_bench(
    vectors: np.ndarray,
    queries: np.ndarray,
    kinds: Any = KINDS,
    k: int = 10,
    *,
    metric: str = "ip",
    configs: dict[str, dict[str, Any]] | None = None,
    n_single: int = 200,
    batch_repeats: int = 1,
) -> pd.DataFrame:
    """Compare index kinds on ``vectors`` (n, d) with ``queries`` (q, d).

    kinds: index kinds, or labels mapped to IndexConfig fields through ``configs``
        (e.g. ``{"hnsw_ef64": {"kind": "hnsw", "ef_search": 64}}``).
    Returns one row per index: label, kind, params, build_s, recall@k (vs Flat), qps
    (batch search of all queries), p50_ms / p99_ms (``n_single`` one-query searches).
    """
    configs = configs or {}
    exact = None
    rows = []
    for label in kinds:
        cfg = {"kind": label, "metric": metric, **configs.get(label, {})}
        t0 = time.perf_counter()
        index = build_index(vectors, **cfg)
        build_s = time.perf_counter() - t0
        best = math.inf
        for _ in range(max(1, batch_repeats)):
            t0 = time.perf_counter()
            found, _ = index.search(queries, k)
            best = min(best, time.perf_counter() - t0)
        if exact is None:
            exact = found if cfg["kind"] == "flat" else exact_search(vectors, queries, k, metric)
        single = []
        for q in queries[: min(n_single, len(queries))]:
            t0 = time.perf_counter()
            index.search(q[None, :], k)
            single.append(time.perf_counter() - t0)
        single_ms = np.asarray(single) * 1e3
        params = {
            f: v
            for f, v in dataclasses.asdict(index.config).items()
            if f not in ("kind", "metric", "train_size", "seed")
        }
        shown = _relevant_params(index.config.kind, params)
        rows.append(
            {
                "index": label,
                "kind": index.config.kind,
                "params": shown,
                "build_s": build_s,
                f"recall@{k}": recall_vs_exact(found, exact),
                "qps": len(queries) / best,
                "p50_ms": float(np.percentile(single_ms, 50)),
                "p99_ms": float(np.percentile(single_ms, 99)),
            }
        )
        log.info("ann_bench %s: %s", label, {k_: v for k_, v in rows[-1].items() if k_ != "params"})
    return pd.DataFrame(rows)


def _relevant_params(kind: str, params: dict[str, Any]) -> str:
    keep = {
        "flat": (),
        "ivf_flat": ("nlist", "nprobe"),
        "ivf_pq": ("nlist", "nprobe", "m", "nbits", "refine"),
        "hnsw": ("hnsw_m", "ef_construction", "ef_search", "mips"),
    }[kind]
    return ", ".join(f"{p}={params[p]}" for p in keep)
