"""Regression tests from the review of retrieval models, indexes and the recall pipeline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recforge import models
from recforge.data.interactions import Interactions
from recforge.exceptions import DataError


def _dated() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": ["a", "a", "b", "c"],
            "item": ["x", "y", "y", "z"],
            "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-05"]),
        }
    )


def test_most_popular_half_life_on_datetime_timestamps_is_in_seconds():
    df = _dated()
    model = models.get("most_popular", half_life=86_400.0).fit(Interactions(df))
    # latest is 2024-01-05: x is 4 days old, y 3 and 2 days old, z 0 days old
    expected = {"x": 0.5**4, "y": 0.5**3 + 0.5**2, "z": 1.0}
    got = dict(zip(model.item_vocab_.raw_ids, model.item_scores_))
    for item, value in expected.items():
        assert got[item] == pytest.approx(value, rel=1e-6)
    # the same data with numeric seconds gives the same scores
    secs = df.assign(timestamp=(df["timestamp"] - pd.Timestamp(0)).dt.total_seconds())
    numeric = models.get("most_popular", half_life=86_400.0).fit(Interactions(secs))
    np.testing.assert_allclose(numeric.item_scores_, model.item_scores_, rtol=1e-6)


def test_most_popular_half_life_without_timestamp_names_the_column():
    df = _dated().drop(columns="timestamp")
    with pytest.raises(DataError, match="timestamp"):
        models.get("most_popular", half_life=1.0).fit(Interactions(df))


def test_item2vec_session_gap_on_datetime_timestamps_is_in_seconds():
    from recforge.models.retrieval.item2vec import item_sentences

    df = pd.DataFrame(
        {
            "user": ["a", "a", "a"],
            "item": ["x", "y", "z"],
            # 1 hour, then 3 hours apart
            "timestamp": pd.to_datetime(
                ["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 04:00"]
            ),
        }
    )
    data = Interactions(df)
    u = np.zeros(3, dtype=np.int64)
    i = np.arange(3, dtype=np.int64)
    # a 2-hour session gap splits before z only
    assert item_sentences(data, u, i, session_gap=7_200.0) == [["0", "1"], ["2"]]


def test_evaluate_recall_with_no_candidate_for_anyone():
    from recforge.pipeline import RecallPipeline, evaluate_recall
    from tests.conftest import make_tiny_interactions

    pipe = RecallPipeline.from_config(
        {"channels": [{"name": "cf", "model": "itemcf", "quota": 5}], "fallback": None}
    ).fit(make_tiny_interactions())
    cold = Interactions(pd.DataFrame({"user": ["new1", "new2"], "item": [7, 17]}))
    out = evaluate_recall(pipe, cold, ks=(5,))
    assert out["recall@5"] == 0.0 and out["channel_recall@5/cf"] == 0.0
    assert out["n_users"] == 2


@pytest.mark.parametrize("name", ["dssm", "fm_recall"])
def test_side_feature_tables_with_repeated_ids_keep_the_first_row(name):
    """Like the content model: a repeated id in a feature table uses its first row."""
    import torch

    from tests.conftest import make_tiny_interactions

    torch.set_num_threads(1)
    data = make_tiny_interactions()
    dup = Interactions(
        data.frame,
        pd.concat([data.user_features, data.user_features.iloc[:1]]),
        pd.concat([data.item_features, data.item_features.iloc[:2]]),
    )
    params = models.get_class(name).smoke_params
    a = models.get(name, **params).fit(dup)
    b = models.get(name, **params).fit(data)
    np.testing.assert_allclose(a.item_factors_, b.item_factors_, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["deepwalk", "node2vec"])
def test_item_graph_with_an_isolated_last_item(name):
    """An item nobody else's history shares, last in the vocabulary: a zero-degree last row
    of the weighted item graph (np.add.reduceat used to index past the edge array)."""
    from tests.conftest import make_tiny_interactions

    data = make_tiny_interactions()
    lonely = pd.DataFrame(
        {"user": ["lonely"], "item": [99_999], "timestamp": [1e7], "rating": [1.0]}
    )
    extended = Interactions(pd.concat([data.frame, lonely], ignore_index=True))
    model = models.get(
        name, graph="item", vector_size=8, epochs=1, walk_length=5, walks_per_node=2
    ).fit(extended)
    assert model.item_vocab_.raw_ids[-1] == 99_999
    np.testing.assert_array_equal(model.item_factors_[-1], 0.0)  # never walked: zero vector
    ids, _ = model.recommend(["lonely", "u0"], k=3)
    assert ids.shape == (2, 3)


def test_weighted_walk_steps_follow_edge_weights():
    import scipy.sparse as sp

    from recforge.models.retrieval.graph import random_walks

    # node 0 -> 1 (weight 1) or 2 (weight 3); node 3 isolated and last
    adj = sp.csr_matrix(
        np.array([[0, 1, 3, 0], [1, 0, 0, 0], [3, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32)
    )
    walks = random_walks(adj, walk_length=2, walks_per_node=4000, weighted=True, seed=0)
    assert 3 not in walks
    nxt = walks[walks[:, 0] == 0, 1]
    assert abs((nxt == 2).mean() - 0.75) < 0.03


def test_pipeline_with_prefitted_channels_is_not_fitted_until_fallback_and_index_are():
    from recforge.exceptions import NotFittedError
    from recforge.pipeline import RecallPipeline
    from recforge.pipeline.recall import Channel
    from tests.conftest import make_tiny_interactions

    data = make_tiny_interactions()
    als = models.get("als", factors=8, iterations=2, num_threads=1).fit(data)
    # the default fallback is a fresh (unfitted) most_popular; the index is not built yet
    pipe = RecallPipeline([Channel("als", als, quota=5, index={"kind": "flat"})])
    assert not pipe.is_fitted
    with pytest.raises(NotFittedError):
        pipe.recommend(["u0", "someone-new"])
    pipe.fit(data)
    assert pipe.is_fitted and pipe.channels[0].ann_ is not None
    result = pipe.recommend(["u0", "someone-new"], k=5)
    assert [len(x) for x in result.items()] == [5, 5]


def test_ann_recommender_searches_in_bounded_user_batches(monkeypatch):
    """The over-fetch is k + the most items a user in the batch has seen: over every user
    at once, one heavy user made the whole (n_users, fetch) search blow up."""
    from recforge.index import faiss_index
    from tests.conftest import make_tiny_interactions

    data = make_tiny_interactions()
    model = models.get("als", factors=8, iterations=2, num_threads=1).fit(data)
    ann = faiss_index.AnnRecommender(model, {"kind": "flat"})
    users = np.arange(model.n_users)
    expected = ann.recommend_idx(users, k=7)
    exact = model.recommend_idx(users, k=7)
    np.testing.assert_array_equal(expected[0], exact[0])

    monkeypatch.setattr(faiss_index, "_USER_BATCH", 16)
    shapes = []
    search = ann.index.search
    monkeypatch.setattr(ann.index, "search", lambda q, k: shapes.append(q.shape) or search(q, k))
    got = ann.recommend_idx(users, k=7)
    assert max(s[0] for s in shapes) <= 16 and sum(s[0] for s in shapes) == model.n_users
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_search_never_returns_the_excluded_row(metric):
    from recforge.models.retrieval.knn import knn_search

    v = np.random.default_rng(0).normal(size=(5, 3))
    idx, vals = knn_search(v, v, k=10, metric=metric, exclude=np.arange(5))
    assert idx.shape == (5, 4)
    assert not (idx == np.arange(5)[:, None]).any()
    assert np.isfinite(vals).all()
