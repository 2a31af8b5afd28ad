"""LightGCN (He et al., SIGIR 2020): collaborative filtering by linear graph propagation.

Users and items are nodes of the bipartite interaction graph with adjacency
``A = [[0, R], [R^T, 0]]`` (R the (n_users, n_items) 0/1 training matrix), normalised
symmetrically ``Â = D^-1/2 A D^-1/2``. From ego embeddings ``E^(0)`` (one row per node),
``E^(k+1) = Â E^(k)`` for K layers, and the final embedding is the layer mean
``E = (E^(0) + ... + E^(K)) / (K + 1)``. A user-item score is ``e_u . e_i``.

Training: BPR on (user, positive, uniform unseen negative) triples plus
``l2 * (|e_u^(0)|^2 + |e_i^(0)|^2 + |e_j^(0)|^2) / 2`` averaged over the batch (the ego
embeddings the batch used, as in the paper).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from recforge.data.batching import PairSampler, uniform_negatives
from recforge.data.interactions import Interactions
from recforge.exceptions import ConfigError
from recforge.models.registry import register
from recforge.models.retrieval.torch_base import (
    EpochBatches,
    TorchRetrievalModel,
    early_stopping_split,
    scaled_batch,
    sparse_mm,
    torch_csr,
)

log = logging.getLogger(__name__)


def normalized_adjacency(seen: sp.csr_matrix) -> sp.csr_matrix:
    """``D^-1/2 A D^-1/2`` of the bipartite graph of ``seen`` (n_users, n_items):
    a symmetric (n_users + n_items)² float32 CSR matrix; isolated nodes keep zero rows."""
    r = sp.csr_matrix(seen, dtype=np.float32).copy()
    r.data[:] = 1.0
    a = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv = np.zeros_like(deg)
    inv[deg > 0] = deg[deg > 0] ** -0.5
    d = sp.diags(inv)
    return sp.csr_matrix(d @ a @ d, dtype=np.float32)


def to_torch_sparse(m: sp.spmatrix) -> torch.Tensor:
    """A SciPy matrix as a torch sparse CSR float32 tensor (``torch_base.torch_csr``)."""
    return torch_csr(m)


class LightGCNModule(nn.Module):
    """Ego embeddings of n_users + n_items nodes and K propagation layers over ``adj``."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        n_layers: int,
        adj: torch.Tensor,
        init_std: float,
    ) -> None:
        super().__init__()
        self.n_users, self.n_items, self.n_layers = n_users, n_items, n_layers
        self.embedding = nn.Embedding(n_users + n_items, dim)
        nn.init.normal_(self.embedding.weight, std=init_std)
        self.adj = adj  # not a parameter or buffer: rebuilt from the data, never saved

    def propagate(self) -> torch.Tensor:
        """Layer-mean embeddings of every node: (n_users + n_items, D)."""
        e = self.embedding.weight
        total = e
        for _ in range(self.n_layers):
            e = sparse_mm(self.adj, self.adj, e)  # (N, D); Â is symmetric
            total = total + e
        return total / (self.n_layers + 1)


