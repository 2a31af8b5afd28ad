"""Evaluation metrics as plain functions on NumPy arrays.

Classification (CTR) metrics take ``y_true`` (n,) of 0/1 labels and ``y_score`` (n,) of
scores or probabilities:

* ``auc``, ``gauc``, ``log_loss``, ``accuracy``, ``precision``, ``recall``, ``f1``,
  ``roc_curve``, ``pr_curve``, ``average_precision``.

Top-K (retrieval) metrics take ``ranked``, the recommended item ids best first, as an
(n_users, K') array or a list of lists (ragged lists allowed), ``relevant``, one
collection of relevant item ids per user, and a cutoff ``k``; they return the mean over
users, or the per-user vector with ``per_user=True``. Conventions:

* Users with no relevant items are left out of the mean (their per-user value is NaN).
* A recommended item counts as a hit when it is in the user's relevant set; lists are
  assumed to hold no duplicates. Slots holding ``None``, NaN or a negative integer in an
  integer array are empty (never a hit), so short lists can be padded.
* ``recall@k = hits / |rel|`` (the standard denominator; it cannot reach 1 when
  |rel| > k). ``precision@k = hits / k``, whatever the length of the list.
* ``ndcg@k`` uses binary gains, ``DCG = sum_j hit_j / log2(j + 1)`` over positions
  j = 1..k, divided by the ideal DCG of min(|rel|, k) hits at the top.
* ``map@k = (1 / min(|rel|, k)) * sum_j precision@j * hit_j``.
* ``mrr`` is 1 / (position of the first hit) within the cutoff, 0 without a hit.
* ``hit_rate@k`` is 1 if any of the top k is relevant.

Beyond accuracy: ``coverage`` (catalog coverage) and ``novelty`` (mean self-information).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from recforge.exceptions import ConfigError, DataError

__all__ = [
    "accuracy",
    "auc",
    "average_precision",
    "coverage",
    "f1",
    "gauc",
    "hit_matrix",
    "hit_rate_at_k",
    "log_loss",
    "map_at_k",
    "mrr",
    "ndcg_at_k",
    "novelty",
    "pr_curve",
    "precision",
    "precision_at_k",
    "rank_metrics_from_hits",
    "recall",
    "recall_at_k",
    "roc_curve",
]

# ---------------------------------------------------------------------- input checks


def _check_binary(
    y_true: Any, y_score: Any, name: str, score_name: str = "y_score"
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert a (labels, scores) pair; returns (y (n,) int8, s (n,) float64)."""
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise DataError(
            f"{name}: y_true and {score_name} must be 1-d, got shapes {y.shape} and {s.shape}."
        )
    if len(y) != len(s):
        raise DataError(
            f"{name}: length mismatch, y_true has {len(y)} values and {score_name} has {len(s)}."
        )
    if len(y) == 0:
        raise DataError(f"{name}: empty input; there is nothing to evaluate.")
    if y.dtype == bool:
        y = y.astype(np.int8)
    try:
        yf = y.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name}: y_true must hold 0/1 labels, got dtype {y.dtype}.") from None
    bad = (yf != 0) & (yf != 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{name}: y_true must hold 0/1 labels; position {i} holds {y[i]!r}. "
            f"Binarise the labels first (e.g. y = (rating >= 4))."
        )
    if not np.isfinite(s).all():
        i = int(np.flatnonzero(~np.isfinite(s))[0])
        raise DataError(f"{name}: {score_name} must be finite; position {i} holds {s[i]}.")
    return yf.astype(np.int8), s


def _check_both_classes(y: np.ndarray, name: str) -> None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise DataError(
            f"{name}: y_true holds only one class ({'1' if n_pos else '0'}); "
            f"{name} needs both positives and negatives."
        )


