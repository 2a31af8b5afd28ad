"""Neighbourhood collaborative filtering: ItemCF, UserCF, and exact dense k-NN search.

ItemCF and UserCF keep a sparse similarity matrix with the ``k`` strongest neighbours of
each row, computed by ``topk_similarity`` in blocks of rows so that memory stays bounded
(about ``_BLOCK_BUDGET`` nonzeros per block) however many items there are.

Similarities between two columns ``i`` and ``j`` of a matrix ``X`` (n_obs, n_entities),
with ``C_ij = sum_o w_o x_oi x_oj`` (``w_o`` = 1, or the IUF/IIF weight of observation o):

=====================  =================================================================
``cosine``             ``C_ij / (||x_i|| ||x_j|| + shrink)``
``jaccard``            ``C_ij / (n_i + n_j - C_ij + shrink)`` on the binarised matrix,
                       ``n_i = sum_o w_o [x_oi > 0]`` (weighted Jaccard when w != 1)
``asymmetric_cosine``  ``C_ij / (||x_i||^(2 alpha) ||x_j||^(2 (1 - alpha)) + shrink)``
                       (Aiolli 2013); row ``i`` is the source, ``j`` the candidate;
                       ``alpha = 0.5`` is cosine
=====================  =================================================================

Norms are never weighted: with ``iuf=True`` only the co-occurrence ``C_ij`` is, which is
ItemCF-IUF as in Breese et al. (1998) and Xiang Liang, *Recommender System Practice* (2012).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recforge.artifacts import pack_sparse, unpack_sparse
from recforge.config import suggest
from recforge.data.interactions import Interactions
from recforge.exceptions import ConfigError, DataError
from recforge.models.base import RetrievalModel
from recforge.models.registry import register
from recforge.topk import topk

log = logging.getLogger(__name__)

SIMILARITIES = ("cosine", "jaccard", "asymmetric_cosine")
METRICS = ("euclidean", "manhattan", "cosine", "dot")
_BLOCK_BUDGET = 1 << 24  # dense-equivalent cells per block: rows_in_block * n_entities


# ---------------------------------------------------------------------------- checks
def _check_choice(owner: str, field: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(
            f"{owner}: unknown {field} {value!r}{suggest(str(value), list(valid))}. "
            f"Valid: {', '.join(valid)}."
        )


def _check_knn_params(owner: str, *, similarity: str, k: int, shrink: float, alpha: float) -> None:
    _check_choice(owner, "similarity", similarity, SIMILARITIES)
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
        raise ConfigError(
            f"{owner}: k (neighbours kept per row) must be an integer >= 1, got {k!r}."
        )
    if not isinstance(shrink, int | float) or shrink < 0:
        raise ConfigError(f"{owner}: shrink must be a number >= 0, got {shrink!r}.")
    if not isinstance(alpha, int | float) or not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"{owner}: alpha must lie in [0, 1], got {alpha!r}.")


def log_count_weights(counts: np.ndarray) -> np.ndarray:
    """Inverse frequency weights ``1 / log(1 + count)`` (count 0 -> weight 0). (n,) float64."""
    counts = np.asarray(counts, dtype=np.float64)
    out = np.zeros_like(counts)
    pos = counts > 0
    out[pos] = 1.0 / np.log1p(counts[pos])
    return out


# ---------------------------------------------------------------------------- similarity
def _prune_rows(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the k largest entries of each CSR row (ties: lower column first)."""
    counts = np.diff(m.indptr)
    if counts.size == 0 or counts.max() <= k:
        return m
    rows = np.repeat(np.arange(m.shape[0]), counts)
    order = np.lexsort((m.indices, -m.data, rows))  # by row, then value desc, then column
    rank = np.arange(order.size) - m.indptr[rows[order]]
    keep = np.sort(order[rank < k])
    return sp.csr_matrix((m.data[keep], (rows[keep], m.indices[keep])), shape=m.shape)


