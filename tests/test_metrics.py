"""recforge.metrics against scikit-learn (random data with ties) and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from recforge import metrics as m
from recforge.exceptions import ConfigError, DataError

SEEDS = [0, 1, 2, 3, 4]


def tied_data(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Labels correlated with scores rounded to one decimal, so that ties are frequent."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1).round(1)
    return y, s


# ---------------------------------------------------------------------- vs scikit-learn


@pytest.mark.parametrize("seed", SEEDS)
def test_scalar_metrics_match_sklearn(seed):
    y, s = tied_data(seed)
    assert len(np.unique(s)) < len(s) / 10  # plenty of ties
    assert m.auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert m.average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    p = np.clip(s, 0.05, 0.95)
    assert m.log_loss(y, p) == pytest.approx(skm.log_loss(y, p), rel=1e-10)
    for thr in (0.5, 0.3):
        pred = (s >= thr).astype(int)
        assert m.accuracy(y, s, threshold=thr) == pytest.approx(skm.accuracy_score(y, pred))
        assert m.precision(y, s, threshold=thr) == pytest.approx(skm.precision_score(y, pred))
        assert m.recall(y, s, threshold=thr) == pytest.approx(skm.recall_score(y, pred))
        assert m.f1(y, s, threshold=thr) == pytest.approx(skm.f1_score(y, pred))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("drop", [True, False])
def test_roc_curve_matches_sklearn(seed, drop):
    y, s = tied_data(seed)
    for ours, ref in zip(
        m.roc_curve(y, s, drop_intermediate=drop), skm.roc_curve(y, s, drop_intermediate=drop)
    ):
        np.testing.assert_allclose(ours, ref)


@pytest.mark.parametrize("seed", SEEDS)
def test_pr_curve_matches_sklearn(seed):
    y, s = tied_data(seed)
    for ours, ref in zip(m.pr_curve(y, s), skm.precision_recall_curve(y, s)):
        np.testing.assert_allclose(ours, ref)


def test_log_loss_clips_extremes():
    y = np.array([1, 0, 1])
    p = np.array([0.0, 1.0, 0.5])
    expected = -(math.log(1e-15) + math.log(1e-15) + math.log(0.5)) / 3
    # 1 - 1e-15 is not exact in float64, hence the loose tolerance
    assert m.log_loss(y, p) == pytest.approx(expected, rel=1e-4)
    assert np.isfinite(m.log_loss(y, p, eps=1e-7))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 3, 10])
def test_ndcg_matches_sklearn(seed, k):
    rng = np.random.default_rng(seed)
    n_users, n_items = 30, 25
    rel = rng.random((n_users, n_items)) < 0.2
    rel[np.arange(n_users), rng.integers(0, n_items, n_users)] = True  # every user has one
    scores = rng.permutation(n_users * n_items).reshape(n_users, n_items).astype(float)  # no ties
    ranked = np.argsort(-scores, axis=1)
    relevant = [set(np.flatnonzero(r).tolist()) for r in rel]
    ref = skm.ndcg_score(rel.astype(int), scores, k=k)
    assert m.ndcg_at_k(ranked, relevant, k) == pytest.approx(ref, abs=1e-12)
    # the ragged-list path agrees with the vectorised array path
    assert m.ndcg_at_k([list(r) for r in ranked], relevant, k) == pytest.approx(ref, abs=1e-12)


# ---------------------------------------------------------------------- properties


@pytest.mark.parametrize("seed", SEEDS)
def test_auc_perfect_reversed_and_constant(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    y[:2] = [0, 1]
    s = y + rng.random(200) * 0.5
    assert m.auc(y, s) == 1.0
    assert m.auc(y, -s) == 0.0
    assert m.auc(y, np.zeros(200)) == 0.5
    assert m.average_precision(y, s) == pytest.approx(1.0)


def test_gauc_hand_computed():
    # user a: 2 pos (0.9, 0.4), 1 neg (0.5) -> 1 of 2 pairs won -> 0.5, weight 3
    # user b: pos 0.7, neg 0.7 (tie) and neg 0.1 -> (0.5 + 1) / 2 = 0.75, weight 3
    # user c: only positives -> skipped
    y = [1, 1, 0, 1, 0, 0, 1, 1]
    s = [0.9, 0.4, 0.5, 0.7, 0.7, 0.1, 0.3, 0.2]
    g = ["a", "a", "a", "b", "b", "b", "c", "c"]
    assert m.gauc(y, s, g) == pytest.approx((3 * 0.5 + 3 * 0.75) / 6)


@pytest.mark.parametrize("seed", SEEDS)
def test_gauc_equals_weighted_per_group_sklearn_auc(seed):
    rng = np.random.default_rng(seed + 100)  # not the stream tied_data uses for labels
    n = 600
    g = rng.integers(0, 40, n)
    y, s = tied_data(seed, n)
    total = weight = 0.0
    for grp in np.unique(g):
        sel = g == grp
        if 0 < y[sel].sum() < sel.sum():
            total += sel.sum() * skm.roc_auc_score(y[sel], s[sel])
            weight += sel.sum()
    assert m.gauc(y, s, g) == pytest.approx(total / weight, abs=1e-12)
    # one group == plain auc
    assert m.gauc(y, s, np.zeros(n)) == pytest.approx(m.auc(y, s))


def test_topk_hand_computed():
    ranked = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 1, 2, 3]])
    relevant = [{2, 4, 10}, {42}, {9}]
    k = 3
    # user 0: hits at positions 2 (and 4 is outside the top 3)
    # user 1: no hit; user 2: hit at position 1
    np.testing.assert_allclose(m.recall_at_k(ranked, relevant, k, per_user=True), [1 / 3, 0, 1])
    np.testing.assert_allclose(
        m.precision_at_k(ranked, relevant, k, per_user=True), [1 / 3, 0, 1 / 3]
    )
    np.testing.assert_allclose(m.hit_rate_at_k(ranked, relevant, k, per_user=True), [1, 0, 1])
    ideal3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    np.testing.assert_allclose(
        m.ndcg_at_k(ranked, relevant, k, per_user=True), [(1 / math.log2(3)) / ideal3, 0, 1]
    )
    np.testing.assert_allclose(m.mrr(ranked, relevant, k, per_user=True), [1 / 2, 0, 1])
    np.testing.assert_allclose(m.mrr(ranked, relevant, per_user=True), [1 / 2, 0, 1])  # whole list
    np.testing.assert_allclose(m.map_at_k(ranked, relevant, k, per_user=True), [(1 / 2) / 3, 0, 1])
    # at k=4 user 0 also hits position 4: AP = (1/2 + 2/4) / min(3, 4)
    np.testing.assert_allclose(
        m.map_at_k(ranked, relevant, 4, per_user=True), [(0.5 + 0.5) / 3, 0, 1]
    )
    assert m.recall_at_k(ranked, relevant, k) == pytest.approx((1 / 3 + 0 + 1) / 3)


def test_topk_string_ids_padding_and_empty_relevant():
    ranked = [["a", "b"], ["c", None, "d"], ["x"]]
    relevant = [["b"], {"d", "e"}, set()]
    r = m.recall_at_k(ranked, relevant, 3, per_user=True)
    np.testing.assert_allclose(r[:2], [1.0, 0.5])
    assert np.isnan(r[2])  # no relevant item: left out of the mean
    assert m.recall_at_k(ranked, relevant, 3) == pytest.approx(0.75)
    # precision divides by k even when the list is shorter
    assert m.precision_at_k(ranked, relevant, 3, per_user=True)[0] == pytest.approx(1 / 3)
    # negative ids pad integer arrays
    assert m.hit_rate_at_k(np.array([[-1, 5]]), [{5}], 2) == 1.0
    assert m.hit_rate_at_k(np.array([[-1, 5]]), [{-1}], 2) == 0.0


def test_perfect_ranking_scores_one():
    relevant = [{0, 1}, {2}, {3, 4, 5}]
    ranked = np.array([[0, 1, 9], [2, 8, 9], [3, 4, 5]])
    for fn in (m.recall_at_k, m.ndcg_at_k, m.hit_rate_at_k, m.map_at_k, m.mrr):
        assert fn(ranked, relevant, 3) == pytest.approx(1.0), fn.__name__


def test_coverage_and_novelty():
    ranked = np.array([[0, 1], [0, 2]])
    assert m.coverage(ranked, n_items=10) == pytest.approx(0.3)
    assert m.coverage(ranked, n_items=10, k=1) == pytest.approx(0.1)
    pop = np.array([8, 4, 2, 2])  # total 16: p = 1/2, 1/4, 1/8
    assert m.novelty(ranked, pop) == pytest.approx((1 + 2 + 1 + 3) / 4)
    assert m.novelty([["a"], ["b"]], {"a": 1, "b": 3}) == pytest.approx((2 + math.log2(4 / 3)) / 2)


# ---------------------------------------------------------------------- input checks


def test_input_errors_are_clear():
    with pytest.raises(DataError, match="length mismatch"):
        m.auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="0/1 labels"):
        m.auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="empty"):
        m.log_loss([], [])
    with pytest.raises(DataError, match="one class"):
        m.auc([1, 1], [0.1, 0.2])
    with pytest.raises(DataError, match="finite"):
        m.auc([0, 1], [0.1, np.nan])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        m.log_loss([0, 1], [-2.0, 3.0])
    with pytest.raises(DataError, match="no group"):
        m.gauc([1, 0], [0.1, 0.2], ["a", "b"])
    with pytest.raises(DataError, match="length mismatch"):
        m.recall_at_k([[1]], [{1}, {2}], 1)
    with pytest.raises(ConfigError, match="positive integer"):
        m.recall_at_k([[1]], [{1}], 0)
    with pytest.raises(DataError, match="no user has a relevant"):
        m.ndcg_at_k([[1]], [set()], 1)
    assert m.precision([0, 1], [0.1, 0.2]) == 0.0  # nothing predicted positive


# ---------------------------------------------------------------------------- id factorization
def test_hit_matrix_large_ids_give_no_false_hit_and_no_overflow():
    """(user, item) keys were packed as user * span + item in int64: with ids spanning 2**62,
    user 4's key wrapped onto user 0's and item 7 counted as a hit for a user who never had
    it; ids near 2**63 raised OverflowError. Ids are factorized first now."""
    from recforge.metrics import hit_matrix

    big = 2**62 - 1
    ranked = np.array([[big], [1], [2], [3], [7]], dtype=np.int64)
    relevant = [{7}, {5}, {5}, {5}, {big}]
    hits, n_rel = hit_matrix(ranked, relevant, k=1)
    assert hits.tolist() == [[False]] * 5
    assert n_rel.tolist() == [1, 1, 1, 1, 1]

    huge = np.array([[2**63 - 1, 2**63 - 2], [-(2**63), 3]], dtype=np.int64)
    hits, _ = hit_matrix(huge, [{2**63 - 2}, {-(2**63), 2**70}], k=2)
    assert hits.tolist() == [[False, True], [True, False]]
    unsigned = np.array([[2**64 - 1, 0]], dtype=np.uint64)
    assert hit_matrix(unsigned, [{2**64 - 1, -1}], k=2)[0].tolist() == [[True, False]]


def test_hit_matrix_minus_one_is_an_empty_slot_other_negatives_are_ids():
    from recforge.metrics import hit_matrix

    ranked = np.array([[-1, -5, 4]], dtype=np.int64)
    hits, _ = hit_matrix(ranked, [{-1, -5}], k=3)
    assert hits.tolist() == [[False, True, False]]
