"""Core CTR models (LR, FM, FFM, DeepFM, Wide&Deep, FNN, IPNN, OPNN): quality on held-out
rows, model-specific behaviour, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from recforge import models
from recforge.exceptions import ConfigError
from recforge.models.ranking.fm import FMModule
from recforge.nn.inputs import to_tensors
from tests.conftest import make_tiny_ctr

CORE = ["lr", "fm", "ffm", "deepfm", "wide_deep", "fnn", "ipnn", "opnn"]
DEEP = {"deepfm", "wide_deep", "fnn", "ipnn", "opnn"}


@pytest.fixture(scope="module")
def split():
    torch.set_num_threads(1)
    df = make_tiny_ctr(2000, seed=5)
    return df.iloc[:1500].reset_index(drop=True), df.iloc[1500:].reset_index(drop=True)


def _params(name: str) -> dict:
    p = {"embedding_dim": 4, "epochs": 5, "batch_size": 128, "lr": 1e-2, "seed": 0}
    if name in DEEP:
        p["hidden"] = (16,)
    return p


@pytest.mark.parametrize("name", CORE)
def test_heldout_auc_is_clearly_above_chance(name, split):
    train, test = split
    model = models.get(name, **_params(name)).fit(train, valid=test)
    auc = roc_auc_score(test["label"], model.predict_proba(test))
    assert auc > 0.7, f"{name}: held-out AUC {auc:.3f}"  # all reach 0.77-0.79 here
    assert len(model.train_history_.train_loss) == 5
    assert model.train_history_.train_loss[-1] < model.train_history_.train_loss[0]
    assert abs(model.train_history_.valid[-1]["auc"] - auc) < 1e-6


@pytest.mark.parametrize("name", CORE)
def test_get_params_lists_own_and_shared_hyperparameters(name):
    model = models.get(name, seed=3, embedding_dim=5)
    params = model.get_params()
    assert params["seed"] == 3 and params["embedding_dim"] == 5
    for shared in ("epochs", "lr", "optimizer", "l2", "sampling", "sparse"):
        assert shared in params
    if name in DEEP:
        assert "hidden" in params


def test_fm_init_std_sets_the_embedding_init_and_survives_save_load(split, tmp_path):
    train, _ = split
    model = models.get("fm", init_std=1e-4, **{**_params("fm"), "epochs": 1})
    table = model.build_module(model.make_encoder(train).fit(train).fields_).embedding.table
    assert float(table.weight.detach()[:, :-1].std()) == pytest.approx(1e-4, rel=0.3)
    model.fit(train)
    model.save(tmp_path / "fm")
    assert models.load(tmp_path / "fm").get_params()["init_std"] == 1e-4
    with pytest.raises(ConfigError, match="init_std"):
        models.get("fm", init_std=0.0, epochs=1).fit(train)


def test_misspelt_keyword_is_an_error():
    with pytest.raises(TypeError):
        models.get_class("deepfm")(hiden=(3,))


def test_fnn_init_copies_fm_tables(split, monkeypatch):
    train, _ = split
    captured = {}
    orig = FMModule.forward

    def spy(self, batch):
        captured["fm"] = self
        return orig(self, batch)

    monkeypatch.setattr(FMModule, "forward", spy)
    # a negligible FNN learning rate keeps the tables where the FM pre-training left them
    fnn = models.get(
        "fnn",
        embedding_dim=4,
        hidden=(8,),
        epochs=1,
        fm_epochs=2,
        fm_lr=1e-2,
        lr=1e-12,
        optimizer="sgd",
        batch_size=256,
    ).fit(train)
    fm = captured["fm"]
    # one table: the factors and, in its last column, the first-order weights
    torch.testing.assert_close(fnn.module_.embedding.table.weight, fm.embedding.table.weight)
    torch.testing.assert_close(fnn.module_.embedding.linear_bias, fm.embedding.linear_bias)
    # the FM was initialised from other random draws, so equality means the tables were copied


def test_wide_deep_cross_products_save_and_load(split, tmp_path):
    train, test = split
    model = models.get(
        "wide_deep",
        embedding_dim=4,
        hidden=(8,),
        epochs=2,
        batch_size=128,
        lr=1e-2,
        crosses=[["cat", "uid"]],
        cross_buckets=257,
    ).fit(train)
    w = model.module_.cross.weight.weight
    assert (w != 0).sum() > 20  # crossed pairs learned their own weights
    p = model.predict_proba(test)
    loaded = models.load(model.save(tmp_path / "wd"))
    np.testing.assert_allclose(loaded.predict_proba(test), p, rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match="two categorical fields"):
        models.get("wide_deep", crosses=[["cat", "num"]], epochs=1).fit(train)


def test_ipnn_inner_products_match_explicit_pairs():
    from recforge.models.ranking.pnn import InnerProduct, OuterProduct

    e = torch.randn(3, 4, 5)
    p = InnerProduct(4)(e)
    expected = torch.stack(
        [(e[:, i] * e[:, j]).sum(-1) for i in range(4) for j in range(i + 1, 4)], 1
    )
    torch.testing.assert_close(p, expected)
    o = OuterProduct(5)(e)
    s = e.sum(1)
    torch.testing.assert_close(o.view(3, 5, 5), torch.einsum("bi,bj->bij", s, s))


def test_ffm_pairwise_term_matches_explicit_sum(split):
    train, _ = split
    model = models.get("ffm", embedding_dim=3, epochs=1, batch_size=256).fit(train)
    x = to_tensors(model.encoder_.transform(train.iloc[:7]))
    m = model.module_
    e, first = m.embedding.forward_with_linear(x)  # (B, F, F*D), (B,)
    B, F, _ = e.shape
    e = e.reshape(B, F, F, 3)
    explicit = sum((e[:, i, j] * e[:, j, i]).sum(-1) for i in range(F) for j in range(i + 1, F))
    torch.testing.assert_close(m(x), first + explicit)


def test_sparse_embeddings_train_like_dense(split):
    train, test = split
    aucs = {}
    for sparse in (False, True):
        m = models.get(
            "deepfm",
            embedding_dim=4,
            hidden=(16,),
            epochs=5,
            batch_size=128,
            lr=1e-2,
            sparse=sparse,
        )
        m.fit(train)
        aucs[sparse] = roc_auc_score(test["label"], m.predict_proba(test))
    assert aucs[True] > 0.7 and abs(aucs[True] - aucs[False]) < 0.03
