"""ALS and BPR wrap implicit: our factors and scores equal implicit's on the same data."""

from __future__ import annotations

import numpy as np
import pytest
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking

from recforge import models
from recforge.exceptions import ConfigError
from tests.conftest import make_tiny_interactions


@pytest.fixture(scope="module")
def data():
    return make_tiny_interactions()


def test_bpr_scores_equal_implicit(data):
    params = dict(factors=8, learning_rate=0.05, regularization=0.01, iterations=20)
    ours = models.get("bpr", num_threads=1, random_state=3, **params).fit(data)
    ref = BayesianPersonalizedRanking(num_threads=1, random_state=3, **params)
    ref.fit(ours.seen_, show_progress=False)
    # bias column kept: d + 1 columns, the user side's last column is 1
    assert ours.item_factors_.shape == (ours.n_items, 9)
    np.testing.assert_allclose(ours.user_factors_[:, -1], 1.0)
    np.testing.assert_allclose(ours.user_factors_, ref.user_factors, rtol=1e-6)
    np.testing.assert_allclose(ours.item_factors_, ref.item_factors, rtol=1e-6)
    users = np.arange(5)
    ref_ids, ref_scores = ref.recommend(users, ours.seen_[users], N=5)
    idx, scores = ours.recommend_idx(users, k=5)
    np.testing.assert_array_equal(idx, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5)


def test_als_factors_equal_implicit_and_learn_groups(data):
    params = dict(factors=8, regularization=0.05, alpha=2.0, iterations=8)
    ours = models.get("als", num_threads=1, random_state=1, **params).fit(data)
    ref = AlternatingLeastSquares(num_threads=1, random_state=1, **params)
    ref.fit(ours.seen_, show_progress=False)
    np.testing.assert_allclose(ours.item_factors_, ref.item_factors, rtol=1e-4, atol=1e-6)
    # two taste groups: even users like items 7..197, odd users 207..397
    ids, _ = ours.recommend([f"u{u}" for u in range(10)], k=5)
    in_group = [(np.asarray(row) < 200) == (u % 2 == 0) for u, row in enumerate(ids)]
    assert np.mean(in_group) > 0.8


def test_als_weight_column_changes_the_fit(data):
    frame = data.frame.assign(weight=data.frame["rating"])
    weighted = type(data)(frame, data.user_features, data.item_features)
    a = models.get("als", factors=8, iterations=3, num_threads=1, weight_col="weight").fit(weighted)
    b = models.get("als", factors=8, iterations=3, num_threads=1).fit(weighted)
    assert not np.allclose(a.item_factors_, b.item_factors_)
    bad = type(data)(frame.assign(weight=-1.0))
    with pytest.raises(ConfigError, match="negative"):
        models.get("als", factors=4, iterations=1, num_threads=1, weight_col="weight").fit(bad)


def test_bad_params_are_rejected(data):
    with pytest.raises(ConfigError, match="factors"):
        models.get("bpr", factors=0).fit(data)
    with pytest.raises(ConfigError, match="num_threads"):
        models.get("als", num_threads=0).fit(data)
