"""topk on wide rows (the chunked path) against a stable full sort, and the memory budget
that sizes score blocks in recommend and the evaluation protocols."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest

from recforge import models
from recforge import topk as T
from recforge.data import Interactions
from recforge.evaluation import full_ranking, sampled_ranking
from tests.conftest import make_tiny_interactions


def _reference(s, k):
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]  # NaN sorts last
    return order, np.take_along_axis(s, order, 1).astype(np.float32)


def _rows(kind, rng, b, n):
    if kind == "normal":
        return rng.normal(size=(b, n))
    if kind == "ties":
        return rng.integers(0, 4, size=(b, n)).astype(np.float32)
    s = rng.normal(size=(b, n)).astype(np.float32)
    if kind == "mostly_masked":
        s[:, rng.random(n) < 0.95] = -np.inf
    elif kind == "all_masked_row":
        s[0] = -np.inf
    elif kind == "nan":
        s[:, rng.random(n) < 0.5] = np.nan
    elif kind == "sorted":
        s.sort(axis=1)  # the top sits in the tail chunk
    return s


@pytest.mark.parametrize(
    "kind", ["normal", "ties", "mostly_masked", "all_masked_row", "nan", "sorted"]
)
@pytest.mark.parametrize("k", [1, 17, 60])
def test_topk_matches_a_stable_full_sort(kind, k):
    rng = np.random.default_rng(k)
    s = _rows(kind, rng, 3, 10_007)
    idx, val = T.topk(s, k)
    ref_idx, ref_val = _reference(s, k)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(val, ref_val)


def test_rows_per_batch_follows_the_budget():
    assert T.rows_per_batch(1_000_000, 1024, budget=512 << 20) == 44
    assert T.rows_per_batch(1_000, 1024, budget=512 << 20) == 1024  # capped by max_rows
    assert T.rows_per_batch(10**9, 1024, budget=1) == 1


class _Recorder:
    """Wraps a fitted model's score_users to record the batch sizes it is asked for."""

    def __init__(self, model):
        self.model, self.sizes = model, []
        self.inner = model.score_users

    def __call__(self, user_idx):
        self.sizes.append(len(user_idx))
        return self.inner(user_idx)


def test_full_ranking_and_recommend_batches_fit_the_budget(monkeypatch):
    data = make_tiny_interactions()
    als = models.get("als", factors=4, iterations=2).fit(data)
    n_items = als.n_items
    monkeypatch.setattr(T, "SCORE_MEMORY_BUDGET", T.BYTES_PER_SCORE * n_items * 7)
    rec = _Recorder(als)
    monkeypatch.setattr(als, "score_users", rec)
    full_ranking(als, data, k=5)
    assert max(rec.sizes) == 7 and sum(rec.sizes) >= als.n_users
    rec.sizes.clear()
    als.recommend(list(data.users[:30]), k=3)
    assert max(rec.sizes) == 7


def test_sampled_ranking_keeps_scores_float32():
    """A float64 upcast of the (batch, n_items) block doubled its memory: with 256 users x
    20k items the block is 20 MB as float32 and was another 40 MB as float64."""
    from benchmarks.eval_memory import random_factor_model

    n_users, n_items = 256, 20_000
    model = random_factor_model(n_users, n_items, dim=8, seen=2)
    rng = np.random.default_rng(0)
    test = Interactions(
        pd.DataFrame({"user": np.arange(n_users), "item": rng.integers(0, n_items, n_users)})
    )
    tracemalloc.start()
    try:
        sampled_ranking(model, test, n_negatives=50, batch_size=n_users)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    block = n_users * n_items * 4
    assert peak < 1.6 * block, f"peak {peak / 1e6:.1f} MB for a {block / 1e6:.1f} MB block"
