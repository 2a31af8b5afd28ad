"""Evaluation protocols over fitted models.

* ``full_ranking``: every test user's top k over the whole catalogue (the honest protocol
  for recall models), batched over users so that the dense (batch, n_items) score block
  stays within ``recforge.topk.SCORE_MEMORY_BUDGET`` (512 MiB by default, set
  ``RECFORGE_SCORE_MEMORY_MB`` to change it): 44 users per batch at 1M items, 894 at 50k,
  1,024 (the ``batch_size`` cap) below 43k.
* ``sampled_ranking``: each test (user, item) ranked against ``n_negatives`` sampled items
  (the NCF-style protocol; cheaper, optimistic, comparable only at equal n_negatives).
* ``evaluate_ranker`` / ``evaluate_scores``: AUC, GAUC, log loss and thresholded metrics
  for click-probability models.

All metric definitions live in ``recforge.metrics``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recforge import metrics as M
from recforge.data.interactions import Interactions
from recforge.exceptions import ConfigError, DataError
from recforge.topk import rows_per_batch

log = logging.getLogger(__name__)

RANKING_METRICS = ("recall", "ndcg", "precision", "hit_rate", "mrr", "map")
BEYOND_ACCURACY = ("coverage", "novelty")

__all__ = ["evaluate_ranker", "evaluate_scores", "full_ranking", "sampled_ranking"]


# ---------------------------------------------------------------------- helpers


def _as_ks(k: int | Iterable[int]) -> tuple[int, ...]:
    ks = (k,) if isinstance(k, int | np.integer) else tuple(k)
    if not ks or any(
        isinstance(x, bool) or not isinstance(x, int | np.integer) or x < 1 for x in ks
    ):
        raise ConfigError(f"k must be a positive integer or a sequence of them, got {k!r}.")
    return tuple(sorted({int(x) for x in ks}))


def _check_retrieval(model: Any, where: str) -> None:
    for attr in ("recommend_idx", "score_users"):
        if not hasattr(model, attr):
            raise ConfigError(
                f"{where}: {type(model).__name__} is not a retrieval model (no {attr})."
            )
    if hasattr(model, "_check_fitted"):
        model._check_fitted(where)


def _check_interactions(test: Any, where: str) -> None:
    if not isinstance(test, Interactions):
        raise DataError(
            f"{where} expects the test set as an Interactions, got {type(test).__name__}; "
            f"wrap a DataFrame with Interactions.from_frame(df, user_col=..., item_col=...)."
        )
    if len(test) == 0:
        raise DataError(f"{where}: the test set {test.name!r} is empty.")


def _lookup(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Boolean array: which of ``keys`` are in the sorted 1-d array ``sorted_keys``."""
    if len(sorted_keys) == 0:
        return np.zeros(keys.shape, dtype=bool)
    pos = np.searchsorted(sorted_keys, keys)
    return sorted_keys[np.minimum(pos, len(sorted_keys) - 1)] == keys


