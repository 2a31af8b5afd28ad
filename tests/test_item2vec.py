"""Item2Vec: sentences, sessions, recency weights, gensim equivalence and signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from gensim.models import Word2Vec

from recforge import models
from recforge.data import Interactions
from recforge.exceptions import ConfigError
from recforge.models.retrieval.item2vec import item_sentences
from tests.conftest import make_tiny_interactions


@pytest.fixture(scope="module")
def data():
    return make_tiny_interactions()


def test_sentences_follow_time_and_split_sessions():
    df = pd.DataFrame(
        {
            "user": ["a", "a", "a", "b", "a"],
            "item": [1, 2, 3, 4, 5],
            "timestamp": [30, 10, 20, 5, 100],
        }
    )
    inter = Interactions(df)
    u = np.array([0, 0, 0, 1, 0])
    i = np.array([0, 1, 2, 3, 4])
    assert item_sentences(inter, u, i) == [["1", "2", "0", "4"], ["3"]]
    assert item_sentences(inter, u, i, session_gap=50) == [["1", "2", "0"], ["4"], ["3"]]


def test_vectors_equal_gensim_with_same_sentences(data):
    model = models.get("item2vec", vector_size=8, epochs=3, seed=5).fit(data)
    u = model.user_vocab_.index(data.frame["user"].to_numpy())
    i = model.item_vocab_.index(data.frame["item"].to_numpy())
    sentences = item_sentences(data, u, i)
    ref = Word2Vec(
        sentences,
        vector_size=8,
        window=5,
        min_count=1,
        sg=1,
        hs=0,
        negative=5,
        epochs=3,
        seed=5,
        workers=1,
    )
    np.testing.assert_allclose(model.item_input_[3], ref.wv["3"], rtol=1e-5)
    # score="output": items are word2vec's output vectors, users the mean input vector
    out = ref.syn1neg[ref.wv.key_to_index["3"]]
    np.testing.assert_allclose(model.item_factors_[3], out, rtol=1e-5)
    row = model.seen_[0].indices
    mean = model.item_input_[row].mean(0)
    np.testing.assert_allclose(model.user_factors_[0], mean, rtol=1e-5, atol=1e-6)
    inp = models.get("item2vec", vector_size=8, epochs=3, seed=5, score="input").fit(data)
    np.testing.assert_allclose(inp.item_factors_, model.item_input_, rtol=1e-5)


def test_min_count_gives_zero_vectors_and_recency_weighting(data):
    model = models.get("item2vec", vector_size=8, epochs=2, min_count=1000).fit(data)
    assert np.all(model.item_factors_ == 0)
    rec = models.get("item2vec", vector_size=8, epochs=2, recency_decay=0.5, similarity="dot").fit(
        data
    )
    plain = models.get("item2vec", vector_size=8, epochs=2, similarity="dot").fit(data)
    np.testing.assert_allclose(rec.item_factors_, plain.item_factors_)
    assert not np.allclose(rec.user_factors_, plain.user_factors_)
    # user u0: latest item has weight 1, the one before 0.5, ...
    items = data.frame[data.frame["user"] == "u0"].sort_values("timestamp")["item"].to_numpy()
    idx = rec.item_vocab_.index(items)[::-1]
    w = 0.5 ** np.arange(len(idx))
    expected = (w[:, None] * rec.item_input_[idx]).sum(0) / w.sum()
    np.testing.assert_allclose(
        rec.user_factors_[rec.user_vocab_.index(["u0"])[0]], expected, rtol=1e-5, atol=1e-6
    )


def test_similar_items_stay_in_group_and_params_checked(data):
    model = models.get("item2vec", vector_size=16, epochs=30, window=10, hs=1, score="input").fit(
        data
    )
    sims, _ = model.similar_items([7, 217], k=5)  # item 7 is group 0 (< 200), 217 group 1
    assert np.mean(np.asarray(sims[0]) < 200) >= 0.8
    assert np.mean(np.asarray(sims[1]) >= 200) >= 0.8
    with pytest.raises(ConfigError, match="similarity"):
        models.get("item2vec", similarity="euclid").fit(data)
    with pytest.raises(ConfigError, match="negative"):
        models.get("item2vec", hs=0, negative=0).fit(data)
    with pytest.raises(ConfigError, match="hs=0"):
        models.get("item2vec", hs=1).fit(data)  # score="output" needs negative sampling
