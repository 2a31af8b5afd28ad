"""SimpleX: the gated user tower, the cosine contrastive loss, taste groups, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recforge import models
from recforge.exceptions import ConfigError
from recforge.models.retrieval.simplex import SimpleX, SimpleXModule, ccl_loss
from tests.conftest import make_tiny_interactions

torch.set_num_threads(1)


def in_group_share(model, k: int = 5) -> float:
    users = [f"u{u}" for u in range(60)]
    ids, _ = model.recommend(users, k=k)
    groups = np.array([int(u[1:]) % 2 for u in users])
    return float((((ids - 7) // 10 >= 20) == groups[:, None]).mean())


@pytest.fixture(scope="module")
def data():
    return make_tiny_interactions()


@pytest.fixture(scope="module")
def fitted(data):
    params = {"embedding_dim": 16, "n_negatives": 20, "negative_weight": 10.0, "margin": 0.3}
    return SimpleX(**params, epochs=30, batch_size=64, lr=0.01, seed=0).fit(data)


def test_gate_mixes_user_embedding_and_history():
    torch.manual_seed(0)
    m = SimpleXModule(3, 5, dim=4, gate=1.0, init_std=0.1)
    users, hist = torch.tensor([0, 2]), torch.tensor([[1, 2, 0], [0, 0, 0]])
    np.testing.assert_allclose(
        m.user_vectors(users, hist).detach().numpy(),
        F.normalize(m.user(users), dim=-1).detach().numpy(),
        rtol=1e-6,
    )
    m.gate = 0.25
    pooled = (m.item.weight[1] + m.item.weight[2]) / 2  # item indices 0, 1 at rows 1, 2
    expected = 0.25 * m.user.weight[0] + 0.75 * m.aggregate(pooled)
    np.testing.assert_allclose(
        m.user_vectors(users[:1], hist[:1]).detach().numpy()[0],
        F.normalize(expected, dim=-1).detach().numpy(),
        rtol=1e-5,
    )


def test_ccl_loss_matches_definition():
    cos_pos = torch.tensor([0.9, 0.2])
    cos_neg = torch.tensor([[0.5, 0.1, 0.95], [0.0, 0.7, 0.3]])
    hit = torch.tensor([[False, False, True], [False, False, False]])
    got = ccl_loss(cos_pos, cos_neg, margin=0.4, negative_weight=2.0, accidental=hit)
    # row 0: (1 - 0.9) + 2 * (0.1 + 0 + 0 [masked]) / 3; row 1: 0.8 + 2 * (0 + 0.3 + 0) / 3
    expected = ((0.1 + 2 * 0.1 / 3) + (0.8 + 2 * 0.3 / 3)) / 2
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_training_lowers_loss_and_finds_taste_groups(fitted):
    assert fitted.train_loss_[-1] < fitted.train_loss_[0]
    np.testing.assert_allclose(np.linalg.norm(fitted.user_factors_, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(fitted.item_factors_, axis=1), 1.0, rtol=1e-5)
    assert in_group_share(fitted) > 0.75


def test_save_load_same_recommendations(fitted, tmp_path):
    users = ["u0", "u9", "u42"]
    ids, scores = fitted.recommend(users, k=5)
    loaded = models.load(fitted.save(tmp_path / "sx"))
    ids2, scores2 = loaded.recommend(users, k=5)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_allclose(scores, scores2, rtol=1e-6)


def test_bad_gate_raises(data):
    with pytest.raises(ConfigError, match="gate"):
        SimpleX(gate=1.5, epochs=1).fit(data)


def test_sparse_training_path_equals_embedding_bag_path():
    import torch

    from recforge.models.retrieval.simplex import SimpleXModule, history_mean_rows

    torch.manual_seed(0)
    m = SimpleXModule(4, 9, dim=6, gate=0.5, init_std=0.5)
    history = np.array([[3, 5, 0, 0], [0, 0, 0, 0], [9, 1, 2, 7], [4, 0, 4, 0]])  # 0 = padding
    users = torch.arange(4)
    dense = m.user_vectors(users, torch.from_numpy(history))
    sparse = m.user_vectors_sparse(users, history_mean_rows(history, 10))
    torch.testing.assert_close(sparse, dense)
    w = torch.randn(4, 6)
    (dense * w).sum().backward()
    g_dense = m.item.weight.grad.clone()
    m.zero_grad()
    (sparse * w).sum().backward()
    torch.testing.assert_close(m.item.weight.grad, g_dense)


def test_settings_by_density(data, tmp_path):
    """None defaults: the sparse settings under 0.2% of cells seen, the dense ones above;
    a value given wins at any density; the choice is saved."""
    from recforge.models.retrieval.simplex import DENSE_SETTINGS, SPARSE_SETTINGS, sparse_dim

    assert SimpleX()._settings(0.0004, 70_000) == SPARSE_SETTINGS
    assert (
        SimpleX()._settings(0.03)
        == DENSE_SETTINGS
        == {
            "loss": "ccl",
            "n_negatives": 300,
            "gate": 0.5,
            "init_std": 0.1,
            "embedding_dim": 64,
        }
    )
    assert SPARSE_SETTINGS["embedding_dim"] == 512
    # the width narrows on logs of many users + items, never under the dense logs' 64
    assert [sparse_dim(n) for n in (34_000, 70_000, 131_072, 131_073, 400_000, 10**6)] == [
        512,
        512,
        512,
        256,
        128,
        64,
    ]
    assert SimpleX()._settings(0.0004, 10**6)["embedding_dim"] == 64
    assert SimpleX(embedding_dim=32)._settings(0.0004, 70_000)["embedding_dim"] == 32
    assert SimpleX(gate=0.3, loss="ccl")._settings(0.0004, 70_000) == {
        **SPARSE_SETTINGS,
        "gate": 0.3,
        "loss": "ccl",
    }
    m = SimpleX(embedding_dim=8, epochs=1, n_negatives=8).fit(data)  # tiny data: dense
    assert m.settings_ == {**DENSE_SETTINGS, "n_negatives": 8, "embedding_dim": 8}
    assert m.item_factors_.shape[1] == 8
    dense = SimpleX(epochs=1, n_negatives=8).fit(data)  # the width by density: 64 here
    assert dense.settings_["embedding_dim"] == 64 and dense.item_factors_.shape[1] == 64
    with pytest.raises(ConfigError, match="embedding_dim"):
        SimpleX(embedding_dim=0, epochs=1).fit(data)
    assert models.load(m.save(tmp_path / "sx")).settings_ == m.settings_


def test_history_only_gate_scores_history_as_recommend(data):
    m = SimpleX(embedding_dim=8, epochs=2, n_negatives=8, gate=0.0, loss="softmax").fit(data)
    hist = np.flatnonzero(m.seen_[3].toarray()[0])
    np.testing.assert_allclose(
        m.score_history(hist), m.item_factors_ @ m.user_factors_[3], atol=1e-5
    )


def test_softmax_loss_finds_taste_groups_and_saves_its_settings(data, tmp_path):
    params = {"embedding_dim": 16, "n_negatives": 20, "loss": "softmax", "dropout": 0.1}
    m = SimpleX(**params, epochs=30, batch_size=64, lr=0.01, seed=0).fit(data)
    assert m.train_loss_[-1] < m.train_loss_[0]
    assert in_group_share(m) > 0.75
    loaded = models.load(m.save(tmp_path / "sx"))
    assert (loaded.loss, loaded.n_negatives) == ("softmax", 20)
    np.testing.assert_allclose(loaded.item_factors_, m.item_factors_)


def test_bad_loss_raises(data):
    with pytest.raises(ConfigError, match="loss"):
        SimpleX(loss="hinge", epochs=1).fit(data)


def test_embedding_l2_is_half_the_mean_squared_rows_of_the_batch():
    from recforge.models.retrieval.simplex import embedding_l2

    torch.manual_seed(0)
    m = SimpleXModule(3, 5, dim=4, gate=0.5, init_std=0.1)
    users, pos, neg = torch.tensor([0, 2]), torch.tensor([1, 4]), torch.tensor([0, 3, 3])
    u, i = m.user.weight.detach(), m.item.weight.detach()  # item i at row i + 1
    expected = (
        (u[[0, 2]] ** 2).sum(1).mean()
        + (i[[2, 5]] ** 2).sum(1).mean()
        + (i[[1, 4, 4]] ** 2).sum(1).mean()
    ) / 2
    got = float(embedding_l2(m, users, pos, neg).detach())
    assert got == pytest.approx(float(expected), rel=1e-6)


def test_l2_adds_to_the_loss_and_cosine_schedule_decays_the_lr(data):
    base = {"embedding_dim": 16, "n_negatives": 20, "epochs": 4, "batch_size": 64, "lr": 0.01}
    plain = SimpleX(**base).fit(data)
    reg = SimpleX(**base, l2=1.0).fit(data)
    assert reg.train_loss_[0] > plain.train_loss_[0]  # the penalty is in the loss
    cos = SimpleX(**base, lr_schedule="cosine", warmup_steps=3).fit(data)
    lrs = cos.train_history_.lr  # the lr at each epoch's last step
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 0.001 < lrs[0] < 0.01
    assert plain.train_history_.lr == [0.01] * 4
    with pytest.raises(ConfigError, match="lr_schedule"):
        SimpleX(**base, lr_schedule="step").fit(data)
    with pytest.raises(ConfigError, match="l2"):
        SimpleX(**base, l2=-1.0).fit(data)


@pytest.mark.parametrize("gate", [0.0, 0.5])
def test_gate_0_leaves_the_user_table_out(gate):
    """At gate 0 the user vector is the mapped history alone: the same vectors as the gated
    formula, and the user table gets no gradient (no optimizer step on it)."""
    import torch
    from torch.nn import functional as F

    from recforge.models.retrieval.simplex import SimpleXModule, history_mean_rows

    torch.manual_seed(0)
    m = SimpleXModule(4, 9, dim=6, gate=gate, init_std=0.5)
    history = np.array([[3, 5, 0, 0], [0, 0, 0, 0], [9, 1, 2, 7], [4, 0, 4, 0]])  # 0 = padding
    users = torch.arange(4)
    u = m.user_vectors_sparse(users, history_mean_rows(history, 10))
    pooled = F.embedding_bag(torch.from_numpy(history), m.item.weight, mode="mean", padding_idx=0)
    gated = F.normalize(gate * m.user(users) + (1 - gate) * m.aggregate(pooled), dim=-1)
    torch.testing.assert_close(u, gated)
    m.zero_grad(set_to_none=True)
    u.sum().backward()
    assert (m.user.weight.grad is None) == (gate == 0.0)