@register("lightgcn")
class LightGCN(TorchRetrievalModel):
    """LightGCN trained with BPR.

    Parameters
    ----------
    embedding_dim: size of the node embeddings.
    n_layers: propagation layers K (0 = matrix factorisation with BPR).
    l2: weight of the L2 penalty on the ego embeddings a batch used.
    n_negatives: uniform unseen negatives per positive (the BPR loss averages over them).
    init_std: std of the normal initialisation of the ego embeddings.
    batch_size, lr: the batch and learning rate on small logs; on larger ones the batch
        doubles up to ``max_batch_size`` while an epoch keeps >= 10 steps, and lr grows
        with its square root (``scaled_batch``; fitted values in ``batch_size_``, ``lr_``).
        Set ``max_batch_size=batch_size`` for a fixed batch.
    patience: early stopping: stop after this many epochs without a better validation
        recall@10 and keep the best epoch's weights (0: train all ``epochs``). The
        validation rows are ``fit(valid=...)``'s, or else one training item of each of
        2,000 users held out of the graph while training (back in it for the final
        embeddings); logs under 100,000 pairs train all epochs.
    epochs, optimizer, weight_decay, seed, num_threads, progress: training
        (shared by the torch retrieval models, see ``TorchRetrievalModel``); ``epochs`` is
        the upper bound when early stopping.
    """

    smoke_params = {"embedding_dim": 8, "n_layers": 2, "epochs": 3, "batch_size": 64, "lr": 0.01}

    train_defaults = {"epochs": 60, "batch_size": 2048, "lr": 5e-3}

    def __init__(
        self,
        *,
        n_layers: int = 3,
        l2: float = 1e-4,
        n_negatives: int = 1,
        init_std: float = 0.1,
        max_batch_size: int = 32768,
        patience: int = 5,
        **shared: Any,
    ) -> None:
        super().__init__(**(self.train_defaults | shared))
        self.n_layers = n_layers
        self.l2 = l2
        self.n_negatives = n_negatives
        self.init_std = init_std
        self.max_batch_size = max_batch_size
        self.patience = patience

    def _fit(self, interactions: Interactions) -> None:
        if self.n_layers < 0 or self.n_negatives < 1:
            raise ConfigError(
                f"LightGCN: n_layers must be >= 0 and n_negatives >= 1, got {self.n_layers}, {self.n_negatives}."
            )
        torch.manual_seed(self.seed)
        seen, early = early_stopping_split(self, self.patience)
        batch_size, self.lr_ = scaled_batch(
            seen.nnz, self.batch_size, self.lr, max(self.max_batch_size, self.batch_size)
        )
        self.batch_size_ = batch_size
        adj = to_torch_sparse(normalized_adjacency(seen))
        module = LightGCNModule(
            self.n_users, self.n_items, self.embedding_dim, self.n_layers, adj, self.init_std
        )
        sampler = PairSampler(seen)
        n_users, l2, n_neg = self.n_users, float(self.l2), int(self.n_negatives)

        def batches(epoch: int) -> EpochBatches:
            rng = np.random.default_rng([self.seed, epoch])

            def make():
                for users, pos in sampler.batches(batch_size, rng):
                    neg = uniform_negatives(sampler, users, n_neg, rng)
                    yield torch.from_numpy(users), torch.from_numpy(pos), torch.from_numpy(neg)

            return EpochBatches(-(-len(sampler) // batch_size), make)

        def loss_fn(m: LightGCNModule, batch) -> torch.Tensor:
            users, pos, neg = batch  # (B,), (B,), (B, n_neg)
            final = m.propagate()
            u = final[users]  # (B, D)
            p = final[n_users + pos]  # (B, D)
            n = final[n_users + neg]  # (B, n_neg, D)
            s_pos = (u * p).sum(-1)
            s_neg = torch.einsum("bd,bnd->bn", u, n)
            bpr = F.softplus(s_neg - s_pos[:, None]).mean()
            ego = m.embedding.weight
            reg = (
                ego[users].pow(2).sum()
                + ego[n_users + pos].pow(2).sum()
                + ego[n_users + neg].pow(2).sum() / n_neg
            ) / (2 * len(users))
            return bpr + l2 * reg

        def vectors(m: LightGCNModule) -> tuple[np.ndarray, np.ndarray]:
            final = m.propagate().numpy()
            return final[: self.n_users], final[self.n_users :]

        self._train(
            module, loss_fn, batches, vectors=vectors, batch_size=batch_size, lr=self.lr_, **early
        )
        if seen is not self.seen_:  # the held-out cells back in the graph
            module.adj = to_torch_sparse(normalized_adjacency(self.seen_))
        with torch.no_grad():
            final = module.propagate().numpy()
        self.user_factors_ = np.ascontiguousarray(final[: self.n_users], dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(final[self.n_users :], dtype=np.float32)