# ---------------------------------------------------------------------- ranking of scores


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks of ``s`` (n,), tied values sharing the mean of their ranks. O(n log n)."""
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # start of each run of equal values in sorted order
    new_run = np.r_[True, sorted_s[1:] != sorted_s[:-1]]
    run_id = np.cumsum(new_run) - 1
    starts = np.flatnonzero(new_run)
    ends = np.r_[starts[1:], len(s)]  # exclusive
    mean_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1..ends
    ranks = np.empty(len(s), dtype=np.float64)
    ranks[order] = mean_rank[run_id]
    return ranks


def auc(y_true: Any, y_score: Any) -> float:
    """Area under the ROC curve.

    The probability that a random positive scores above a random negative, ties counting
    one half (the Mann-Whitney U statistic over average ranks, as scikit-learn's
    ``roc_auc_score``). O(n log n). y_true (n,) 0/1, y_score (n,) float.
    """
    y, s = _check_binary(y_true, y_score, "auc")
    _check_both_classes(y, "auc")
    ranks = _average_ranks(s)
    n_pos = float(y.sum())
    n_neg = len(y) - n_pos
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def gauc(y_true: Any, y_score: Any, groups: Any) -> float:
    """Group AUC: the AUC of each group (user), averaged with weights = group size.

    ``gauc = sum_g n_g * auc_g / sum_g n_g`` over groups that hold both classes; groups
    with a single class are skipped. groups (n,) are any hashable ids. Vectorised: one
    lexsort over (group, score), ties within a group get average ranks as in ``auc``.
    """
    y, s = _check_binary(y_true, y_score, "gauc")
    g = np.asarray(groups)
    if g.ndim != 1 or len(g) != len(y):
        raise DataError(f"gauc: groups must be 1-d with {len(y)} values, got shape {g.shape}.")
    codes, _ = pd.factorize(g, use_na_sentinel=False)
    order = np.lexsort((s, codes))
    c, ss, yy = codes[order], s[order], y[order]
    n = len(c)
    group_start_mask = np.r_[True, c[1:] != c[:-1]]
    group_starts = np.flatnonzero(group_start_mask)
    group_of = np.cumsum(group_start_mask) - 1
    # runs of equal (group, score) share the mean of their within-group ranks
    run_start_mask = group_start_mask | np.r_[True, ss[1:] != ss[:-1]]
    run_starts = np.flatnonzero(run_start_mask)
    run_ends = np.r_[run_starts[1:], n]
    run_of = np.cumsum(run_start_mask) - 1
    offset = group_starts[group_of]  # position where the row's group begins
    mean_pos = (run_starts + 1 + run_ends) / 2.0  # mean of 1-based global positions
    ranks = mean_pos[run_of] - offset
    n_groups = len(group_starts)
    size = np.bincount(group_of, minlength=n_groups).astype(np.float64)
    n_pos = np.bincount(group_of, weights=yy, minlength=n_groups)
    rank_pos = np.bincount(group_of, weights=ranks * yy, minlength=n_groups)
    n_neg = size - n_pos
    ok = (n_pos > 0) & (n_neg > 0)
    if not ok.any():
        raise DataError(
            "gauc: no group holds both a positive and a negative label; gauc is undefined."
        )
    auc_g = (rank_pos[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2.0) / (n_pos[ok] * n_neg[ok])
    return float(np.sum(auc_g * size[ok]) / np.sum(size[ok]))


def log_loss(y_true: Any, y_prob: Any, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy ``-mean(y log p + (1 - y) log(1 - p))``.

    y_prob (n,) probabilities in [0, 1], clipped to [eps, 1 - eps] before the log.
    """
    y, p = _check_binary(y_true, y_prob, "log_loss", "y_prob")
    if (p < 0).any() or (p > 1).any():
        raise DataError("log_loss: y_prob must lie in [0, 1]; pass probabilities, not logits.")
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


# ---------------------------------------------------------------------- thresholded