def _csr_keys(m: sp.csr_matrix, n_cols: int) -> np.ndarray:
    """Sorted int64 keys row * n_cols + col of a CSR matrix's stored entries."""
    m = sp.csr_matrix(m, copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    return rows * n_cols + m.indices.astype(np.int64)  # CSR with sorted indices: already sorted


# ---------------------------------------------------------------------- full ranking


def full_ranking(
    model: Any,
    test: Interactions,
    *,
    k: int | Sequence[int] = (10, 20),
    metrics: Sequence[str] = RANKING_METRICS,
    batch_size: int = 1024,
    exclude_seen: bool = True,
    train: Interactions | None = None,
) -> dict[str, float]:
    """Rank the whole catalogue for each test user and score the top k.

    model: a fitted retrieval model (``recommend_idx``, ``seen_``, vocabularies).
    test: held-out interactions; each user's distinct test items are the relevant set.
        Test items the model does not know count as relevant but can never be hit, so
        recall stays honest. Pass ``test.positives()`` to keep only positive rows.
    k: one cutoff or several; the list is computed once at max(k).
    metrics: any of "recall", "ndcg", "precision", "hit_rate", "mrr", "map" (mean over
        evaluated users, definitions in ``recforge.metrics``) and the beyond-accuracy
        "coverage" (catalog coverage of the top k) and "novelty" (mean -log2 of the
        training popularity share of recommended items).
    exclude_seen: mask the items the model saw for the user in training (``model.seen_``).
    train: optionally a further log whose items are also excluded per user (for instance
        when the model was fitted on a different slice than the one to filter).

    batch_size: at most this many users per score block; fewer when (batch, n_items)
        float32 scores would pass the memory budget (module docstring).

    Returns {"recall@10": ..., "ndcg@20": ..., ..., "n_users": evaluated users,
    "n_users_skipped": test users unknown to the model}. Memory: one budget-sized score
    block at a time (plus O(users x k)), never a dense users x items matrix: 100k users x
    1M items (d = 64) evaluated in 663 MiB peak RSS ("Evaluation at scale",
    docs/BENCHMARKS.md).
    """
    _check_retrieval(model, "full_ranking")
    _check_interactions(test, "full_ranking")
    ks = _as_ks(k)
    names = list(dict.fromkeys(metrics))
    bad = [n for n in names if n not in RANKING_METRICS + BEYOND_ACCURACY]
    if bad:
        raise ConfigError(
            f"full_ranking: unknown metric(s) {bad}; choose from {', '.join(RANKING_METRICS + BEYOND_ACCURACY)}."
        )
    if batch_size < 1:
        raise ConfigError(f"full_ranking: batch_size must be positive, got {batch_size}.")
    rank_names = [n for n in names if n in RANKING_METRICS]
    n_items = model.n_items
    kmax = max(ks)
    batch_size = rows_per_batch(n_items, batch_size)

    # relevant sets in the model's index space
    frame = test.frame[["user", "item"]].drop_duplicates()
    u_idx = model.user_vocab_.index(frame["user"].to_numpy(), unknown="mask")
    n_skipped = int(frame.loc[u_idx < 0, "user"].nunique())
    known = u_idx >= 0
    u_idx = u_idx[known]
    i_idx = model.item_vocab_.index(frame["item"].to_numpy()[known], unknown="mask")
    users, row_of = np.unique(u_idx, return_inverse=True)  # evaluated users, sorted
    if len(users) == 0:
        raise DataError(
            f"full_ranking: none of the {n_skipped} test users of {test.name!r} is known to the model."
        )
    n_rel = np.bincount(row_of, minlength=len(users))  # distinct test items, known or not
    ok = i_idx >= 0
    rel_keys = np.unique(row_of[ok].astype(np.int64) * n_items + i_idx[ok])

    extra = None
    if train is not None:
        extra = sp.csr_matrix(train.to_csr(model.user_vocab_, model.item_vocab_))
    per_user = {f"{n}@{kk}": np.empty(len(users)) for n in rank_names for kk in ks}
    covered = {kk: np.zeros(n_items, dtype=bool) for kk in ks}
    pop = np.asarray(model.seen_.sum(axis=0)).ravel().astype(np.float64)
    self_info = -np.log2(np.minimum(np.maximum(pop, 1.0) / max(pop.sum(), 1.0), 1.0))
    novelty_sum = dict.fromkeys(ks, 0.0)
    novelty_n = dict.fromkeys(ks, 0)

    starts = range(0, len(users), batch_size)
    if len(starts) > 20:  # long evaluations show a bar on an interactive terminal
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="full ranking", unit="batch", leave=False, disable=None)
    for start in starts:
        batch = users[start : start + batch_size]
        idx = _top_items(
            model, batch, kmax, exclude_seen, extra, batch_size
        )  # (B, kmax), -1 = empty
        rows = np.arange(start, start + len(batch), dtype=np.int64)
        keys = rows[:, None] * n_items + np.maximum(idx, 0)
        hits = _lookup(rel_keys, keys) & (idx >= 0)
        for kk in ks:
            vals = M.rank_metrics_from_hits(hits, n_rel[start : start + len(batch)], kk, rank_names)
            for n, v in vals.items():
                per_user[f"{n}@{kk}"][start : start + len(batch)] = v
            top = idx[:, :kk]
            top = top[top >= 0]
            covered[kk][top] = True
            novelty_sum[kk] += float(self_info[top].sum())
            novelty_n[kk] += int(top.size)

    out: dict[str, float] = {}
    for n in names:
        for kk in ks:
            key = f"{n}@{kk}"
            if n in RANKING_METRICS:
                out[key] = float(np.mean(per_user[key]))
            elif n == "coverage":
                out[key] = float(covered[kk].sum() / n_items)
            else:
                out[key] = novelty_sum[kk] / novelty_n[kk] if novelty_n[kk] else float("nan")
    out["n_users"] = len(users)
    out["n_users_skipped"] = n_skipped
    log.info(
        "full_ranking on %s: %d users evaluated, %d unknown users skipped",
        test.name,
        len(users),
        n_skipped,
    )
    return out


