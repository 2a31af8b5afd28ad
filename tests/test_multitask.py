"""PLE and ESMM: the layers against their formulas, the rankers end to end on a click ->
conversion pair of labels, and the synthetic generator's conversion stage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from recforge import models
from recforge.data.synth import make_ctr_frame, make_synthetic
from recforge.exceptions import ConfigError, DataError
from recforge.metrics import auc
from recforge.models.ranking.esmm import ESMMRanker
from recforge.models.ranking.ple import PLERanker
from recforge.nn.moe import PLE, CGCLevel

torch.set_num_threads(1)


def test_cgc_task_gate_sees_only_own_and_shared_experts():
    torch.manual_seed(0)
    level = CGCLevel(
        5, 2, n_specific=2, n_shared=1, expert_hidden=(4,), dropout=0.0, shared_out=True
    )
    x = torch.randn(6, 5)
    out, shared = level([x, x], x)
    assert len(out) == 2 and out[0].shape == (6, 4) and shared.shape == (6, 4)
    s = level.shared[0](x)
    for t in range(2):
        own = [e(x) for e in level.specific[t]]
        g = torch.softmax(level.task_gates[t](x), dim=-1)  # (B, 3)
        expected = g[:, :1] * own[0] + g[:, 1:2] * own[1] + g[:, 2:3] * s
        torch.testing.assert_close(out[t], expected)
    every = [e(x) for t in range(2) for e in level.specific[t]] + [s]
    g = torch.softmax(level.shared_gate(x), dim=-1)  # (B, 5)
    torch.testing.assert_close(shared, sum(g[:, k : k + 1] * every[k] for k in range(5)))


def test_ple_top_level_has_no_shared_gate_and_outputs_task_logits():
    ple = PLE(6, 3, n_levels=3, n_specific=1, n_shared=2, expert_hidden=(5,), tower_hidden=())
    assert [lvl.shared_gate is None for lvl in ple.levels] == [False, False, True]
    assert ple(torch.randn(4, 6)).shape == (4, 3)
    with pytest.raises(ValueError, match="n_specific"):
        PLE(6, 2, n_specific=0, n_shared=0)


def conversion_frame(n: int, seed: int) -> pd.DataFrame:
    """click depends on ``cat``; conversion given a click on ``num`` (so CVR needs a feature
    CTR does not)."""
    rng = np.random.default_rng(seed)
    cat = rng.choice(list("abcd"), n)
    num = rng.normal(size=n)
    click = rng.random(n) < 1 / (1 + np.exp(-(2.0 * (cat == "a") - 2.0 * (cat == "d"))))
    convert = click & (rng.random(n) < 1 / (1 + np.exp(-2.5 * num)))
    return pd.DataFrame(
        {"cat": cat, "num": num, "click": click.astype(int), "conversion": convert.astype(int)}
    )


def fit(cls, seed=0):
    train, valid = conversion_frame(3000, seed), conversion_frame(500, seed + 1)
    params = dict(embedding_dim=4, epochs=8, batch_size=128, lr=0.01, patience=3, seed=0)
    extra = {"hidden": (16,)} if cls is ESMMRanker else {"expert_hidden": (16,)}
    return cls(**params, **extra).fit(train, label=["click", "conversion"], valid=valid)


@pytest.fixture(scope="module")
def esmm():
    return fit(ESMMRanker)


def test_esmm_learns_ctr_ctcvr_and_cvr(esmm):
    test = conversion_frame(1500, 9)
    p = esmm.predict_proba(test)
    assert p.shape == (len(test), 2)
    assert np.all(p[:, 1] <= p[:, 0] + 1e-6)  # pCTCVR = pCTR * pCVR <= pCTR
    assert auc(test["click"], p[:, 0]) > 0.75
    assert auc(test["conversion"], p[:, 1]) > 0.75
    cvr = esmm.predict_cvr(test)
    np.testing.assert_allclose(p[:, 1], p[:, 0] * cvr, rtol=1e-4, atol=1e-6)
    clicked = (
        test["click"] == 1
    )  # CVR ranks the clicked rows by conversion (never trained on them alone)
    assert auc(test.loc[clicked, "conversion"], cvr[clicked.to_numpy()]) > 0.75
    assert {"auc_click", "auc_conversion"} <= set(esmm.metrics_)


def test_esmm_loss_is_ctr_bce_plus_ctcvr_bce_on_the_product():
    torch.manual_seed(0)
    model = ESMMRanker(**ESMMRanker.smoke_params)
    model.tasks_ = ["click", "conversion"]
    train = conversion_frame(200, 3)
    model.fit(train, label=["click", "conversion"])
    module = model.module_
    from recforge.nn.inputs import to_tensors

    x = to_tensors(model.encoder_.transform(train))
    y = torch.tensor(train[["click", "conversion"]].to_numpy(), dtype=torch.float32)
    with torch.no_grad():
        a, b = module.towers(x)
        p_ctr, p_ctcvr = torch.sigmoid(a), torch.sigmoid(a) * torch.sigmoid(b)
        expected = F.binary_cross_entropy(p_ctr, y[:, 0]) + F.binary_cross_entropy(p_ctcvr, y[:, 1])
        torch.testing.assert_close(model.loss_value(module(x), y), expected, rtol=1e-4, atol=1e-5)


def test_esmm_rejects_conversion_without_click_and_three_labels():
    bad = conversion_frame(100, 4)
    bad.loc[bad["click"] == 0, "conversion"] = 1
    with pytest.raises(DataError, match="clicked and converted"):
        ESMMRanker(epochs=1).fit(bad, label=["click", "conversion"])
    bad["x"] = 0
    with pytest.raises(ConfigError, match="two columns"):
        ESMMRanker(epochs=1).fit(bad, label=["click", "conversion", "x"])


def test_ple_learns_both_tasks_and_round_trips(tmp_path):
    model = fit(PLERanker)
    test = conversion_frame(1500, 9)
    p = model.predict_proba(test)
    assert auc(test["click"], p[:, 0]) > 0.75 and auc(test["conversion"], p[:, 1]) > 0.75
    loaded = models.load(model.save(tmp_path / "ple"))
    np.testing.assert_allclose(loaded.predict_proba(test), p, rtol=1e-5, atol=1e-6)


def test_synthetic_conversion_stage():
    inter = make_synthetic(n_users=80, n_items=60, n_interactions=800, seed=1)
    frame = make_ctr_frame(inter, n_negatives=2, conversion_min_rating=4)
    assert set(frame["conversion"].unique()) <= {0, 1}
    assert (frame["conversion"] <= frame["label"]).all()  # never converts without a click
    rate = frame.loc[frame["label"] == 1, "conversion"].mean()
    assert 0.2 < rate < 0.8
    assert "conversion" not in make_ctr_frame(inter, n_negatives=2).columns