def _confusion(y_true: Any, y_score: Any, threshold: float, name: str) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) with predictions ``y_score >= threshold``."""
    y, s = _check_binary(y_true, y_score, name)
    pred = s >= threshold
    pos = y == 1
    tp = int(np.sum(pred & pos))
    fp = int(np.sum(pred & ~pos))
    fn = int(np.sum(~pred & pos))
    return tp, fp, fn, len(y) - tp - fp - fn


def accuracy(y_true: Any, y_score: Any, threshold: float = 0.5) -> float:
    """Share of rows whose prediction ``y_score >= threshold`` equals the label."""
    tp, fp, fn, tn = _confusion(y_true, y_score, threshold, "accuracy")
    return (tp + tn) / (tp + fp + fn + tn)


def precision(y_true: Any, y_score: Any, threshold: float = 0.5) -> float:
    """tp / (tp + fp) with predictions ``y_score >= threshold``; 0.0 when nothing is predicted positive."""
    tp, fp, _, _ = _confusion(y_true, y_score, threshold, "precision")
    return tp / (tp + fp) if tp + fp else 0.0


def recall(y_true: Any, y_score: Any, threshold: float = 0.5) -> float:
    """tp / (tp + fn) with predictions ``y_score >= threshold``; 0.0 when there are no positives."""
    tp, _, fn, _ = _confusion(y_true, y_score, threshold, "recall")
    return tp / (tp + fn) if tp + fn else 0.0


def f1(y_true: Any, y_score: Any, threshold: float = 0.5) -> float:
    """Harmonic mean of precision and recall, ``2 tp / (2 tp + fp + fn)``; 0.0 when undefined."""
    tp, fp, fn, _ = _confusion(y_true, y_score, threshold, "f1")
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


# ---------------------------------------------------------------------- curves


def _cumulative_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At each distinct threshold, descending: (fps, tps, thresholds), predicting s >= t."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order].astype(np.float64)
    last_of_run = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    idx = np.flatnonzero(last_of_run)
    tps = np.cumsum(y_sorted)[idx]
    fps = idx + 1 - tps
    return fps, tps, s_sorted[idx]


def roc_curve(
    y_true: Any, y_score: Any, drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve: (fpr, tpr, thresholds), each (m,).

    Point j predicts positive when ``y_score >= thresholds[j]``; thresholds decrease and
    start at +inf (the (0, 0) point). ``drop_intermediate`` removes points that lie on a
    straight segment between their neighbours (they do not change the curve), as
    scikit-learn does by default.
    """
    y, s = _check_binary(y_true, y_score, "roc_curve")
    _check_both_classes(y, "roc_curve")
    fps, tps, thr = _cumulative_counts(y, s)
    if drop_intermediate and len(fps) > 2:
        bend = np.r_[True, (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0), True]
        fps, tps, thr = fps[bend], tps[bend], thr[bend]
    fps, tps, thr = np.r_[0.0, fps], np.r_[0.0, tps], np.r_[np.inf, thr]
    return fps / fps[-1], tps / tps[-1], thr