def _prune_rows_dense(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """``_prune_rows`` through a dense (rows, cols) array; the same result, for fuller blocks."""
    idx, vals = topk(m.toarray(), k)  # (b, k') each, ties: lower column first
    rows = np.broadcast_to(np.arange(m.shape[0])[:, None], idx.shape)
    keep = vals > 0
    return sp.csr_matrix((vals[keep], (rows[keep], idx[keep])), shape=m.shape)


def topk_similarity(
    x: sp.spmatrix,
    *,
    similarity: str = "cosine",
    k: int = 100,
    shrink: float = 0.0,
    alpha: float = 0.5,
    obs_weights: np.ndarray | None = None,
    block_rows: int | None = None,
) -> sp.csr_matrix:
    """Similarity between the columns of ``x``, pruned to the k largest per row.

    x: (n_obs, n_ent) sparse, e.g. the user-item matrix for item-item similarity.
    obs_weights: (n_obs,) weight of each observation in the co-occurrence (IUF); norms
        stay unweighted (see the module docstring for the formulas).
    block_rows: rows of the result computed per sparse product; default keeps
        ``block_rows * n_ent`` under ``_BLOCK_BUDGET``.
    Returns S (n_ent, n_ent) float32 CSR with at most k entries per row, zero diagonal,
    only positive similarities stored. ``S[i, j]`` is how much item i votes for item j.
    """
    _check_knn_params("topk_similarity", similarity=similarity, k=k, shrink=shrink, alpha=alpha)
    x = sp.csr_matrix(x, dtype=np.float64)
    if similarity == "jaccard":
        x = x.copy()
        x.data[:] = 1.0
    n_obs, n_ent = x.shape
    w = np.ones(n_obs) if obs_weights is None else np.asarray(obs_weights, dtype=np.float64)
    if w.shape != (n_obs,):
        raise DataError(f"obs_weights has shape {w.shape}, expected ({n_obs},).")
    xw_t = sp.csr_matrix(x.multiply(w[:, None]).T)  # (n_ent, n_obs)
    sq = np.asarray(x.multiply(x).sum(axis=0)).ravel()  # (n_ent,) squared norms
    counts = np.asarray(x.multiply(w[:, None]).sum(axis=0)).ravel()  # weighted counts (jaccard)
    if block_rows is None:
        block_rows = max(1, _BLOCK_BUDGET // max(n_ent, 1))
    blocks = []
    for start in range(0, n_ent, block_rows):
        stop = min(start + block_rows, n_ent)
        c = sp.csr_matrix(xw_t[start:stop] @ x)  # (b, n_ent) co-occurrence
        rows = np.repeat(np.arange(start, stop), np.diff(c.indptr))
        cols = c.indices
        if similarity == "cosine":
            denom = np.sqrt(sq[rows] * sq[cols])
        elif similarity == "asymmetric_cosine":
            denom = np.power(sq[rows], alpha) * np.power(sq[cols], 1.0 - alpha)
        else:  # jaccard
            denom = counts[rows] + counts[cols] - c.data
        denom = denom + shrink
        with np.errstate(divide="ignore", invalid="ignore"):
            vals = np.where(denom > 0, c.data / np.where(denom > 0, denom, 1.0), 0.0)
        keep = (rows != cols) & (vals > 0)
        block = sp.csr_matrix(
            (vals[keep], (rows[keep] - start, cols[keep])), shape=(stop - start, n_ent)
        )
        # dense selection is much faster once the block is more than ~1/8 full
        dense = block.nnz * 8 >= block.shape[0] * n_ent
        blocks.append(_prune_rows_dense(block, k) if dense else _prune_rows(block, k))
    if not blocks:
        return sp.csr_matrix((n_ent, n_ent), dtype=np.float32)
    out = sp.vstack(blocks, format="csr").astype(np.float32)
    out.sort_indices()
    return out


def _normalize_rows_max(s: sp.csr_matrix) -> sp.csr_matrix:
    """Divide each row by its largest entry (ItemCF-Norm); empty rows stay empty."""
    s = s.copy()
    counts = np.diff(s.indptr)
    if s.nnz == 0:
        return s
    row_max = np.zeros(s.shape[0], dtype=np.float32)
    nz = counts > 0
    row_max[nz] = np.maximum.reduceat(s.data, s.indptr[:-1][nz])
    s.data /= np.repeat(np.where(row_max > 0, row_max, 1.0), counts)
    return s


def _sparse_row_topk(
    s: sp.csr_matrix, row_idx: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top k columns of the given rows of a square sparse matrix, the row's own index excluded."""
    row_idx = np.asarray(row_idx, dtype=np.int64)
    dense = s[row_idx].toarray()
    dense[np.arange(len(row_idx)), row_idx] = -np.inf
    return topk(dense, k)


# ---------------------------------------------------------------------------- ItemCF
@register("itemcf")
class ItemCF(RetrievalModel):
    """Item-based collaborative filtering over a sparse top-k item-item similarity.

    ``score(u, j) = sum_i x_ui S[i, j]``: each item in the user's history votes for its
    k nearest items. Similarity formulas are in the module docstring.

    Parameters
    ----------
    similarity: "cosine" | "jaccard" | "asymmetric_cosine".
    k: neighbours kept per item (row of S).
    shrink: added to every denominator; damps similarities resting on few common users.
    alpha: exponent of asymmetric_cosine (0.5 = cosine; larger penalises popular sources).
    iuf: inverse user frequency; a user with ``|I_u|`` items contributes
        ``1 / log(1 + |I_u|)`` instead of 1 to each co-occurrence (ItemCF-IUF).
    normalize: divide each row of S by its maximum (ItemCF-Norm).
    weight_col: interaction column (e.g. "weight", "rating") used as matrix values for
        cosine similarities and for scoring; None uses 1 per seen pair.

    Defaults (cosine, k=100, shrink=10, iuf=True) were chosen on validation splits of
    ML-100K and ML-latest-small (``benchmarks.recall_defaults``; docs/BENCHMARKS.md,
    "Defaults across dataset sizes"): IUF with shrink 10 gave +8% and +20% Recall@20 over
    plain cosine there; asymmetric cosine (alpha 0.7) and k=200 did not do better.
    """

    smoke_params: ClassVar[dict[str, Any]] = {"k": 10}
    _fitted_attr = "similarity_"
    supports_history = True

    def __init__(
        self,
        *,
        similarity: str = "cosine",
        k: int = 100,
        shrink: float = 10.0,
        alpha: float = 0.5,
        iuf: bool = True,
        normalize: bool = False,
        weight_col: str | None = None,
    ) -> None:
        self.similarity = similarity
        self.k = k
        self.shrink = shrink
        self.alpha = alpha
        self.iuf = iuf
        self.normalize = normalize
        self.weight_col = weight_col

    def _fit(self, interactions: Interactions) -> None:
        name = type(self).__name__
        _check_knn_params(
            name, similarity=self.similarity, k=self.k, shrink=self.shrink, alpha=self.alpha
        )
        x = self.seen_
        if self.weight_col is not None:
            x = interactions.to_csr(self.user_vocab_, self.item_vocab_, value=self.weight_col)
        weights = log_count_weights(np.diff(self.seen_.indptr)) if self.iuf else None
        s = topk_similarity(
            x,
            similarity=self.similarity,
            k=self.k,
            shrink=self.shrink,
            alpha=self.alpha,
            obs_weights=weights,
        )
        if self.normalize:
            s = _normalize_rows_max(s)
        self.user_items_ = x.astype(np.float32)
        self.similarity_ = s
        log.info(
            "%s: %d items, %.1f neighbours per item on average",
            name,
            s.shape[0],
            s.nnz / max(s.shape[0], 1),
        )

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """(len(user_idx), n_items) float32: history rows times the similarity matrix."""
        self._check_fitted("score_users")
        rows = self.user_items_[np.asarray(user_idx, dtype=np.int64)]
        return np.asarray((rows @ self.similarity_).toarray(), dtype=np.float32)

    def score_history(self, item_idx: np.ndarray) -> np.ndarray:
        """(n_items,) float32: each distinct history item votes for its neighbours (weight 1)."""
        self._check_fitted("score_history")
        rows = self.similarity_[np.unique(np.asarray(item_idx, dtype=np.int64))]
        return np.asarray(rows.sum(axis=0), dtype=np.float32).ravel()

    def similar_items_idx(self, item_idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most similar items by row of S (only the kept neighbours score above 0)."""
        self._check_fitted("similar_items")
        return _sparse_row_topk(self.similarity_, item_idx, k)

    def _save_state(self):
        arrays, state = super()._save_state()
        arrays.update(pack_sparse("similarity", self.similarity_))
        if self.weight_col is not None:
            arrays.update(pack_sparse("user_items", self.user_items_))
        return arrays, state

    def _load_state(self, arrays, state):
        super()._load_state(arrays, state)
        self.similarity_ = unpack_sparse("similarity", arrays)
        self.user_items_ = (
            unpack_sparse("user_items", arrays) if self.weight_col is not None else self.seen_
        )


# ---------------------------------------------------------------------------- UserCF
@register("usercf")
class UserCF(RetrievalModel):
    """User-based collaborative filtering over a sparse top-k user-user similarity.

    ``score(u, j) = sum_v S[u, v] x_vj`` over the k nearest users v of u.

    ``similar_items`` has no user-neighbourhood meaning; it returns the items with the
    highest plain item-item cosine (co-occurrence over users), computed on demand from the
    training matrix, so UserCF can still answer "more like this".

    Parameters
    ----------
    similarity: "cosine" | "jaccard" | "asymmetric_cosine" (between users).
    k: neighbours kept per user.
    shrink: added to every denominator.
    alpha: exponent of asymmetric_cosine (row u is the user being scored).
    iif: inverse item frequency; an item seen by ``|U_i|`` users contributes
        ``1 / log(1 + |U_i|)`` to the co-occurrence of two users (UserCF-IIF), so sharing a
        blockbuster says less than sharing a niche item.
    """

    smoke_params: ClassVar[dict[str, Any]] = {"k": 10}
    _fitted_attr = "similarity_"

    def __init__(
        self,
        *,
        similarity: str = "cosine",
        k: int = 50,
        shrink: float = 0.0,
        alpha: float = 0.5,
        iif: bool = False,
    ) -> None:
        self.similarity = similarity
        self.k = k
        self.shrink = shrink
        self.alpha = alpha
        self.iif = iif

    def _fit(self, interactions: Interactions) -> None:
        name = type(self).__name__
        _check_knn_params(
            name, similarity=self.similarity, k=self.k, shrink=self.shrink, alpha=self.alpha
        )
        item_users = sp.csr_matrix(self.seen_.T)  # (n_items, n_users)
        weights = log_count_weights(np.diff(item_users.indptr)) if self.iif else None
        self.similarity_ = topk_similarity(
            item_users,
            similarity=self.similarity,
            k=self.k,
            shrink=self.shrink,
            alpha=self.alpha,
            obs_weights=weights,
        )

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """(len(user_idx), n_items) float32: neighbour similarities times their histories."""
        self._check_fitted("score_users")
        rows = self.similarity_[np.asarray(user_idx, dtype=np.int64)]
        return np.asarray((rows @ self.seen_).toarray(), dtype=np.float32)

    def similar_items_idx(self, item_idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Items by plain cosine of their user columns, computed for the asked items only."""
        self._check_fitted("similar_items")
        item_idx = np.asarray(item_idx, dtype=np.int64)
        x = self.seen_
        co = np.asarray((sp.csr_matrix(x[:, item_idx].T) @ x).toarray(), dtype=np.float64)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
        denom = norms[item_idx, None] * norms[None, :]
        sims = np.divide(co, denom, out=np.zeros_like(co), where=denom > 0)
        sims[np.arange(len(item_idx)), item_idx] = -np.inf
        return topk(sims, k)

    def _save_state(self):
        arrays, state = super()._save_state()
        arrays.update(pack_sparse("similarity", self.similarity_))
        return arrays, state

    def _load_state(self, arrays, state):
        super()._load_state(arrays, state)
        self.similarity_ = unpack_sparse("similarity", arrays)


# ---------------------------------------------------------------------------- dense k-NN
def knn_search(
    queries: np.ndarray,
    vectors: np.ndarray,
    k: int,
    *,
    metric: str = "euclidean",
    exclude: np.ndarray | None = None,
    batch_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of each query among ``vectors``, batched in NumPy.

    queries: (Q, d); vectors: (N, d).
    metric: "euclidean" / "manhattan" return distances, ascending; "cosine" / "dot" return
        similarities, descending (cosine distance, as scikit-learn reports it, is 1 - value).
    exclude: (Q,) index into ``vectors`` to leave out per query (e.g. the query item
        itself when searching an item against all items); -1 leaves nothing out.
    Returns (idx (Q, k') int64, values (Q, k') float32), k' = min(k, N) (min(k, N - 1) when
    ``exclude`` leaves a row out, so that it never fills the last slot), best first; ties
    go to the lower index.
    """
    _check_choice("knn_search", "metric", metric, METRICS)
    q = np.asarray(queries, dtype=np.float64)
    v = np.asarray(vectors, dtype=np.float64)
    if q.ndim != 2 or v.ndim != 2 or q.shape[1] != v.shape[1]:
        raise DataError(
            f"knn_search: queries {q.shape} and vectors {v.shape} must be 2-D with equal width."
        )
    if not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"knn_search: k must be a positive integer, got {k!r}.")
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=np.int64)
        if exclude.shape != (len(q),):
            raise DataError(f"knn_search: exclude has shape {exclude.shape}, expected ({len(q)},).")
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    v_sq = (v * v).sum(axis=1)
    # at most ~budget cells of (batch, N) scores at a time
    batch_size = max(1, min(batch_size, _BLOCK_BUDGET // max(len(v), 1)))
    k_out = min(k, len(v) - (1 if exclude is not None and (exclude >= 0).any() else 0))
    out_idx = np.empty((len(q), k_out), dtype=np.int64)
    out_val = np.empty((len(q), k_out), dtype=np.float32)
    for start in range(0, len(q), batch_size):
        qb = q[start : start + batch_size]  # (B, d)
        if metric in ("cosine", "dot"):
            score = qb @ v.T  # (B, N), larger is better
        elif metric == "euclidean":
            d2 = (qb * qb).sum(axis=1)[:, None] - 2.0 * (qb @ v.T) + v_sq[None, :]
            score = -np.sqrt(np.maximum(d2, 0.0))
        else:  # manhattan, one feature at a time so memory stays (B, N)
            score = np.zeros((len(qb), len(v)))
            for f in range(v.shape[1]):
                score -= np.abs(qb[:, f, None] - v[None, :, f])
        if exclude is not None:
            ex = exclude[start : start + len(qb)]
            rows = np.flatnonzero(ex >= 0)
            score[rows, ex[rows]] = -np.inf
        idx, val = topk(score, k_out)
        out_idx[start : start + len(qb)] = idx
        out_val[start : start + len(qb)] = -val if metric in ("euclidean", "manhattan") else val
    return out_idx, out_val