def _top_items(
    model: Any,
    batch: np.ndarray,
    kmax: int,
    exclude_seen: bool,
    extra: sp.csr_matrix | None,
    batch_size: int,
) -> np.ndarray:
    """Top kmax item indices (B, kmax) for internal users ``batch``; -1 marks an empty slot
    (a masked item with score -inf, or an item excluded through ``extra``)."""
    n_items = model.n_items
    want = kmax
    if extra is not None:
        sub = extra[batch]
        want = kmax + int(np.diff(sub.indptr).max(initial=0))
    idx, val = model.recommend_idx(
        batch, k=min(want, n_items), exclude_seen=exclude_seen, batch_size=batch_size
    )
    idx = np.where(np.isneginf(val), -1, idx)
    if extra is not None:
        keys = np.arange(len(batch), dtype=np.int64)[:, None] * n_items + np.maximum(idx, 0)
        idx = np.where(_lookup(_csr_keys(sub, n_items), keys), -1, idx)
        # move empty slots to the end, keeping the order of the others
        idx = np.take_along_axis(idx, np.argsort(idx < 0, axis=1, kind="stable"), axis=1)
    if idx.shape[1] < kmax:
        idx = np.pad(idx, ((0, 0), (0, kmax - idx.shape[1])), constant_values=-1)
    return idx[:, :kmax]


# ---------------------------------------------------------------------- sampled ranking


