"""MMoE: the layer against its formula, and the multi-task ranker end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from recforge import models
from recforge.exceptions import ConfigError
from recforge.metrics import auc
from recforge.models.ranking.mmoe import MMoERanker
from recforge.nn.moe import MMoE

torch.set_num_threads(1)


def test_mmoe_layer_matches_formula():
    torch.manual_seed(0)
    moe = MMoE(5, 2, n_experts=3, expert_hidden=(4,), tower_hidden=(3,))
    x = torch.randn(6, 5)
    out = moe(x)
    assert out.shape == (6, 2)
    gates = moe.gate_weights(x)
    assert gates.shape == (6, 2, 3)
    torch.testing.assert_close(gates.sum(-1), torch.ones(6, 2))
    experts = [e(x) for e in moe.experts]  # 3 x (B, 4)
    for t in range(2):
        g = torch.softmax(moe.gates[t](x), dim=-1)
        mixed = sum(g[:, k : k + 1] * experts[k] for k in range(3))
        torch.testing.assert_close(out[:, t], moe.towers[t](mixed).squeeze(-1))


def test_mmoe_single_expert_is_shared_bottom():
    torch.manual_seed(1)
    moe = MMoE(4, 3, n_experts=1, expert_hidden=(5,), tower_hidden=())
    x = torch.randn(2, 4)
    shared = moe.experts[0](x)
    expected = torch.stack([moe.towers[t](shared).squeeze(-1) for t in range(3)], 1)
    torch.testing.assert_close(moe(x), expected)


def two_task_frame(n: int, seed: int) -> pd.DataFrame:
    """click depends on ``cat``, like on ``num``: each task needs a different feature."""
    rng = np.random.default_rng(seed)
    cat = rng.choice(list("abcd"), n)
    num = rng.normal(size=n)
    click = rng.random(n) < 1 / (1 + np.exp(-(2.5 * (cat == "a") - 2.0 * (cat == "d"))))
    like = rng.random(n) < 1 / (1 + np.exp(-2.0 * num))
    return pd.DataFrame(
        {
            "cat": cat,
            "num": num,
            "uid": rng.integers(0, 20, n),
            "click": click.astype(int),
            "like": like.astype(int),
        }
    )


@pytest.fixture(scope="module")
def fitted():
    train, valid, test = two_task_frame(2000, 0), two_task_frame(400, 1), two_task_frame(600, 2)
    model = MMoERanker(
        embedding_dim=4,
        n_experts=3,
        expert_hidden=(16,),
        tower_hidden=(8,),
        epochs=8,
        batch_size=128,
        lr=0.01,
        patience=3,
        seed=0,
    )
    model.fit(train, label=["click", "like"], valid=valid)
    return model, test


def test_mmoe_learns_each_task(fitted):
    model, test = fitted
    p = model.predict_proba(test)
    assert p.shape == (len(test), 2) and np.all((p >= 0) & (p <= 1))
    assert model.tasks_ == ["click", "like"]
    assert auc(test["click"], p[:, 0]) > 0.75
    assert auc(test["like"], p[:, 1]) > 0.75
    # the label columns are not features
    assert {f.name for f in model.encoder_.fields_} == {"cat", "num", "uid"}


def test_mmoe_reports_per_task_metrics(fitted):
    model, _ = fitted
    for epoch in model.train_history_.valid:
        assert {"auc_click", "auc_like", "logloss_click", "logloss_like", "auc"} <= set(epoch)
        assert epoch["auc"] == pytest.approx((epoch["auc_click"] + epoch["auc_like"]) / 2)
    assert model.metrics_["auc_click"] > 0.75 and model.metrics_["auc_like"] > 0.75


def test_mmoe_save_load_roundtrip(fitted, tmp_path):
    model, test = fitted
    loaded = models.load(model.save(tmp_path / "mmoe"))
    assert loaded.tasks_ == ["click", "like"]
    np.testing.assert_allclose(
        loaded.predict_proba(test), model.predict_proba(test), rtol=1e-5, atol=1e-6
    )


def test_mmoe_loss_is_weighted_sum_of_task_bce():
    model = MMoERanker(task_weights=(0.3, 2.0))
    model.tasks_ = ["a", "b"]
    logits, y = torch.randn(7, 2), torch.randint(0, 2, (7, 2)).float()
    expected = 0.3 * F.binary_cross_entropy_with_logits(
        logits[:, 0], y[:, 0]
    ) + 2.0 * F.binary_cross_entropy_with_logits(logits[:, 1], y[:, 1])
    torch.testing.assert_close(model.loss_value(logits, y), expected)


def test_mmoe_single_label_is_a_plain_ranker():
    train = two_task_frame(300, 3)
    model = MMoERanker(**MMoERanker.smoke_params).fit(train, label="click")
    assert model.predict_proba(train).shape == (300,)


def test_mmoe_rejects_bad_configs():
    train = two_task_frame(100, 4)
    with pytest.raises(ConfigError, match="one weight per label"):
        MMoERanker(task_weights=(1.0,), epochs=1).fit(train, label=["click", "like"])
    with pytest.raises(ConfigError, match="sampling"):
        MMoERanker(sampling="under", epochs=1).fit(train, label=["click", "like"])
    with pytest.raises(ConfigError, match="distinct"):
        MMoERanker(epochs=1).fit(train, label=["click", "click"])
