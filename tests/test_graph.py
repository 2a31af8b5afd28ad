"""DeepWalk / Node2Vec: walks follow edges, weights and node2vec's bias are honoured."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recforge import models
from recforge.exceptions import ConfigError
from recforge.models.retrieval.graph import bipartite_adjacency, item_adjacency, random_walks
from tests.conftest import make_tiny_interactions


@pytest.fixture(scope="module")
def data():
    return make_tiny_interactions()


def _cycle(n: int) -> sp.csr_matrix:
    rows = np.arange(n)
    a = sp.coo_matrix((np.ones(n), (rows, (rows + 1) % n)), shape=(n, n))
    return (a + a.T).tocsr()


def test_walks_follow_edges(data):
    adj = bipartite_adjacency(data.to_csr())
    walks = random_walks(adj, walk_length=12, walks_per_node=3, p=0.5, q=2.0, seed=1)
    assert walks.shape == (3 * adj.shape[0], 12)
    dense = adj.toarray() > 0
    assert dense[walks[:, :-1], walks[:, 1:]].all()
    # bipartite: steps alternate between users and items
    n_users = data.n_users
    side = walks < n_users
    assert (side[:, 1:] != side[:, :-1]).all()


def test_weighted_steps_follow_edge_weights():
    # star: centre 0 with leaves 1..3 weighted 1, 2, 7
    a = sp.coo_matrix(
        (np.array([1.0, 2.0, 7.0]), (np.zeros(3, int), np.array([1, 2, 3]))), shape=(4, 4)
    )
    adj = (a + a.T).tocsr()
    walks = random_walks(adj, walk_length=2, walks_per_node=20000, weighted=True, seed=0)
    from_centre = walks[walks[:, 0] == 0, 1]
    freq = np.bincount(from_centre, minlength=4)[1:] / len(from_centre)
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.7], atol=0.015)


@pytest.mark.parametrize("p,q", [(0.5, 2.0), (4.0, 0.25), (1.0, 1.0)])
def test_node2vec_return_probability_on_a_cycle(p, q):
    # on a cycle, the next step returns to prev with prob (1/p) / (1/p + 1/q)
    walks = random_walks(_cycle(50), walk_length=30, walks_per_node=40, p=p, q=q, seed=2)
    returned = (walks[:, 2:] == walks[:, :-2]).mean()
    assert returned == pytest.approx((1 / p) / (1 / p + 1 / q), abs=0.01)


def test_item_adjacency_is_cooccurrence(data):
    x = data.to_csr().toarray()
    c = x.T @ x
    np.fill_diagonal(c, 0)
    np.testing.assert_allclose(item_adjacency(sp.csr_matrix(x)).toarray(), c)


@pytest.mark.parametrize(
    "name,graph,norm",
    [("deepwalk", "bipartite", True), ("node2vec", "item", False), ("deepwalk", "item", True)],
)
def test_embeddings_separate_taste_groups(data, name, graph, norm):
    model = models.get(
        name,
        graph=graph,
        walk_length=10,
        walks_per_node=10,
        vector_size=16,
        epochs=3,
        normalize=norm,
    ).fit(data)
    ids, _ = model.recommend([f"u{u}" for u in range(10)], k=5)
    in_group = [(np.asarray(row) < 200) == (u % 2 == 0) for u, row in enumerate(ids)]
    assert np.mean(in_group) > 0.8
    if norm:
        np.testing.assert_allclose(np.linalg.norm(model.item_factors_, axis=1), 1.0, rtol=1e-5)
    sims, _ = model.similar_items([7], k=5)  # item 7 is in group 0 (raw ids < 200)
    assert np.mean(np.asarray(sims[0]) < 200) >= 0.8


def test_reproducible_and_checked(data):
    a = models.get(
        "node2vec", walk_length=6, walks_per_node=2, vector_size=8, epochs=1, seed=3
    ).fit(data)
    b = models.get(
        "node2vec", walk_length=6, walks_per_node=2, vector_size=8, epochs=1, seed=3
    ).fit(data)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    with pytest.raises(ConfigError, match="graph"):
        models.get("deepwalk", graph="tripartite").fit(data)
    with pytest.raises(ConfigError, match="positive"):
        models.get("node2vec", p=0.0).fit(data)
