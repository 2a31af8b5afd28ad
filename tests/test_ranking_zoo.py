"""The CTR model zoo beyond the contract: GBDT+LR and LightGBM internals, and that every
interaction model learns a signal on tiny data and composes its layers as documented."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recforge import models
from recforge.metrics import auc
from recforge.models.ranking.gbdt import GBDTLR, LightGBMRanker, tree_matrix
from tests.conftest import make_tiny_ctr

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ctr():
    df = make_tiny_ctr(1200, seed=3)
    return (
        df.iloc[:800].reset_index(drop=True),
        df.iloc[800:1000].reset_index(drop=True),
        df.iloc[1000:],
    )


def test_tree_matrix_layout(ctr):
    train, _, _ = ctr
    model = LightGBMRanker(n_estimators=5).fit(train)
    enc = model.encoder_
    x = tree_matrix(enc, enc.transform(train.head(3)))
    n_tags = enc.fields_of("multi")[0].vocab_size - 1
    assert x.shape == (3, enc.n_categorical + enc.n_numeric + n_tags)
    tags = enc.transform(train.head(3)).multi["tags"]
    hot = x[:, enc.n_categorical + enc.n_numeric :].toarray()
    for row, codes in zip(hot, tags):
        assert set(np.flatnonzero(row) + 1) == set(codes[codes > 0].tolist())


def test_lightgbm_learns_and_saves_text_format(ctr, tmp_path):
    train, valid, test = ctr
    model = LightGBMRanker(n_estimators=200, num_leaves=7, early_stopping_rounds=10).fit(
        train, valid=valid
    )
    p = model.predict_proba(test)
    assert auc(test["label"], p) > 0.75
    assert model.metrics_["n_trees"] < 200  # early stopping kept the best iterations only
    path = model.save(tmp_path / "m")
    state = json.loads((path / "state.json").read_text())
    assert state["booster"].startswith("tree\n")  # LightGBM's text model format
    np.testing.assert_allclose(models.load(path).predict_proba(test), p)


def test_gbdt_lr_one_hot_leaves_and_logit(ctr):
    train, valid, test = ctr
    model = GBDTLR(n_estimators=8, num_leaves=5, early_stopping_rounds=0, C=1.0).fit(
        train, valid=valid
    )
    x = model._features(test)
    onehot = model._leaf_onehot(x)
    n_trees = model.booster_.num_trees()
    assert onehot.shape == (len(test), model.n_leaves_)
    np.testing.assert_array_equal(onehot.sum(axis=1).A.ravel(), n_trees)  # one leaf per tree
    leaves = model.booster_.predict(x, pred_leaf=True)
    for t in range(n_trees):  # column = tree offset + leaf index
        lo = model.leaf_offsets_[t]
        hi = model.leaf_offsets_[t + 1] if t + 1 < n_trees else model.n_leaves_
        np.testing.assert_array_equal(onehot[:, lo:hi].toarray().argmax(1), leaves[:, t])
    logit = np.array([model.coef_[model.leaf_offsets_ + leaves[i]].sum() for i in range(len(test))])
    np.testing.assert_allclose(model.decision_function(test), logit + model.intercept_)
    assert auc(test["label"], model.predict_proba(test)) > 0.75


def test_gbdt_rejects_non_binary_labels(ctr):
    train, _, _ = ctr
    bad = train.assign(label=train["label"] * 3)
    with pytest.raises(ValueError, match="labels must be 0/1"):
        LightGBMRanker(n_estimators=3).fit(bad)


TORCH_ZOO = {
    "dcn": {"n_cross": 2, "hidden": (16,)},
    "dcnv2": {"n_cross": 2, "hidden": (16,)},
    "dcnv2_mix": {
        "n_cross": 2,
        "hidden": (16,),
        "low_rank": 4,
        "n_experts": 2,
        "structure": "stacked",
    },
    "xdeepfm": {"cin_layers": (8, 8), "hidden": (16,)},
    "autoint": {"n_layers": 2, "head_dim": 4},
    "nfm": {"hidden": (16,)},
    "afm": {"attention_dim": 8},
}


@pytest.mark.parametrize("name", sorted(TORCH_ZOO))
def test_torch_zoo_learns_signal(name, ctr):
    train, valid, test = ctr
    params = {
        "embedding_dim": 4,
        "epochs": 6,
        "batch_size": 128,
        "lr": 0.01,
        "patience": 2,
        "seed": 0,
    }
    model = models.get(name.removesuffix("_mix"), **params, **TORCH_ZOO[name]).fit(
        train, valid=valid
    )
    assert auc(test["label"], model.predict_proba(test)) > 0.72


def _batch(model, frame):
    from recforge.nn.inputs import to_tensors

    return to_tensors(model.encoder_.transform(frame))


def test_compositions_follow_their_formulas(ctr):
    from recforge.nn.bi_interaction import BiInteraction

    train, _, test = ctr
    params = {"embedding_dim": 4, "epochs": 1, "batch_size": 128}
    nfm = models.get("nfm", hidden=(), **params).fit(train)
    dcn = models.get("dcn", hidden=(8,), n_cross=2, **params).fit(train)
    afm = models.get("afm", attention_dim=4, **params).fit(train)
    with torch.no_grad():
        m = nfm.module_.eval()
        b = _batch(nfm, test)
        e, first = m.embedding.forward_with_linear(b)  # (B, F, D), (B,)
        expected = first + m.mlp(BiInteraction()(e)).squeeze(-1)  # linear + h·f_BI(E)
        torch.testing.assert_close(m(b), expected)

        m = dcn.module_.eval()
        b = _batch(dcn, test)
        x0 = m.embedding.deep_input(m.embedding(b), b)  # flatten(E) (+ dense numerics)
        expected = m.head(torch.cat([m.cross(x0), m.mlp(x0)], 1)).squeeze(-1)
        torch.testing.assert_close(m(b), expected)

        m = afm.module_.eval()
        b = _batch(afm, test)
        e, first = m.embedding.forward_with_linear(b)
        pooled, weights = m.pooling(e)
        torch.testing.assert_close(weights.sum(1), torch.ones(len(test)))
        torch.testing.assert_close(m(b), first + pooled @ m.proj.weight[0])


def test_ctr_quality_split_and_docs_section(tmp_path):
    import pandas as pd

    from benchmarks import ctr_quality as cq

    frame = pd.DataFrame({"label": np.arange(100) % 2, "x": np.arange(100)})
    train, valid, test = cq.split(frame)
    assert (len(train), len(valid), len(test)) == (80, 10, 10)
    assert sorted(pd.concat([train, valid, test])["x"]) == list(range(100))
    assert cq.split(frame)[2]["x"].tolist() == test["x"].tolist()  # fixed seed
    rows = [
        {"model": "lr", "ours": {"auc": 0.90}, "deepctr": {"auc": 0.91}},
        {"model": "fm", "ours": {"auc": 0.95}, "deepctr": {"auc": 0.951}},
        {"model": "deepfm", "ours": {"auc": 0.97}},
    ]
    checks = cq._checks("frappe", rows)
    assert checks["behind_peer_by_more_than_0.003"] == ["lr"] and checks["lr<fm<deepfm"]
    doc = tmp_path / "B.md"
    doc.write_text(
        "# Benchmarks\n\n## Other\n\nkeep me\n\n## Ranking quality\n\nold\n\n## Last\n\nkeep too\n"
    )
    cq.update_docs("## Ranking quality\n\nnew table\n", doc)
    text = doc.read_text()
    assert "new table" in text and "old" not in text and "keep me" in text and "keep too" in text
