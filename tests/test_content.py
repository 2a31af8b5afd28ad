"""Content model: TF-IDF over titles and category tokens; group words drive similarity."""

from __future__ import annotations

import numpy as np
import pytest

from recforge import models
from recforge.exceptions import ConfigError, DataError
from recforge.models.retrieval.content import item_documents
from tests.conftest import make_tiny_interactions


@pytest.fixture(scope="module")
def data():
    return make_tiny_interactions()


def test_documents_join_text_and_tokens(data):
    docs = item_documents(data.item_features, np.array([7, 17, 99999]), ["title"], ["category"])
    assert docs == ["item 0 red thing category=c0", "item 1 red thing category=c1", ""]


def test_similar_items_share_the_colour_word(data):
    model = models.get("content", encoder="tfidf", dim=16).fit(data)
    assert model.encoder_used_ == "tfidf"
    sims, scores = model.similar_items([7, 397], k=5)  # item 0 red, item 39 blue
    assert (np.asarray(sims[0]) < 200).all() and (np.asarray(sims[1]) >= 200).all()
    assert (scores > 0).all()
    # users are the normalised mean of their items' vectors; even users saw red items
    ids, _ = model.recommend([f"u{u}" for u in range(10)], k=5)
    in_group = [(np.asarray(row) < 200) == (u % 2 == 0) for u, row in enumerate(ids)]
    assert np.mean(in_group) > 0.8
    np.testing.assert_allclose(np.linalg.norm(model.user_factors_, axis=1), 1.0, rtol=1e-5)


def test_items_without_text_get_zero_vectors(data):
    feats = data.item_features.drop(index=[7, 17])
    inter = type(data)(data.frame, None, feats)
    model = models.get("content", encoder="auto", dim=8, token_columns=["category"]).fit(inter)
    zero = model.item_vocab_.index([7, 17])
    assert np.all(model.item_factors_[zero] == 0)
    assert np.all(np.linalg.norm(np.delete(model.item_factors_, zero, axis=0), axis=1) > 0.99)


def test_errors_name_the_problem(data):
    with pytest.raises(DataError, match="description"):
        models.get("content", text_columns=["description"]).fit(data)
    with pytest.raises(DataError, match="item_features"):
        models.get("content").fit(type(data)(data.frame))
    with pytest.raises(ConfigError, match="encoder"):
        models.get("content", encoder="bert").fit(data)
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="not available locally"):
            models.get("content", encoder="sentence_transformers").fit(data)
