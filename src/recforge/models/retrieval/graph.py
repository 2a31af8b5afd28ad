"""Graph embeddings from random walks: DeepWalk (Perozzi et al. 2014) and Node2Vec
(Grover & Leskovec 2016), over the user-item bipartite graph or the item co-occurrence graph.

Walks are generated in NumPy over a CSR adjacency: every walker advances one step at a
time as one array operation. A weighted step draws the next node with probability
proportional to the edge weight by a ``searchsorted`` into the cumulative edge weights.
Node2Vec's second-order bias (return parameter ``p``, in-out parameter ``q``) is applied by
rejection sampling, vectorised: all walkers propose a neighbour, each proposal ``x`` after
``prev -> cur`` is accepted with probability ``alpha(x) / max(1/p, 1, 1/q)`` where
``alpha = 1/p`` if ``x == prev``, ``1`` if ``x`` is a neighbour of ``prev``, ``1/q``
otherwise, and only the rejected walkers propose again.

Walks are sentences for ``gensim.models.Word2Vec`` (skip-gram). Graphs:

* ``"bipartite"``: nodes are users then items, an edge per seen (user, item). Users get
  their own node vectors.
* ``"item"``: items only, edge weight = number of users who saw both (``X^T X``, zero
  diagonal). Users get the mean of their items' vectors.

Scores follow Item2Vec's ``score``: ``"output"`` (default) is the user's input vector (the
user node's, or the mean of their items' on the item graph) · the item's word2vec output
vector, i.e. skip-gram's own prediction of the item in the user's walk context; ``"input"``
uses input vectors on both sides (classic DeepWalk embeddings). With ``normalize=True``
vectors are L2-normalised (dot product = cosine). ``similar_items`` is the cosine between
item input vectors. Nodes without edges, and nodes below ``min_count``, get zero vectors.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recforge.data.interactions import Interactions
from recforge.exceptions import ConfigError
from recforge.models.base import EmbeddingMixin, RetrievalModel
from recforge.models.registry import register
from recforge.models.retrieval.item2vec import (
    check_score,
    cosine_neighbours,
    l2_normalize,
    mean_item_vectors,
    word2vec_vectors,
)
from recforge.threads import reproducible_threads

log = logging.getLogger(__name__)

GRAPHS = ("bipartite", "item")


# ---------------------------------------------------------------------------- graphs
def bipartite_adjacency(seen: sp.csr_matrix) -> sp.csr_matrix:
    """Symmetric (U + I, U + I) adjacency of a (U, I) interaction matrix; users first."""
    x = sp.csr_matrix(seen, dtype=np.float32)
    adj = sp.bmat([[None, x], [x.T, None]], format="csr")
    adj.sort_indices()
    return adj


def item_adjacency(seen: sp.csr_matrix) -> sp.csr_matrix:
    """(I, I) co-occurrence counts ``X^T X`` with a zero diagonal, X binarised."""
    x = sp.csr_matrix(seen, dtype=np.float32)
    x.data[:] = 1.0
    c = (x.T @ x).tocsr()
    c.setdiag(0)
    c.eliminate_zeros()
    c.sort_indices()
    return c


# ---------------------------------------------------------------------------- walks
class _Sampler:
    """Vectorised neighbour sampling on a CSR graph (uniform or by edge weight)."""

    def __init__(self, adj: sp.csr_matrix, weighted: bool) -> None:
        self.indptr = adj.indptr.astype(np.int64)
        self.indices = adj.indices.astype(np.int64)
        self.deg = np.diff(self.indptr)
        self.weighted = weighted
        if weighted:
            data = adj.data.astype(np.float64)
            self.cum = np.cumsum(data)  # (nnz,)
            self.row_start = np.r_[0.0, self.cum][self.indptr[:-1]]  # cum weight before row
            # from the same cumulative sums (reduceat fails on a trailing empty row)
            self.row_sum = np.r_[0.0, self.cum][self.indptr[1:]] - self.row_start
            self.row_sum[self.deg == 0] = 0.0
        n = len(self.deg)
        # sorted (row * n + col) keys for edge-membership tests
        rows = np.repeat(np.arange(n, dtype=np.int64), self.deg)
        self.n = n
        self.keys = rows * n + self.indices

    def step(self, cur: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One neighbour of each node in ``cur`` (all with degree > 0). (W,) -> (W,)."""
        r = rng.random(len(cur))
        if self.weighted:
            target = self.row_start[cur] + r * self.row_sum[cur]
            pos = np.searchsorted(self.cum, target, side="right")
            pos = np.clip(pos, self.indptr[cur], self.indptr[cur + 1] - 1)
        else:
            pos = self.indptr[cur] + (r * self.deg[cur]).astype(np.int64)
        return self.indices[pos]

    def is_edge(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Whether (a[w], b[w]) is an edge, for each w. (W,), (W,) -> (W,) bool."""
        key = a * self.n + b
        pos = np.searchsorted(self.keys, key)
        pos = np.minimum(pos, len(self.keys) - 1)
        return self.keys[pos] == key


def random_walks(
    adj: sp.csr_matrix,
    *,
    walk_length: int,
    walks_per_node: int,
    p: float = 1.0,
    q: float = 1.0,
    weighted: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """Random walks from every node with at least one edge.

    adj: (N, N) symmetric CSR adjacency. ``p = q = 1`` is DeepWalk (first order); other
    values apply Node2Vec's bias by rejection sampling. Returns (n_walks, walk_length)
    int64 node ids, n_walks = walks_per_node * (nodes with degree > 0).
    """
    if walk_length < 1 or walks_per_node < 1:
        raise ConfigError(
            f"walk_length and walks_per_node must be >= 1, got {walk_length}, {walks_per_node}."
        )
    if p <= 0 or q <= 0:
        raise ConfigError(f"node2vec p and q must be positive, got p={p}, q={q}.")
    rng = np.random.default_rng(seed)
    s = _Sampler(adj, weighted)
    starts = np.flatnonzero(s.deg > 0)
    starts = np.tile(starts, walks_per_node)
    rng.shuffle(starts)
    walks = np.empty((len(starts), walk_length), dtype=np.int64)  # (W, L)
    if len(starts) == 0:
        return walks
    walks[:, 0] = starts
    second_order = not (p == 1.0 and q == 1.0)
    a_ret, a_in, a_out = 1.0 / p, 1.0, 1.0 / q
    a_max = max(a_ret, a_in, a_out)
    for t in range(1, walk_length):
        cur = walks[:, t - 1]
        if not second_order or t == 1:
            walks[:, t] = s.step(cur, rng)
            continue
        prev = walks[:, t - 2]
        nxt = np.empty_like(cur)
        todo = np.arange(len(cur))  # walkers still waiting for an accepted proposal
        while todo.size:
            x = s.step(cur[todo], rng)
            pv = prev[todo]
            alpha = np.where(x == pv, a_ret, np.where(s.is_edge(pv, x), a_in, a_out))
            ok = rng.random(todo.size) * a_max < alpha
            nxt[todo[ok]] = x[ok]
            todo = todo[~ok]
        walks[:, t] = nxt
    return walks


# ---------------------------------------------------------------------------- models
class _WalkEmbedding(EmbeddingMixin, RetrievalModel):
    """Shared fit: graph -> walks -> word2vec -> user and item vectors."""

    _p: float
    _q: float

    def __init__(
        self,
        *,
        graph: str = "bipartite",
        walk_length: int = 20,
        walks_per_node: int = 10,
        vector_size: int = 64,
        window: int = 5,
        negative: int = 5,
        epochs: int = 5,
        alpha: float = 0.025,
        min_count: int = 1,
        weighted: bool = True,
        score: str = "output",
        normalize: bool = False,
        seed: int = 0,
        num_threads: int | None = None,
    ) -> None:
        self.graph = graph
        self.walk_length = walk_length
        self.walks_per_node = walks_per_node
        self.vector_size = vector_size
        self.window = window
        self.negative = negative
        self.epochs = epochs
        self.alpha = alpha
        self.min_count = min_count
        self.weighted = weighted
        self.score = score
        self.normalize = normalize
        self.seed = seed
        self.num_threads = num_threads

    def _fit(self, interactions: Interactions) -> None:
        if self.graph not in GRAPHS:
            raise ConfigError(f"{self.name}: graph must be one of {GRAPHS}, got {self.graph!r}.")
        check_score(self.score, 0, self.name)
        if self.graph == "bipartite":
            adj = bipartite_adjacency(self.seen_)
        else:
            adj = item_adjacency(self.seen_)
        walks = random_walks(
            adj,
            walk_length=self.walk_length,
            walks_per_node=self.walks_per_node,
            p=self._p,
            q=self._q,
            weighted=self.weighted and self.graph == "item",
            seed=self.seed,
        )
        log.info(
            "%s: %d walks of length %d over %d nodes",
            self.name,
            len(walks),
            self.walk_length,
            adj.shape[0],
        )
        inp, out = word2vec_vectors(
            walks.astype(str).tolist(),
            adj.shape[0],
            vector_size=self.vector_size,
            window=self.window,
            min_count=self.min_count,
            sg=1,
            hs=0,
            negative=self.negative,
            epochs=self.epochs,
            alpha=self.alpha,
            sample=0.0,
            seed=self.seed,
            workers=reproducible_threads(self.num_threads, self.seed, self.name),
        )
        first_item = self.n_users if self.graph == "bipartite" else 0
        item_in = inp[first_item:]
        items = out[first_item:] if self.score == "output" else item_in
        if self.graph == "bipartite":
            users = inp[: self.n_users]
        else:
            users = mean_item_vectors(
                self.seen_, l2_normalize(item_in) if self.normalize else item_in
            )
        if self.normalize:
            users, items = l2_normalize(users), l2_normalize(items)
        self.item_input_ = np.ascontiguousarray(item_in)  # (n_items, vector_size) for similar_items
        self.user_factors_ = np.ascontiguousarray(users)  # (n_users, vector_size)
        self.item_factors_ = np.ascontiguousarray(items)  # (n_items, vector_size)

    def similar_items_idx(self, item_idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Cosine between item input vectors, the item itself excluded."""
        return cosine_neighbours(self.item_input_, item_idx, k)

    def _save_state(self):  # type: ignore[no-untyped-def]
        arrays, state = super()._save_state()
        arrays["item_input"] = self.item_input_
        return arrays, state

    def _load_state(self, arrays, state):  # type: ignore[no-untyped-def]
        super()._load_state(arrays, state)
        self.item_input_ = arrays["item_input"]


_GRAPH_DOC = """
    Parameters
    ----------
    graph: "bipartite" (users and items are nodes) or "item" (item co-occurrence graph).
    walk_length: nodes per walk.
    walks_per_node: walks started from every node with an edge.
    vector_size, window, negative, epochs, alpha, min_count: word2vec (skip-gram) settings.
    weighted: on the item graph, step with probability proportional to co-occurrence counts.
    score: "output" (user input vector · item output vector) or "input" (module docstring).
    normalize: L2-normalise vectors so that scores are cosines.
    seed: seed of walks and word2vec; with ``num_threads`` None or 1 a fit is reproducible.
    num_threads: word2vec threads (None: 1, so that ``seed`` fixes the result; more threads
        train faster but differ run to run).
"""


@register("deepwalk")
class DeepWalk(_WalkEmbedding):
    __doc__ = "DeepWalk: uniform (first-order) random walks + skip-gram.\n" + _GRAPH_DOC

    _p = 1.0
    _q = 1.0
    smoke_params: ClassVar[dict[str, Any]] = {
        "walk_length": 8,
        "walks_per_node": 4,
        "vector_size": 8,
        "epochs": 2,
        "num_threads": 1,
    }


@register("node2vec")
class Node2Vec(_WalkEmbedding):
    __doc__ = (
        "Node2Vec: second-order biased walks + skip-gram.\n"
        + _GRAPH_DOC
        + "    p: return parameter (small p: walks backtrack often).\n"
        + "    q: in-out parameter (q < 1: explore outward, DFS-like; q > 1: stay local).\n"
    )

    smoke_params: ClassVar[dict[str, Any]] = {
        "walk_length": 8,
        "walks_per_node": 4,
        "vector_size": 8,
        "epochs": 2,
        "num_threads": 1,
        "p": 0.5,
        "q": 2.0,
    }

    def __init__(
        self,
        *,
        p: float = 1.0,
        q: float = 0.5,
        graph: str = "bipartite",
        walk_length: int = 20,
        walks_per_node: int = 10,
        vector_size: int = 64,
        window: int = 5,
        negative: int = 5,
        epochs: int = 5,
        alpha: float = 0.025,
        min_count: int = 1,
        weighted: bool = True,
        score: str = "output",
        normalize: bool = False,
        seed: int = 0,
        num_threads: int | None = None,
    ) -> None:
        super().__init__(
            graph=graph,
            walk_length=walk_length,
            walks_per_node=walks_per_node,
            vector_size=vector_size,
            window=window,
            negative=negative,
            epochs=epochs,
            alpha=alpha,
            min_count=min_count,
            weighted=weighted,
            score=score,
            normalize=normalize,
            seed=seed,
            num_threads=num_threads,
        )
        self.p = p
        self.q = q

    @property
    def _p(self) -> float:  # type: ignore[override]
        return float(self.p)

    @property
    def _q(self) -> float:  # type: ignore[override]
        return float(self.q)