def sampled_ranking(
    model: Any,
    test: Interactions,
    *,
    n_negatives: int = 100,
    k: int | Sequence[int] = (10,),
    seed: int = 0,
    exclude_seen: bool = True,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Rank each test (user, item) against ``n_negatives`` sampled items.

    Negatives are drawn uniformly with replacement from the items the user has not
    interacted with: not among the user's test items and, with ``exclude_seen``, not
    among the items the model saw for the user in training. Pairs whose user or item is
    unknown to the model are skipped (counted in "n_pairs_skipped").

    The positive's rank is pessimistic: 1 + the number of negatives scoring higher *or
    equal*, so that a constant scorer cannot look perfect. "auc" is the share of
    negatives scored below the positive, ties counting one half, averaged over pairs.
    Returns {"hit_rate@k", "ndcg@k" (single relevant item: 1/log2(rank + 1) if rank <= k),
    "mrr" (1/rank, no cutoff), "auc", "n_pairs", "n_pairs_skipped"}, means over pairs.
    Scores stay float32 (as the model gives them), users are batched within the memory
    budget as in ``full_ranking``; the negatives depend on ``seed`` and the batch size.
    """
    _check_retrieval(model, "sampled_ranking")
    _check_interactions(test, "sampled_ranking")
    ks = _as_ks(k)
    if not isinstance(n_negatives, int | np.integer) or n_negatives < 1:
        raise ConfigError(
            f"sampled_ranking: n_negatives must be a positive integer, got {n_negatives!r}."
        )
    n_items = model.n_items
    frame = test.frame[["user", "item"]].drop_duplicates()
    u = model.user_vocab_.index(frame["user"].to_numpy(), unknown="mask")
    i = model.item_vocab_.index(frame["item"].to_numpy(), unknown="mask")
    ok = (u >= 0) & (i >= 0)
    n_skipped = int((~ok).sum())
    u, i = u[ok], i[ok]
    if len(u) == 0:
        raise DataError(
            f"sampled_ranking: no test pair of {test.name!r} has a user and item known to the model."
        )
    forbid = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(model.n_users, n_items))
    if exclude_seen:
        forbid = forbid + model.seen_
    forbid = sp.csr_matrix(forbid)
    forbid.sum_duplicates()
    forbid.eliminate_zeros()
    forbid.sort_indices()
    forbid_keys = _csr_keys(forbid, n_items)
    n_allowed = n_items - np.diff(forbid.indptr)

    order = np.argsort(u, kind="stable")
    u, i = u[order], i[order]
    has_neg = n_allowed[u] > 0
    n_skipped += int((~has_neg).sum())
    u, i = u[has_neg], i[has_neg]
    rng = np.random.default_rng(seed)
    users = np.unique(u)
    batch_size = rows_per_batch(n_items, batch_size)
    ranks, aucs = [], []
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        lo, hi = np.searchsorted(u, batch[0], "left"), np.searchsorted(u, batch[-1], "right")
        pu, pi = u[lo:hi], i[lo:hi]
        row = np.searchsorted(batch, pu)
        scores = np.asarray(model.score_users(batch), dtype=np.float32)  # (B, n_items)
        negs = _sample_negatives(rng, pu, n_negatives, n_items, forbid, forbid_keys)  # (P, n_neg)
        pos = scores[row, pi][:, None]  # (P, 1)
        neg = scores[row[:, None], negs]  # (P, n_neg)
        greater = (neg > pos).sum(axis=1)
        ties = (neg == pos).sum(axis=1)
        ranks.append(1 + greater + ties)
        aucs.append((n_negatives - greater - 0.5 * ties) / n_negatives)
    rank = np.concatenate(ranks).astype(np.float64)
    out: dict[str, float] = {}
    for kk in ks:
        out[f"hit_rate@{kk}"] = float(np.mean(rank <= kk))
        out[f"ndcg@{kk}"] = float(np.mean(np.where(rank <= kk, 1.0 / np.log2(rank + 1.0), 0.0)))
    out["mrr"] = float(np.mean(1.0 / rank))
    out["auc"] = float(np.mean(np.concatenate(aucs)))
    out["n_pairs"] = len(rank)
    out["n_pairs_skipped"] = n_skipped
    return out


def _sample_negatives(
    rng: np.random.Generator,
    users: np.ndarray,
    n: int,
    n_items: int,
    forbid: sp.csr_matrix,
    forbid_keys: np.ndarray,
    max_rounds: int = 20,
) -> np.ndarray:
    """(len(users), n) items drawn uniformly from those not in ``forbid[user]``.

    Rejection sampling; rows still holding a forbidden item after ``max_rounds`` (users who
    interacted with almost everything) draw from their explicit list of allowed items."""
    negs = rng.integers(0, n_items, size=(len(users), n))
    base = users.astype(np.int64)[:, None] * n_items
    for _ in range(max_rounds):
        bad = _lookup(forbid_keys, base + negs)
        if not bad.any():
            return negs
        negs[bad] = rng.integers(0, n_items, size=int(bad.sum()))
    bad = _lookup(forbid_keys, base + negs)
    for r in np.flatnonzero(bad.any(axis=1)):
        allowed = np.setdiff1d(np.arange(n_items), forbid[users[r]].indices, assume_unique=True)
        negs[r, bad[r]] = rng.choice(allowed, size=int(bad[r].sum()))
    return negs


# ---------------------------------------------------------------------- rankers


def evaluate_scores(
    y_true: Any, y_prob: Any, groups: Any | None = None, *, threshold: float = 0.5
) -> dict[str, float]:
    """CTR metrics of predicted probabilities: auc, gauc (when ``groups`` is given),
    logloss, accuracy, precision, recall, f1 (at ``threshold``), n_rows, positive_rate."""
    y = np.asarray(y_true)
    p = np.asarray(y_prob, dtype=np.float64)
    out: dict[str, float] = {"auc": M.auc(y, p)}
    if groups is not None:
        try:
            out["gauc"] = M.gauc(y, p, groups)
        except DataError as e:  # every group single-class: report it, do not fail the run
            log.warning("%s", e)
            out["gauc"] = float("nan")
    out["logloss"] = M.log_loss(y, p)
    out["accuracy"] = M.accuracy(y, p, threshold)
    out["precision"] = M.precision(y, p, threshold)
    out["recall"] = M.recall(y, p, threshold)
    out["f1"] = M.f1(y, p, threshold)
    out["n_rows"] = len(y)
    out["positive_rate"] = float(np.mean(y))
    return out


def evaluate_ranker(
    model: Any, frame: pd.DataFrame, label: str = "label", group: str | None = None
) -> dict[str, float]:
    """Score ``frame`` with ``model.predict_proba`` and compute ``evaluate_scores``.

    label: the 0/1 label column; group: optional column (usually the user) for GAUC.
    Returns {"auc", "gauc" (if group), "logloss", "accuracy", "precision", "recall", "f1",
    "n_rows", "positive_rate"}.
    """
    for col, what in ((label, "label"), (group, "group")):
        if col is not None and col not in frame.columns:
            raise DataError(
                f"evaluate_ranker: {what} column {col!r} not in the frame; columns are {list(frame.columns)}.",
                column=col,
            )
    p = np.asarray(model.predict_proba(frame), dtype=np.float64)
    if p.shape != (len(frame),):
        raise DataError(
            f"evaluate_ranker: {type(model).__name__}.predict_proba returned shape {p.shape}, expected ({len(frame)},)."
        )
    groups = frame[group].to_numpy() if group is not None else None
    return evaluate_scores(frame[label].to_numpy(), p, groups)
