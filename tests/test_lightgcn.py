"""LightGCN: propagation against a dense computation, training, taste groups, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recforge import models
from recforge.data.batching import PairSampler, uniform_negatives
from recforge.models.retrieval.lightgcn import (
    LightGCN,
    LightGCNModule,
    normalized_adjacency,
    to_torch_sparse,
)
from tests.conftest import make_tiny_interactions

torch.set_num_threads(1)


def in_group_share(model, data, k: int = 5) -> float:
    """Mean share of each user's top k that lies in the user's taste group."""
    users = [f"u{u}" for u in range(60)]
    ids, _ = model.recommend(users, k=k)
    groups = np.array([int(u[1:]) % 2 for u in users])
    item_group = (ids - 7) // 10 >= 20
    return float((item_group == groups[:, None]).mean())


@pytest.fixture(scope="module")
def data():
    return make_tiny_interactions()


@pytest.fixture(scope="module")
def fitted(data):
    return LightGCN(embedding_dim=16, n_layers=2, epochs=40, batch_size=128, lr=0.02, seed=1).fit(
        data
    )


def test_normalized_adjacency_and_propagation_match_dense():
    r = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1]], dtype=np.float32))  # 2 users, 3 items
    a_hat = normalized_adjacency(r).toarray()
    a = np.zeros((5, 5))
    a[:2, 2:] = r.toarray()
    a[2:, :2] = r.toarray().T
    d = a.sum(1)
    expected = a / np.sqrt(np.outer(d, d))
    np.testing.assert_allclose(a_hat, expected, rtol=1e-6)
    # e.g. user 0 (degree 2) - item 1 (degree 2): 1/2
    assert a_hat[0, 3] == pytest.approx(0.5)

    torch.manual_seed(0)
    m = LightGCNModule(
        2, 3, dim=4, n_layers=3, adj=to_torch_sparse(normalized_adjacency(r)), init_std=1.0
    )
    e0 = m.embedding.weight.detach().numpy().astype(np.float64)
    layers = [e0]
    for _ in range(3):
        layers.append(expected @ layers[-1])
    dense = np.mean(layers, axis=0)
    with torch.no_grad():
        np.testing.assert_allclose(m.propagate().numpy(), dense, rtol=1e-5, atol=1e-6)


def test_isolated_node_has_zero_row():
    r = sp.csr_matrix(np.array([[1, 0], [0, 0]], dtype=np.float32))
    a_hat = normalized_adjacency(r).toarray()
    assert np.all(a_hat[1] == 0) and np.all(np.isfinite(a_hat))


def test_uniform_negatives_avoid_seen(data):
    model = LightGCN(**LightGCN.smoke_params).fit(data)
    sampler = PairSampler(model.seen_)
    users = np.repeat(np.arange(model.n_users), 20)
    neg = uniform_negatives(sampler, users, 3, np.random.default_rng(0))
    assert neg.shape == (len(users), 3)
    assert not sampler.is_seen(np.repeat(users[:, None], 3, 1), neg).any()


def test_training_lowers_loss_and_finds_taste_groups(fitted, data):
    loss = fitted.train_loss_
    assert len(loss) == 40 and loss[-1] < 0.6 * loss[0]
    assert fitted.user_factors_.shape == (fitted.n_users, 16)
    assert fitted.item_factors_.shape == (fitted.n_items, 16)
    assert fitted.user_factors_.dtype == np.float32
    assert in_group_share(fitted, data) > 0.8


def test_save_load_same_recommendations(fitted, tmp_path):
    users = ["u0", "u3", "u10"]
    ids, scores = fitted.recommend(users, k=5)
    loaded = models.load(fitted.save(tmp_path / "lgcn"))
    ids2, scores2 = loaded.recommend(users, k=5)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_allclose(scores, scores2, rtol=1e-6)
    np.testing.assert_array_equal(
        loaded.similar_items([7], k=3)[0], fitted.similar_items([7], k=3)[0]
    )


def test_bad_params_raise(data):
    from recforge.exceptions import ConfigError

    with pytest.raises(ConfigError, match="n_layers"):
        LightGCN(n_layers=-1, epochs=1).fit(data)


def test_symmetric_spmm_gradient_matches_dense():
    from recforge.models.retrieval.torch_base import sparse_mm

    r = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [1, 0, 0]], dtype=np.float32))
    a_hat = normalized_adjacency(r)
    adj = to_torch_sparse(a_hat)
    dense = torch.from_numpy(a_hat.toarray())
    x = torch.randn(6, 4, requires_grad=True)
    w = torch.randn(6, 4)
    (sparse_mm(adj, adj, sparse_mm(adj, adj, x)) * w).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    ((dense @ (dense @ x2)) * w).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), x2.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_scaled_batch_grows_with_the_log():
    from recforge.models.retrieval.torch_base import scaled_batch

    assert scaled_batch(30_000, 2048, 5e-3, 32768) == (2048, 5e-3)  # small: unchanged
    batch, lr = scaled_batch(512_000, 2048, 5e-3, 32768)
    assert batch == 32768 and lr == pytest.approx(0.02)  # 16x the batch, 4x the lr
    assert scaled_batch(512_000, 2048, 5e-3, 2048)[0] == 2048  # capped: fixed batch


def test_early_stopping_holds_out_cells_then_uses_the_whole_graph(monkeypatch):
    from recforge.data.synth import make_synthetic
    from recforge.models.retrieval import torch_base
    from recforge.models.retrieval.torch_base import carve_validation

    monkeypatch.setattr(torch_base, "VALID_ROWS", 100)  # 100 held-out cells from 5,000 pairs

    data = make_synthetic(n_users=300, n_items=200, n_interactions=8000, seed=1)
    model = models.get(
        "lightgcn", embedding_dim=8, n_layers=1, epochs=4, patience=1, num_threads=1
    ).fit(data)
    seen = model.seen_
    assert len(model.train_history_.valid) >= 2  # the carved rows were validated each epoch
    assert "recall@10" in model.train_history_.valid[0]
    train, users, items = carve_validation(seen, 50, seed=0)
    assert train.nnz == seen.nnz - 50 and len(np.unique(users)) == 50
    assert np.all(np.asarray(seen[users, items]).ravel() > 0)
    assert np.all(np.asarray(train[users, items]).ravel() == 0)
    off = models.get("lightgcn", embedding_dim=8, n_layers=1, epochs=2, patience=0).fit(data)
    assert off.train_history_.valid == []
