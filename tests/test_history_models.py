"""The history rankers (DIN, DIEN, DSIN, BST): they read the history they are told to,
only its most recent history_len behaviours, learn from it, and say what is missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recforge import metrics, models
from recforge.exceptions import ConfigError, DataError
from recforge.models.ranking.dsin import split_sessions
from tests.conftest import make_tiny_ctr

HISTORY_MODELS = ["din", "dien", "dsin", "bst"]


def build(name, **extra):
    cls = models.get_class(name)
    return models.get(name, **{**cls.smoke_params, **extra})


@pytest.fixture(scope="module")
def frames():
    df = make_tiny_ctr(1600, seed=7, history=True)
    return df.iloc[:1200].reset_index(drop=True), df.iloc[1200:].reset_index(drop=True)


@pytest.fixture(scope="module", params=HISTORY_MODELS)
def fitted(request, frames):
    train, _ = frames
    model = build(request.param, epochs=6, batch_size=128, lr=5e-3, embedding_dim=8)
    return model.fit(train, label="label")


def test_history_models_learn_from_the_history(fitted, frames):
    train, test = frames
    auc = metrics.auc(test["label"], fitted.predict_proba(test))
    assert auc > 0.62, f"{type(fitted).__name__} test AUC {auc:.3f}"
    # the same rows with every history emptied score differently: the history is read
    blank = test.assign(
        hist_item=[[] for _ in range(len(test))],
        hist_cat=[[] for _ in range(len(test))],
        hist_session=[np.zeros(0, dtype=np.int64) for _ in range(len(test))],
    )
    assert not np.allclose(fitted.predict_proba(blank), fitted.predict_proba(test))


def test_only_the_most_recent_behaviours_count(fitted, frames):
    _, test = frames
    long = test[test["hist_item"].map(len) >= 3].head(20).reset_index(drop=True)
    n = 5  # smoke history_len
    pad_item, pad_cat = [11] * 4, ["d"] * 4  # behaviours older than the kept ones
    older = long.assign(
        hist_item=[pad_item + h for h in long["hist_item"]],
        hist_cat=[pad_cat + h for h in long["hist_cat"]],
        hist_session=[
            np.r_[np.zeros(4, np.int64), np.asarray(s) + 1] for s in long["hist_session"]
        ],
    )
    cut = long.assign(
        hist_item=[(pad_item + h)[-n:] for h in long["hist_item"]],
        hist_cat=[(pad_cat + h)[-n:] for h in long["hist_cat"]],
        hist_session=[
            np.r_[np.zeros(4, np.int64), np.asarray(s) + 1][-n:] for s in long["hist_session"]
        ],
    )
    np.testing.assert_allclose(fitted.predict_proba(older), fitted.predict_proba(cut), rtol=1e-5)


def test_dien_adds_its_auxiliary_loss(frames):
    train, _ = frames
    model = build("dien")
    enc = model.make_encoder(train).fit(train, "label")
    from recforge.nn.inputs import to_tensors

    x = to_tensors(model.encode(enc, train.head(64)))
    y = torch.tensor(train["label"].head(64).to_numpy(), dtype=torch.float32)
    module = model.build_module(enc.fields_).train()
    torch.manual_seed(0)
    with_aux = model.training_loss(module, x, y)
    model.aux_weight = 0.0
    torch.manual_seed(0)
    without = model.training_loss(module, x, y)
    assert with_aux > without  # the next-behaviour BCE is positive


def test_split_sessions_keeps_the_recent_sessions_and_behaviours():
    seq = torch.arange(1, 8, dtype=torch.float32).view(1, 7, 1)  # behaviours 1..7
    session = torch.tensor([[0, 0, 0, 1, 2, 2, 0]])
    mask = torch.tensor([[True] * 6 + [False]])
    out, valid, kept = split_sessions(seq, session, mask, n_sessions=2, length=1)
    # sessions {1,2,3} {4} {5,6}: the last two, each with its last behaviour
    assert out.squeeze(-1).tolist() == [[[4.0], [6.0]]] and kept.tolist() == [2]
    out, valid, kept = split_sessions(seq, session, mask, n_sessions=4, length=2)
    assert out.squeeze(-1).tolist() == [[[2.0, 3.0], [4.0, 0.0], [5.0, 6.0], [0.0, 0.0]]]
    assert valid.sum().item() == 5 and kept.tolist() == [3]


def test_missing_history_columns_say_what_to_pass(frames):
    train, _ = frames
    plain = train.drop(columns=["hist_item", "hist_cat", "hist_session"])
    with pytest.raises(DataError, match="history="):
        build("din").fit(plain, label="label")
    with pytest.raises(DataError, match="hist_nope"):
        build("din", history={"hist_nope": "item"}).fit(train, label="label")
    with pytest.raises(DataError, match="session_gap"):
        build("dsin").fit(train.drop(columns=["hist_session"]), label="label")
    with pytest.raises(ConfigError, match="n_heads"):
        build("bst", n_heads=3).fit(train, label="label")
    with pytest.raises(ConfigError, match="unknown parameter"):
        models.get("din", histroy={"hist_item": "item"})


def test_history_pairs_are_explicit_or_inferred(frames):
    train, test = frames
    only_items = build("din", history={"hist_item": "item"}, epochs=1).fit(train, label="label")
    names = [f.name for f in only_items.encoder_.fields_]
    assert "hist_item" in names and "hist_session" not in names
    assert "hist_cat" in names  # not paired: an ordinary (pooled) multi-valued feature
    assert np.isfinite(only_items.predict_proba(test)).all()
