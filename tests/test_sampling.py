"""NegativeSampler (exclusion, popularity weighting) and reservoir sampling (uniformity)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

from recforge.data.sampling import NegativeSampler, reservoir_sample
from recforge.exceptions import ConfigError, DataError, NotFittedError
from tests.conftest import make_tiny_interactions


def random_positives(n_users: int = 300, n_items: int = 60, seed: int = 0) -> sp.csr_matrix:
    """Users with 0..30 positives; item j is popular in proportion to j + 1."""
    rng = np.random.default_rng(seed)
    p = np.arange(1, n_items + 1, dtype=float)
    rows, cols = [], []
    for u in range(n_users):
        k = rng.integers(0, 31)
        items = rng.choice(n_items, size=k, replace=False, p=p / p.sum())
        rows += [u] * k
        cols += list(items)
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, n_items))


@pytest.mark.parametrize("strategy", ["uniform", "popularity"])
def test_negatives_never_positives_and_shape(strategy):
    pos = random_positives()
    sampler = NegativeSampler(strategy=strategy, seed=3).fit(pos)
    users = np.repeat(np.arange(pos.shape[0]), 3)
    neg = sampler.sample(users, 25)
    assert neg.shape == (len(users), 25) and neg.dtype == np.int64
    assert neg.min() >= 0 and neg.max() < pos.shape[1]
    dense = pos.toarray() > 0
    assert not dense[users[:, None], neg].any(), "a negative was one of the user's positives"


def test_deterministic_by_seed():
    pos = random_positives()
    a = NegativeSampler(strategy="popularity", seed=7).fit(pos).sample(np.arange(50), 10)
    b = NegativeSampler(strategy="popularity", seed=7).fit(pos).sample(np.arange(50), 10)
    c = NegativeSampler(strategy="popularity", seed=8).fit(pos).sample(np.arange(50), 10)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_popularity_frequencies_follow_count_power():
    pos = random_positives(n_users=400, n_items=40, seed=1)
    counts = np.asarray((pos > 0).sum(0)).ravel().astype(float)
    alpha = 0.75
    pos = sp.vstack([pos, sp.csr_matrix((1, 40))]).tocsr()  # a last user with no positives
    sampler = NegativeSampler(strategy="popularity", alpha=alpha, seed=0).fit(pos)
    draws = sampler.sample(np.full(4000, pos.shape[0] - 1), 50).ravel()
    freq = np.bincount(draws, minlength=40) / draws.size
    expected = counts**alpha / (counts**alpha).sum()
    assert np.abs(freq - expected).max() < 0.004
    assert stats.spearmanr(freq, counts).statistic > 0.95


def test_uniform_frequencies_are_flat_over_unseen_items():
    pos = sp.csr_matrix(([1.0, 1.0], ([0, 0], [2, 5])), shape=(1, 10))
    draws = (
        NegativeSampler(strategy="uniform", seed=0).fit(pos).sample(np.zeros(2000, int), 10).ravel()
    )
    freq = np.bincount(draws, minlength=10)
    assert freq[2] == 0 and freq[5] == 0
    assert stats.chisquare(freq[[0, 1, 3, 4, 6, 7, 8, 9]]).pvalue > 1e-3


def test_user_who_has_seen_almost_everything_gets_what_is_left():
    n_items = 50
    seen = np.arange(n_items) != 17
    seen[33] = False  # unseen: 17 and 33
    pos = sp.csr_matrix(np.vstack([seen, np.zeros(n_items)]).astype(float))
    for strategy in ("uniform", "popularity"):
        neg = (
            NegativeSampler(strategy=strategy, max_rounds=2, seed=0)
            .fit(pos)
            .sample(np.zeros(200, int), 5)
        )
        assert set(np.unique(neg)) == {17, 33}


def test_zero_popularity_items_are_the_fallback():
    # items 3 and 4 have no positives anywhere (weight 0); user 0 has seen 0..2
    pos = sp.csr_matrix(np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=float))
    sampler = NegativeSampler(strategy="popularity", seed=0).fit(pos)
    assert set(np.unique(sampler.sample(np.zeros(100, int), 3))) == {3, 4}
    assert set(np.unique(sampler.sample(np.ones(100, int), 3))) == {2}


def test_user_with_everything_seen_raises_naming_the_user():
    pos = sp.csr_matrix(np.array([[0, 1, 0], [1, 1, 1]], dtype=float))
    sampler = NegativeSampler(seed=0).fit(pos)
    with pytest.raises(DataError, match="user index 1"):
        sampler.sample(np.array([0, 1]), 4)


def test_errors_and_fit_from_interactions():
    with pytest.raises(NotFittedError):
        NegativeSampler().sample(np.array([0]), 2)
    with pytest.raises(ConfigError, match="strategy"):
        NegativeSampler(strategy="popular").fit(random_positives())
    with pytest.raises(DataError, match="sparse"):
        NegativeSampler().fit(np.ones((3, 3)))
    sampler = NegativeSampler(seed=0).fit(random_positives(n_users=4))
    with pytest.raises(DataError, match="out of range"):
        sampler.sample(np.array([4]), 1)

    inter = make_tiny_interactions()
    uv, iv = inter.vocabs()
    sampler = NegativeSampler(strategy="popularity", seed=0).fit(inter, uv, iv)
    neg = sampler.sample(uv.index(["u0", "u1"]), 20)
    seen = inter.frame.groupby("user")["item"].agg(set)
    for u, row in zip(["u0", "u1"], neg):
        assert not set(iv.ids(row)) & seen[u]


# ---------------------------------------------------------------------------- reservoirs
@pytest.mark.parametrize("method", ["R", "L"])
def test_reservoir_keeps_every_element_with_probability_m_over_n(method):
    n, m, runs = 12, 4, 3000
    kept = np.zeros(n)
    for seed in range(runs):
        sample = reservoir_sample(range(n), m, seed=seed, method=method)
        assert len(sample) == m and len(set(sample)) == m
        kept[sample] += 1
    np.testing.assert_allclose(kept / runs, m / n, atol=0.04)
    assert stats.chisquare(kept).pvalue > 1e-3  # expected m * runs / n each


@pytest.mark.parametrize("method", ["R", "L"])
def test_reservoir_on_a_generator_of_unknown_length(method):
    def stream():
        x = 0
        while x < 10_000:
            yield f"e{x}"
            x += 1

    sample = reservoir_sample(stream(), 50, seed=1, method=method)
    assert len(sample) == 50 and len(set(sample)) == 50
    assert all(s.startswith("e") for s in sample)
    # a uniform sample of 0..9999 has mean ~5000 (sd of the mean ~ 2900 / sqrt(50))
    assert abs(np.mean([int(s[1:]) for s in sample]) - 5000) < 1500
    assert reservoir_sample(stream(), 50, seed=1, method=method) == sample  # deterministic


def test_reservoir_edge_cases():
    assert sorted(reservoir_sample(iter([3, 1, 2]), 10)) == [1, 2, 3]  # shorter than m
    assert reservoir_sample(range(100), 0) == []
    with pytest.raises(ConfigError):
        reservoir_sample(range(5), -1)
    with pytest.raises(ConfigError, match="method"):
        reservoir_sample(range(5), 2, method="X")


@pytest.mark.parametrize("strategy", ["uniform", "popularity"])
def test_distinct_rows_have_no_repeats(strategy):
    pos = random_positives(n_users=100, n_items=40)
    users = np.arange(100)
    neg = NegativeSampler(strategy=strategy, seed=0).fit(pos).sample(users, 8, distinct=True)
    assert all(len(set(row)) == 8 for row in neg)
    assert not (pos.toarray() > 0)[users[:, None], neg].any()
    # a user with exactly n unseen items gets all of them; one with fewer raises
    seen = np.ones((2, 10))
    seen[0, [1, 4, 7]] = 0
    seen[1, [2, 3]] = 0
    sampler = NegativeSampler(strategy=strategy, seed=0).fit(sp.csr_matrix(seen))
    assert sorted(sampler.sample(np.array([0]), 3, distinct=True)[0]) == [1, 4, 7]
    with pytest.raises(DataError, match="user index 1 has 2 unseen"):
        sampler.sample(np.array([0, 1]), 3, distinct=True)
