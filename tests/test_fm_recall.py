"""FM-recall: the two-tower identity with the full FM score, training, taste groups,
save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recforge import models
from recforge.exceptions import ConfigError
from recforge.models.retrieval.fm_recall import FMRecall, self_interaction
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
    return FMRecall(embedding_dim=16, epochs=30, batch_size=64, lr=0.02, seed=0).fit(data)


def test_self_interaction_is_the_pairwise_sum():
    x = torch.randn(3, 4, 5)
    pairs = sum((x[:, f] * x[:, g]).sum(-1) for f in range(4) for g in range(f + 1, 4))
    np.testing.assert_allclose(self_interaction(x).numpy(), pairs.numpy(), rtol=1e-5, atol=1e-5)


def test_dot_product_equals_fm_score_up_to_a_user_constant(fitted):
    m = fitted.module_
    # the model used features on both sides: id + (gender, age) / id + (category, price, title)
    assert m.users.features is not None and m.items.features is not None
    items = torch.arange(fitted.n_items)
    for u in (0, 7, 31):
        with torch.no_grad():
            fm = m.fm_score(torch.full((fitted.n_items,), u), items).numpy().astype(np.float64)
        dot = fitted.user_factors_[u].astype(np.float64) @ fitted.item_factors_.T.astype(np.float64)
        diff = fm - dot
        np.testing.assert_allclose(diff, diff[0], atol=1e-4)  # the same for every item
        np.testing.assert_array_equal(
            np.argsort(-fm, kind="stable")[:10], np.argsort(-dot, kind="stable")[:10]
        )
        # and the constant is the user-only part: bias + user linear + user self-interaction
        with torch.no_grad():
            uu = torch.tensor([u])
            const = m.bias + m.users.linear(uu) + self_interaction(m.users.fields(uu))
        assert diff[0] == pytest.approx(float(const), abs=1e-4)
    assert fitted.user_factors_.shape == (fitted.n_users, 17)
    np.testing.assert_array_equal(fitted.user_factors_[:, -1], 1.0)


def test_training_lowers_loss_and_finds_taste_groups(fitted):
    assert fitted.train_loss_[-1] < 0.7 * fitted.train_loss_[0]
    assert in_group_share(fitted) > 0.75


def test_sampled_softmax_loss_trains(data):
    m = FMRecall(
        embedding_dim=16, loss="sampled_softmax", n_negatives=16, epochs=15, batch_size=64, lr=0.02
    ).fit(data)
    assert m.train_loss_[-1] < m.train_loss_[0]
    assert in_group_share(m) > 0.65


def test_save_load_same_recommendations(fitted, tmp_path):
    users = ["u0", "u9", "u42"]
    ids, scores = fitted.recommend(users, k=5)
    loaded = models.load(fitted.save(tmp_path / "fm"))
    ids2, scores2 = loaded.recommend(users, k=5)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_allclose(scores, scores2, rtol=1e-6)


def test_bad_loss_raises(data):
    with pytest.raises(ConfigError, match="loss"):
        FMRecall(loss="in_batch", epochs=1).fit(data)