def pr_curve(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The precision-recall curve: (precision (m+1,), recall (m+1,), thresholds (m,)).

    Thresholds are the distinct scores, increasing; point j predicts ``y_score >=
    thresholds[j]``. A last point (precision 1, recall 0) without a threshold closes the
    curve (scikit-learn's ``precision_recall_curve`` layout).
    """
    y, s = _check_binary(y_true, y_score, "pr_curve")
    if y.sum() == 0:
        raise DataError("pr_curve: y_true holds no positive; recall is undefined.")
    fps, tps, thr = _cumulative_counts(y, s)
    prec = tps / (tps + fps)
    rec = tps / tps[-1]
    return np.r_[prec[::-1], 1.0], np.r_[rec[::-1], 0.0], thr[::-1]


def average_precision(y_true: Any, y_score: Any) -> float:
    """Average precision: ``sum_j (R_j - R_{j-1}) P_j`` over thresholds, without
    interpolation (the step area under the PR curve, as scikit-learn's
    ``average_precision_score``)."""
    prec, rec, _ = pr_curve(y_true, y_score)
    return float(-np.sum(np.diff(rec) * prec[:-1]))


# ---------------------------------------------------------------------- top-K


def _check_k(k: Any, name: str) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"{name}: k must be a positive integer, got {k!r}.")
    return int(k)


def _is_empty_slot(x: Any) -> bool:
    if x is None:
        return True
    if isinstance(x, float | np.floating):
        return bool(np.isnan(x))
    return False


def hit_matrix(
    ranked: np.ndarray | Sequence[Sequence[Any]],
    relevant: Sequence[Iterable[Any]],
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Which of each user's top k are relevant.

    ranked: (n_users, K') item ids best first, or a list of n_users lists (ragged allowed).
        Empty slots: None/NaN, or -1 in a signed integer array (as ANN results use).
    relevant: n_users collections of relevant item ids.
    Returns (hits (n_users, k) bool, n_relevant (n_users,) int64). Positions past the end
    of a short list are misses. Any integer ids work (large, negative, unsigned): integer
    input is factorized to dense codes before (user, item) pairs are matched.
    """
    k = _check_k(k, "hit_matrix")
    n = len(ranked)
    if n != len(relevant):
        raise DataError(f"length mismatch: ranked has {n} users and relevant has {len(relevant)}.")
    if n == 0:
        raise DataError("empty input: ranked and relevant hold no user.")
    rel_sets = [
        r if isinstance(r, set | frozenset) else set(np.asarray(list(r)).tolist()) for r in relevant
    ]
    n_rel = np.fromiter((len(r) for r in rel_sets), dtype=np.int64, count=n)
    hits = np.zeros((n, k), dtype=bool)
    arr = ranked if isinstance(ranked, np.ndarray) else None
    if (
        arr is not None
        and arr.ndim == 2
        and np.issubdtype(arr.dtype, np.integer)
        and _all_int_sets(rel_sets)
    ):
        top = arr[:, :k]
        hits[:, : top.shape[1]] = _int_hits(top, rel_sets)
        return hits, n_rel
    for u in range(n):
        row = ranked[u]
        rel = rel_sets[u]
        for j, item in enumerate(list(row)[:k]):
            if isinstance(item, np.generic):
                item = item.item()
            if not _is_empty_slot(item) and item in rel:
                hits[u, j] = True
    return hits, n_rel


def _int_hits(top: np.ndarray, rel_sets: list[set]) -> np.ndarray:
    """hits (n, w) of an integer id matrix: both sides factorized to codes 0..c-1 (exactly,
    in ``top``'s dtype; relevant ids outside that dtype's range can never be ranked), so the
    pair key ``user * c + code`` fits int64 however large or negative the raw ids are."""
    n = top.shape[0]
    info = np.iinfo(top.dtype)
    users, items = [], []
    for u, r in enumerate(rel_sets):
        for i in r:
            i = int(i)
            if info.min <= i <= info.max:
                users.append(u)
                items.append(i)
    rel_items = np.array(items, dtype=top.dtype)
    rel_users = np.array(users, dtype=np.int64)
    valid = top != -1 if info.min < 0 else np.ones(top.shape, dtype=bool)  # -1: empty slot
    ranked_items = top[valid]
    codes = np.unique(np.concatenate([ranked_items, rel_items]), return_inverse=True)[1]
    c = int(codes.max(initial=0)) + 1
    rows = np.broadcast_to(np.arange(n, dtype=np.int64)[:, None], top.shape)[valid]
    keys = rows * c + codes[: len(ranked_items)]
    rel_keys = rel_users * c + codes[len(ranked_items) :]
    out = np.zeros(top.shape, dtype=bool)
    out[valid] = np.isin(keys, rel_keys)
    return out


def _all_int_sets(sets: list[set]) -> bool:
    return all(isinstance(x, int | np.integer) and not isinstance(x, bool) for r in sets for x in r)


_RANK_METRICS = ("recall", "precision", "hit_rate", "ndcg", "mrr", "map")


def rank_metrics_from_hits(
    hits: np.ndarray, n_relevant: np.ndarray, k: int, names: Iterable[str] = _RANK_METRICS
) -> dict[str, np.ndarray]:
    """Per-user top-k metrics from a hit matrix.

    hits: (n_users, >= k) bool, column j = position j + 1; n_relevant: (n_users,) int.
    Returns {name: (n_users,) float64}, NaN where a user has no relevant item.
    names: any of "recall", "precision", "hit_rate", "ndcg", "mrr", "map".
    """
    k = _check_k(k, "rank_metrics_from_hits")
    h = np.zeros((hits.shape[0], k), dtype=np.float64)
    w = min(k, hits.shape[1])
    h[:, :w] = hits[:, :w]
    n_rel = np.asarray(n_relevant, dtype=np.float64)
    valid = n_rel > 0
    safe_rel = np.where(valid, n_rel, 1.0)
    n_hits = h.sum(axis=1)
    pos = np.arange(1, k + 1, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name == "recall":
            v = n_hits / safe_rel
        elif name == "precision":
            v = n_hits / k
        elif name == "hit_rate":
            v = (n_hits > 0).astype(np.float64)
        elif name == "ndcg":
            disc = 1.0 / np.log2(pos + 1.0)
            ideal = np.cumsum(disc)[np.minimum(safe_rel, k).astype(np.int64) - 1]
            v = (h @ disc) / ideal
        elif name == "mrr":
            first = np.argmax(h > 0, axis=1)
            v = np.where(n_hits > 0, 1.0 / (first + 1.0), 0.0)
        elif name == "map":
            prec_at = np.cumsum(h, axis=1) / pos
            v = (prec_at * h).sum(axis=1) / np.minimum(safe_rel, k)
        else:
            raise ConfigError(
                f"unknown ranking metric {name!r}; choose from {', '.join(_RANK_METRICS)}."
            )
        out[name] = np.where(valid, v, np.nan)
    return out


def _topk_metric(
    name: str, ranked: Any, relevant: Any, k: int, per_user: bool
) -> float | np.ndarray:
    hits, n_rel = hit_matrix(ranked, relevant, k)
    v = rank_metrics_from_hits(hits, n_rel, k, (name,))[name]
    if per_user:
        return v
    if not (n_rel > 0).any():
        raise DataError(f"{name}: no user has a relevant item; the metric is undefined.")
    return float(np.nanmean(v))


def recall_at_k(ranked: Any, relevant: Any, k: int, per_user: bool = False) -> float | np.ndarray:
    """Recall@k = |top k ∩ rel| / |rel|, averaged over users with relevant items."""
    return _topk_metric("recall", ranked, relevant, k, per_user)


def precision_at_k(
    ranked: Any, relevant: Any, k: int, per_user: bool = False
) -> float | np.ndarray:
    """Precision@k = |top k ∩ rel| / k, averaged over users with relevant items."""
    return _topk_metric("precision", ranked, relevant, k, per_user)


def hit_rate_at_k(ranked: Any, relevant: Any, k: int, per_user: bool = False) -> float | np.ndarray:
    """HitRate@k = 1 if any of the top k is relevant, averaged over users with relevant items."""
    return _topk_metric("hit_rate", ranked, relevant, k, per_user)


def ndcg_at_k(ranked: Any, relevant: Any, k: int, per_user: bool = False) -> float | np.ndarray:
    """NDCG@k with binary gains: ``sum_j hit_j / log2(j + 1)`` over the top k, divided by
    the ideal DCG ``sum_{j <= min(|rel|, k)} 1 / log2(j + 1)``."""
    return _topk_metric("ndcg", ranked, relevant, k, per_user)


def mrr(
    ranked: Any, relevant: Any, k: int | None = None, per_user: bool = False
) -> float | np.ndarray:
    """Mean reciprocal rank: 1 / position of the first relevant item within the top k
    (the whole list when k is None), 0 when none is found."""
    if k is None:
        k = max((len(r) for r in ranked), default=1) or 1
    return _topk_metric("mrr", ranked, relevant, k, per_user)


def map_at_k(ranked: Any, relevant: Any, k: int, per_user: bool = False) -> float | np.ndarray:
    """MAP@k: ``(1 / min(|rel|, k)) * sum_{j <= k} precision@j * hit_j``, averaged over users."""
    return _topk_metric("map", ranked, relevant, k, per_user)


# ---------------------------------------------------------------------- beyond accuracy


def _flat_items(ranked: Any, k: int | None) -> list[Any]:
    if isinstance(ranked, np.ndarray) and ranked.ndim == 2:
        top = ranked if k is None else ranked[:, :k]
        flat = top.ravel()
        if np.issubdtype(flat.dtype, np.integer):
            return flat[flat >= 0].tolist()
        return [x for x in flat.tolist() if not _is_empty_slot(x)]
    out = []
    for row in ranked:
        row = list(row) if k is None else list(row)[:k]
        out.extend(
            x.item() if isinstance(x, np.generic) else x for x in row if not _is_empty_slot(x)
        )
    return out


def coverage(ranked: Any, n_items: int, k: int | None = None) -> float:
    """Catalog coverage: distinct items recommended in anyone's top k / n_items."""
    if n_items < 1:
        raise DataError(f"coverage: n_items must be positive, got {n_items}.")
    if len(ranked) == 0:
        raise DataError("coverage: ranked holds no user.")
    return len(set(_flat_items(ranked, k))) / n_items


def novelty(
    ranked: Any, item_popularity: Mapping[Any, float] | np.ndarray, k: int | None = None
) -> float:
    """Mean self-information of recommended items, ``mean(-log2 p(i))``.

    item_popularity: interaction counts, a mapping item id -> count or an array indexed by
    (integer) item id. ``p(i) = count(i) / sum(counts)``; items with count 0 or absent get
    a count of 1 so that an item never seen in training is very novel but finite.
    Averaged over every recommended (user, position) slot in the top k.
    """
    items = _flat_items(ranked, k)
    if not items:
        raise DataError("novelty: ranked holds no recommended item.")
    if isinstance(item_popularity, Mapping):
        total = float(sum(item_popularity.values()))
        counts = np.array([float(item_popularity.get(i, 0.0)) for i in items])
    else:
        pop = np.asarray(item_popularity, dtype=np.float64)
        total = float(pop.sum())
        idx = np.asarray(items, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(pop)):
            raise DataError(
                f"novelty: item ids must index item_popularity (length {len(pop)}); got id {idx.max()}."
            )
        counts = pop[idx]
    if total <= 0:
        raise DataError("novelty: item_popularity sums to 0.")
    p = np.maximum(counts, 1.0) / max(total, 1.0)
    return float(np.mean(-np.log2(np.minimum(p, 1.0))))
