"""The text encoder trained here: its tokenizer, cold items recommended from their text,
the Faiss path, save/load (tokenizer as JSON), and the sentence-transformers option of the
content model loading a tiny model this test builds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recforge import models
from recforge.data.interactions import Interactions
from recforge.exceptions import ConfigError, DataError
from recforge.models.retrieval.text_encoder import load_tokenizer, tokenize, train_tokenizer
from tests.conftest import make_tiny_interactions

COLD = [37, 257]  # item 3 (red) and item 25 (blue): nobody interacts with them in training
PARAMS = {
    "embedding_dim": 16,
    "hidden_dim": 16,
    "n_layers": 1,
    "vocab_size": 80,
    "epochs": 12,
    "batch_size": 64,
    "lr": 5e-3,
    "token_columns": ["category"],
    "num_threads": 1,
}


@pytest.fixture(scope="module")
def data():
    full = make_tiny_interactions()
    frame = full.frame[~full.frame["item"].isin(COLD)].reset_index(drop=True)
    return Interactions(frame, full.user_features, full.item_features, name="tiny-cold")


@pytest.fixture(scope="module")
def model(data):
    return models.get("text_encoder", **PARAMS).fit(data)


def test_tokenizer_keeps_field_tokens_whole_and_round_trips_as_json():
    docs = ["Toy Story (1995) genres=animation", "Heat (1995) genres=action genres=crime"] * 5
    tok = train_tokenizer(docs, vocab_size=200, max_len=7)
    enc = tok.encode("Toy Story (1995) genres=animation")
    assert enc.tokens == ["[CLS]", "toy", "story", "(", "1995", ")", "genres=animation"]
    ids, lengths = tokenize(load_tokenizer(tok.to_str()), [*docs[:2], ""], max_len=7)
    assert ids.shape == (3, 7) and lengths.tolist() == [7, 7, 0]  # 2nd truncated; empty: none
    assert ids[0].tolist() == enc.ids and (ids[2] == 0).all()


def test_cold_items_are_in_the_catalogue_and_recommended_to_their_group(data, model):
    assert set(COLD) <= set(model.item_vocab_.raw_ids)
    assert model.n_items == 40 and np.all(model.seen_[:, model.item_vocab_.index(COLD)].sum(0) == 0)
    norms = np.linalg.norm(model.item_factors_, axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)  # every item has text, so a vector
    users = [f"u{u}" for u in range(60)]
    u_idx = model.user_vocab_.index(users)
    red, blue = model.item_vocab_.index(COLD)
    scores = model.score_users(u_idx)
    prefers_red = scores[:, red] > scores[:, blue]
    # even users saw red items, odd users blue ones: the cold item of their colour wins
    assert np.mean(prefers_red == (np.arange(60) % 2 == 0)) > 0.8
    ids, _ = model.recommend(users, k=10)
    assert any(37 in row for row in ids[::2]) and any(257 in row for row in ids[1::2])
    assert model.train_loss_[-1] < model.train_loss_[0]


def test_served_through_faiss_like_the_other_embedding_models(model):
    from recforge.index import AnnRecommender

    ann = AnnRecommender(model, {"kind": "flat", "metric": "ip"})
    users = ["u0", "u1", "u4"]
    got, got_scores = ann.recommend(users, k=5)
    want, want_scores = model.recommend(users, k=5)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-6)
    assert (got == want).mean() > 0.9  # ties may swap


def test_save_load_keeps_the_encoder_for_new_items(data, model, tmp_path):
    loaded = models.load(model.save(tmp_path / "te"))
    assert isinstance(loaded.tokenizer_json_, str) and loaded.tokenizer_json_.startswith("{")
    raw, vecs = loaded.encode_items(data.item_features)
    np.testing.assert_allclose(vecs, model.item_factors_[model.item_vocab_.index(raw)], atol=1e-5)
    new = pd.DataFrame(
        {"title": ["item 99 red thing", ""], "category": ["c1", None]},
        index=pd.Index([9999, 9998], name="item"),
    )
    _, new_vecs = loaded.encode_items(new)
    assert np.isclose(np.linalg.norm(new_vecs[0]), 1.0) and not new_vecs[1].any()  # no text: 0


def test_without_feature_items_the_catalogue_is_the_interacted_items(data):
    m = models.get("text_encoder", **{**PARAMS, "epochs": 1}, feature_items=False).fit(data)
    assert m.n_items == 38 and not set(COLD) & set(m.item_vocab_.raw_ids)


def test_tfidf_content_can_hold_cold_items_too(data):
    m = models.get("content", encoder="tfidf", dim=8, feature_items=True).fit(data)
    assert set(COLD) <= set(m.item_vocab_.raw_ids) and m.seen_.shape == (60, 40)


def test_errors_name_the_field(data):
    with pytest.raises(ConfigError, match="pooling"):
        models.get("text_encoder", pooling="max").fit(data)
    with pytest.raises(ConfigError, match="n_heads"):
        models.get("text_encoder", hidden_dim=10, n_heads=3).fit(data)
    empty = data.item_features.assign(title="")
    with pytest.raises(DataError, match="empty"):
        models.get("text_encoder").fit(type(data)(data.frame, None, empty))


def test_sentence_transformers_option_loads_a_local_model(data, tmp_path):
    """The content model's sentence-encoder path, on a tiny BERT this test builds and
    saves itself (nothing is downloaded)."""
    st = pytest.importorskip("sentence_transformers")
    transformers = pytest.importorskip("transformers")
    from recforge.models.retrieval.content import item_documents

    docs = item_documents(data.item_features, data.item_features.index.to_numpy(), ["title"], [])
    tok = train_tokenizer(docs, vocab_size=60, max_len=16)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]"
    )
    config = transformers.BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    bert_dir = tmp_path / "bert"
    transformers.BertModel(config).save_pretrained(bert_dir)
    fast.save_pretrained(bert_dir)
    st_dir = tmp_path / "st"  # a plain BERT directory loads as Transformer + mean pooling
    st.SentenceTransformer(str(bert_dir), device="cpu").save(str(st_dir))

    model = models.get("content", encoder="sentence_transformers", encoder_model=str(st_dir)).fit(
        data
    )
    assert model.encoder_used_ == "sentence_transformers"
    assert model.item_factors_.shape == (data.frame["item"].nunique(), 16)
    np.testing.assert_allclose(np.linalg.norm(model.item_factors_, axis=1), 1.0, rtol=1e-4)


def test_cold_benchmark_removes_every_interaction_of_its_cold_items():
    from benchmarks import content_cold

    full = make_tiny_interactions()
    train, targets = content_cold.cold_split(full)
    cold = np.concatenate([targets["test"]["items"], targets["valid"]["items"]])
    assert len(targets["test"]["items"]) == 6 and len(targets["valid"]["items"]) == 4
    assert not train.frame["item"].isin(cold).any()
    model = models.get("content", encoder="tfidf", dim=8, feature_items=True).fit(train)
    got = content_cold.evaluate(model.user_factors_, model.item_factors_, model, targets["test"])
    assert 0 < got["recall"] <= 1 and 0 < got["ndcg"] <= 1 and got["users"] > 0


def test_history_samples_exclude_the_target_and_stay_in_the_users_items():
    import scipy.sparse as sp

    from recforge.models.retrieval.text_encoder import history_examples, sample_histories

    seen = sp.csr_matrix(np.array([[1, 1, 0, 1], [0, 1, 0, 0], [1, 0, 1, 0]], np.float32))
    ex = history_examples(seen)  # user 1 has one item: no target
    assert ex.tolist() == [[0, 0], [0, 1], [0, 2], [2, 0], [2, 1]]
    target, hist = sample_histories(seen, ex, 16, np.random.default_rng(0))
    assert target.tolist() == [0, 1, 3, 0, 2]
    for (u, _), t, h in zip(ex, target, hist):
        assert t not in h and set(h) <= set(seen[u].indices)


def test_pairs_objective_and_the_tfidf_part_survive_save_load(data, tmp_path):
    m = models.get(
        "text_encoder", **{**PARAMS, "epochs": 2}, objective="pairs", tfidf_weight=0.5, tfidf_dim=8
    ).fit(data)
    assert m.item_factors_.shape[1] == 16 + 8
    loaded = models.load(m.save(tmp_path / "te"))
    raw, vecs = loaded.encode_items(data.item_features)
    np.testing.assert_allclose(vecs, m.item_factors_[m.item_vocab_.index(raw)], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ConfigError, match="tfidf_weight"):
        models.get("text_encoder", tfidf_weight=1.0).fit(data)


def test_two_fits_with_one_seed_give_the_same_vectors(data, model):
    """Subword ids and their initial embeddings do not depend on the tokenizer trainer's
    hash order (which changes between fits), so a seed pins the fit."""
    again = models.get("text_encoder", **PARAMS).fit(data)
    np.testing.assert_allclose(again.item_factors_, model.item_factors_, atol=1e-5)
