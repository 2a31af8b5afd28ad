"""SimpleX (Mao et al., CIKM 2021): a simple, strong CF baseline built on a contrastive loss.

User representation: a gated mix of the user's own embedding and the aggregated
embeddings of the items in the user's history,
``p_u = g * e_u + (1 - g) * W mean_{i in H(u)} e_i`` (W a D x D linear map, g in [0, 1]).
Score: cosine similarity ``cos(p_u, e_i)``.

Cosine contrastive loss (CCL) with N negatives, margin m and negative weight w::

    L(u, i) = (1 - cos(p_u, e_i)) + w / N * sum_j max(0, cos(p_u, e_j) - m)

Or (``loss="softmax"``) a sampled softmax over the same negatives at temperature T::

    L(u, i) = -log softmax_0([cos(p_u, e_i), cos(p_u, e_1), ..., cos(p_u, e_N)] / T)

(uniform negatives: no log-Q correction is needed). CCL is the default on dense logs, the
softmax with the history alone (gate 0) on sparse ones (``SimpleX``: why).

Negatives are drawn uniformly, N shared by the rows of a batch (one matmul), with the
ones equal to the row's positive masked out. While training, the target item is removed
from the history so that the tower cannot simply find it there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from recforge import losses as L
from recforge.data.batching import PairSampler, drop_targets, history_matrix
from recforge.data.interactions import Interactions
from recforge.exceptions import ConfigError
from recforge.models.registry import register
from recforge.models.retrieval.mf import SPARSE_DENSITY
from recforge.models.retrieval.torch_base import (
    EpochBatches,
    TorchRetrievalModel,
    early_stopping_split,
    history_mean_rows,
    history_without_held_out,
    scaled_batch,
    sparse_mm,
)

LOSSES = ("ccl", "softmax")
LR_SCHEDULES = ("constant", "cosine")  # cosine: decays to 0 over the ``epochs`` bound
# the None defaults by the density of the log (SimpleX docstring: how chosen)
SPARSE_SETTINGS: dict[str, Any] = {
    "loss": "softmax",
    "n_negatives": 2048,
    "gate": 0.0,
    "init_std": 0.05,
    "embedding_dim": 512,  # the most: narrower on logs of many users and items (``sparse_dim``)
}
# a sparse log's (users + items, width) rows stay within this many floats (256 MiB): the
# widest power of two that fits, from 512 down to 64. The fitted user and item vectors,
# the item table (with its gradient and Adam's two moments) and the history table are
# each that size or a part of it
SPARSE_TABLE_FLOATS = 2**26
DENSE_SETTINGS: dict[str, Any] = {
    "loss": "ccl",
    "n_negatives": 300,
    "gate": 0.5,
    "init_std": 0.1,
    "embedding_dim": 64,
}


def ccl_loss(
    cos_pos: torch.Tensor,
    cos_neg: torch.Tensor,
    *,
    margin: float,
    negative_weight: float,
    accidental: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cosine contrastive loss: ``mean_b[(1 - cos_pos_b) + w * mean_j relu(cos_neg_bj - m)]``.

    cos_pos (B,), cos_neg (B, N); accidental (B, N) bool marks negatives equal to the row's
    positive (they contribute 0). Returns a scalar.
    """
    hinge = F.relu(cos_neg - margin)
    if accidental is not None:
        hinge = hinge.masked_fill(accidental, 0.0)
    return ((1.0 - cos_pos) + negative_weight * hinge.mean(1)).mean()


def embedding_l2(
    m: SimpleXModule, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
) -> torch.Tensor:
    """``(mean_b |e_u|^2 + mean_b |e_pos|^2 + mean_j |e_neg_j|^2) / 2``: the L2 penalty on the
    embedding rows a batch used (the paper's regulariser; ``SimpleX(l2=...)`` weighs it)."""
    sq = (
        m.user(users).pow(2).sum(-1).mean()
        + m.item(pos + 1).pow(2).sum(-1).mean()
        + m.item(neg + 1).pow(2).sum(-1).mean()
    )
    return sq / 2


def sparse_dim(n_rows: int, widest: int = 512, narrowest: int = 64) -> int:
    """SimpleX's embedding width on a sparse log of ``n_rows`` users + items: the widest
    power of two <= ``widest`` whose (n_rows, dim) vectors hold <= ``SPARSE_TABLE_FLOATS``
    floats, and never under ``narrowest`` (the dense logs' width): 512 up to 131,072 users
    + items, 256 up to 262,144, 128 up to 524,288, then 64. A memory and time guard, not a
    choice on data: the sparse logs the width was chosen on have 70k (30k users, 40k items)
    and 34k (22k, 12k) rows."""
    dim = int(widest)
    while dim > narrowest and n_rows * dim > SPARSE_TABLE_FLOATS:
        dim //= 2
    return max(dim, int(narrowest))


class SimpleXModule(nn.Module):
    """User/item embeddings, mean history aggregation and the gate."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        gate: float,
        init_std: float,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(
            n_items + 1, dim, padding_idx=0
        )  # row 0 = padding, item i at i + 1
        nn.init.normal_(self.user.weight, std=init_std)
        nn.init.normal_(self.item.weight, std=init_std)
        with torch.no_grad():
            self.item.weight[0].zero_()
        self.aggregate = nn.Linear(dim, dim, bias=False)
        self.gate = gate
        self.dropout = nn.Dropout(dropout)  # on the pooled history, while training

    def user_vectors(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """users (B,), history (B, L) item index + 1 (0 = padding) -> L2-normalised (B, D)."""
        # mean of the real items' embeddings (padding 0 left out; all-padding rows are 0)
        pooled = F.embedding_bag(history, self.item.weight, mode="mean", padding_idx=0)  # (B, D)
        return self.combine(users, pooled)

    def user_vectors_sparse(
        self, users: torch.Tensor, mean_rows: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """The same vectors, the history mean given as a sparse (B, n_items + 1) row-mean
        matrix and its transpose (``history_mean_rows``): the training path, whose backward
        pass is one CSR product instead of a sort of B * L indices."""
        pooled = sparse_mm(*mean_rows, self.item.weight)  # (B, D)
        return self.combine(users, pooled)

    def combine(self, users: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """Gate the user embedding with the mapped history mean; L2-normalised (B, D). At
        gate 0 the user table is not read (no gradient, no optimizer step on it)."""
        mapped = self.aggregate(self.dropout(pooled))
        if self.gate == 0.0:
            return F.normalize(mapped, dim=-1)
        p = self.gate * self.user(users) + (1.0 - self.gate) * mapped
        return F.normalize(p, dim=-1)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """items (...) internal indices -> L2-normalised (..., D)."""
        return F.normalize(self.item(items + 1), dim=-1)


@register("simplex")
class SimpleX(TorchRetrievalModel):
    """SimpleX with the cosine contrastive loss, or a sampled softmax (sparse logs' default).

    Parameters
    ----------
    embedding_dim: size of user/item embeddings; None: by density, below.
    n_negatives: uniform negatives per batch (shared by its rows); None: by density, below.
    loss: "ccl" (the paper's cosine contrastive loss) | "softmax" (sampled softmax over the
        same negatives at ``temperature``); None: by density, below.
    temperature: T of the softmax loss (unused by CCL).
    margin: CCL margin m; negatives with cosine below it cost nothing.
    negative_weight: CCL weight w of the mean negative term.
    gate: g, the weight of the user embedding against the aggregated history (1 = MF, 0 =
        the history alone); None: by density, below.
    max_history: most recent training items aggregated per user.
    dropout: dropout on the pooled history while training (the paper's; 0 = off).
    l2: weight of the L2 penalty on the embedding rows a batch used (its users', its
        positives' and its shared negatives', each averaged over its rows), added to the
        loss (0 = off).
    lr_schedule: "constant" | "cosine" (the lr decays to 0 along a cosine over the
        ``epochs`` bound, after ``warmup_steps`` steps of linear warm-up).
    warmup_steps: linear warm-up steps of the learning rate (0 = none).
    init_std: std of the normal initialisation of the embeddings; None: by density, below.
    batch_size, lr: batch and learning rate on small dense logs; on larger ones the batch
        doubles up to ``max_batch_size`` while an epoch keeps >= 100 steps, lr growing with
        its square root (``torch_base.scaled_batch``; fitted values in ``batch_size_``,
        ``lr_``).
    sparse_lr: the base lr instead of ``lr`` on logs with under ``mf.SPARSE_DENSITY`` (0.2%)
        of the user-item cells seen (None: ``lr`` everywhere).
    patience: early stopping on validation recall@10, keeping the best epoch (0: off); the
        validation rows as LightGCN's (``torch_base.early_stopping_split``).
    epochs, optimizer, weight_decay, seed, num_threads, progress: training (shared by the
        torch retrieval models, see ``TorchRetrievalModel``); ``epochs`` bounds early stopping.

    Why the defaults (docs/BENCHMARKS.md, "Recall at 40k items" and "Defaults across
    dataset sizes"): on logs with under ``mf.SPARSE_DENSITY`` (0.2%) of the user-item cells
    seen, ``SPARSE_SETTINGS`` (softmax at T 0.2 over 2,048 negatives, gate 0: the user
    vector from the history alone, init std 0.05, embeddings 512 wide, narrower on
    logs of over 131,072 users + items by ``sparse_dim``) and base lr 3e-4; on denser ones
    ``DENSE_SETTINGS`` (CCL, 300 negatives, gate 0.5, init std 0.1, 64 wide) and lr 5e-3,
    the defaults before (the choice a fit made is in ``settings_``). Chosen by
    ``benchmarks.recall_defaults``' rule (Recall@20 over the best candidate's, averaged
    over datasets) on two sparse validation splits, the 40k-item synthetic log (0.04%
    dense, 512k pairs, batch 4096, 1 thread) and Amazon Beauty (0.06%, ~176k pairs, batch
    1024): CCL/300 with gate 0.5 and init std 0.1 gave 0.1691 / 0.0533, the softmax/1,024
    0.1787 / 0.0490, + gate 0.1 0.1811 / 0.0679, + gate 0 and init std 0.05 0.1785 /
    0.0807, the same over 2,048 negatives 0.1808 / 0.0818 (mean relative recall 0.797,
    0.797, 0.921, 0.986, 0.999; 2,048 negatives cost ~2x the CPU per epoch); then the
    width, over those settings: 64 / 128 / 256 / 512 wide gave 0.1801 / 0.1859 / 0.1897 /
    0.1928 on the 40k log (early stopping on held-out training cells, as a user's fit) and
    0.0818 / 0.0889 / 0.0995 / 0.1049 on Beauty, at 255 / 337 / 419 / 761 fit CPU-s on the
    40k log; 1024 was level with 512 there (0.1902-0.1921) and +1.5% on Beauty (0.1065) at
    2.3x the fit time, within the rule's 1%, so the cheaper 512 (mean relative recall
    0.992); the 40k test split then gave Recall@20 0.1969 (64 wide: 0.1839) in a 7-minute
    fit on 2 threads. On ML-100K 128 / 256 gave 0.2886 / 0.2798 against 64's 0.2859, so
    dense logs keep 64. With CCL the 40k curve levelled off at ~0.095 recall@10 whatever
    else changed (1,000 negatives, margin 0.9 / weight 150, lr, init std 0.3, dropout,
    embedding L2, a cosine lr decay). On Beauty the
    10-epoch bound had cut the gate-0.5 fits short (still rising); the lower gate and init
    learn faster (a smaller init is a larger step relative to the rows under Adam), which
    an init of 0.03 overdid on the 40k log (peak after 2 epochs, 0.1766). On ML-100K's
    validation split (2.7% dense) the sparse settings gave 0.1443 against 0.2859, hence the
    density rule.
    """

    smoke_params = {
        "embedding_dim": 8,
        "n_negatives": 16,
        "epochs": 3,
        "batch_size": 64,
        "lr": 0.01,
    }

    train_defaults = {"lr": 5e-3}
    # request-time history: the user vector from the history alone (the id embedding of a
    # known user is left out, as for a new user), so it is close to, not equal to, recommend
    supports_history = True
    history_is_exact = False

    def __init__(
        self,
        *,
        embedding_dim: int | None = None,
        n_negatives: int | None = None,
        margin: float = 0.3,
        negative_weight: float = 5.0,
        gate: float | None = None,
        max_history: int = 100,
        init_std: float | None = None,
        max_batch_size: int = 4096,
        patience: int = 3,
        sparse_lr: float | None = 3e-4,
        loss: str | None = None,
        temperature: float = 0.2,
        dropout: float = 0.0,
        l2: float = 0.0,
        lr_schedule: str = "constant",
        warmup_steps: int = 0,
        **shared: Any,
    ) -> None:
        super().__init__(embedding_dim=embedding_dim, **(self.train_defaults | shared))
        self.n_negatives = n_negatives
        self.margin = margin
        self.negative_weight = negative_weight
        self.gate = gate
        self.max_history = max_history
        self.init_std = init_std
        self.max_batch_size = max_batch_size
        self.patience = patience
        self.sparse_lr = sparse_lr
        self.loss = loss
        self.temperature = temperature
        self.dropout = dropout
        self.l2 = l2
        self.lr_schedule = lr_schedule
        self.warmup_steps = warmup_steps

    def _check_common(
        self, names: tuple[str, ...] = ("embedding_dim", "epochs", "batch_size")
    ) -> None:
        """The base's checks; an ``embedding_dim`` of None is filled by density
        (``_settings``) and checked in ``_fit``."""
        if self.embedding_dim is None:
            names = tuple(n for n in names if n != "embedding_dim")
        super()._check_common(names)

    def _settings(self, density: float, n_rows: int = 0) -> dict[str, Any]:
        """The settings a fit uses (``settings_``, saved with the model): the None defaults
        filled from ``SPARSE_SETTINGS`` under ``mf.SPARSE_DENSITY`` (0.2%) of the user-item
        cells seen (the width by ``sparse_dim`` of ``n_rows``, users + items), else from
        ``DENSE_SETTINGS``."""
        chosen = dict(SPARSE_SETTINGS if density < SPARSE_DENSITY else DENSE_SETTINGS)
        if density < SPARSE_DENSITY:
            chosen["embedding_dim"] = sparse_dim(n_rows, SPARSE_SETTINGS["embedding_dim"])
        return {k: v if getattr(self, k) is None else getattr(self, k) for k, v in chosen.items()}

    def _fit(self, interactions: Interactions) -> None:
        density = self.seen_.nnz / max(1, self.n_users * self.n_items)
        self.settings_ = settings = self._settings(density, self.n_users + self.n_items)
        gate, n_neg, loss = float(settings["gate"]), int(settings["n_negatives"]), settings["loss"]
        dim = settings["embedding_dim"]
        if not 0.0 <= gate <= 1.0 or n_neg < 1 or not isinstance(dim, int | np.integer) or dim < 1:
            raise ConfigError(
                f"SimpleX: gate must lie in [0, 1], n_negatives >= 1 and embedding_dim be a "
                f"positive integer, got gate={gate}, n_negatives={n_neg}, embedding_dim={dim!r}."
            )
        if loss not in LOSSES or not 0.0 <= self.dropout < 1.0 or self.temperature <= 0:
            raise ConfigError(
                f"SimpleX: loss must be one of {LOSSES}, dropout in [0, 1) and temperature > 0, "
                f"got loss={loss!r}, dropout={self.dropout}, temperature={self.temperature}."
            )
        if self.lr_schedule not in LR_SCHEDULES or self.l2 < 0 or self.warmup_steps < 0:
            raise ConfigError(
                f"SimpleX: lr_schedule must be one of {LR_SCHEDULES}, l2 >= 0 and "
                f"warmup_steps >= 0, got lr_schedule={self.lr_schedule!r}, l2={self.l2}, "
                f"warmup_steps={self.warmup_steps}."
            )
        torch.manual_seed(self.seed)
        hist = history_matrix(interactions, self.user_vocab_, self.item_vocab_, self.max_history)
        seen, early = early_stopping_split(self, self.patience)
        full_hist = hist  # held-out cells: out of the pairs and the histories
        hist = history_without_held_out(hist, self.seen_, seen)
        sparse = self.sparse_lr is not None and density < SPARSE_DENSITY
        batch_size, self.lr_ = scaled_batch(
            seen.nnz,
            self.batch_size,
            self.sparse_lr if sparse else self.lr,
            max(self.max_batch_size, self.batch_size),
            steps_per_epoch=100,
        )
        self.batch_size_ = batch_size
        module = SimpleXModule(
            self.n_users,
            self.n_items,
            int(dim),
            gate,
            float(settings["init_std"]),
            float(self.dropout),
        )
        sampler = PairSampler(seen)
        margin, weight = float(self.margin), float(self.negative_weight)
        softmax, temperature = loss == "softmax", float(self.temperature)
        l2 = float(self.l2)

        def batches(epoch: int) -> EpochBatches:
            rng = np.random.default_rng([self.seed, epoch])

            def make():
                for users, pos in sampler.batches(batch_size, rng):
                    yield (
                        torch.from_numpy(users),
                        torch.from_numpy(pos),
                        history_mean_rows(drop_targets(hist[users], pos), self.n_items + 1),
                        torch.from_numpy(rng.integers(0, self.n_items, n_neg)),
                    )

            return EpochBatches(-(-len(sampler) // batch_size), make)

        def loss_fn(m: SimpleXModule, batch) -> torch.Tensor:
            users, pos, mean_rows, neg = batch  # (B,), (B,), CSR (B, I + 1) and (I + 1, B), (N,)
            u = m.user_vectors_sparse(users, mean_rows)  # (B, D)
            reg = embedding_l2(m, users, pos, neg) * l2 if l2 else 0.0
            if softmax:
                return reg + L.sampled_softmax(
                    u,
                    m.item_vectors(pos),
                    m.item_vectors(neg),
                    pos_ids=pos,
                    neg_ids=neg,
                    temperature=temperature,
                )
            cos_pos = (u * m.item_vectors(pos)).sum(-1)  # (B,)
            cos_neg = u @ m.item_vectors(neg).T  # (B, N)
            return reg + ccl_loss(
                cos_pos,
                cos_neg,
                margin=margin,
                negative_weight=weight,
                accidental=neg[None, :] == pos[:, None],
            )

        def vectors(m: SimpleXModule, hist: np.ndarray = hist) -> tuple[np.ndarray, np.ndarray]:
            users = m.user_vectors(torch.arange(self.n_users), torch.from_numpy(hist))
            items = m.item_vectors(torch.arange(self.n_items))
            return users.numpy().astype(np.float32), items.numpy().astype(np.float32)

        schedule = {"constant": "constant", "cosine": "warmup_cosine"}[self.lr_schedule]
        self._train(
            module,
            loss_fn,
            batches,
            vectors=vectors,
            batch_size=batch_size,
            lr=self.lr_,
            schedule=schedule,
            warmup_steps=int(self.warmup_steps),
            **early,
        )
        with torch.no_grad():  # the final user vectors from the whole history
            self.user_factors_, self.item_factors_ = vectors(module, full_hist)
            self.history_items_ = module.item.weight[1:].numpy().astype(np.float32)  # (I, D)
            self.aggregate_ = module.aggregate.weight.numpy().astype(np.float32)  # (D, D)

    def score_history(self, item_idx: np.ndarray) -> np.ndarray:
        """(n_items,) cosine scores of the user vector built from the history alone:
        ``normalize((1 - gate) * aggregate(mean of the last max_history item embeddings))``."""
        self._check_fitted("score_history")
        item_idx = np.asarray(item_idx, dtype=np.int64)[-int(self.max_history) :]
        if len(item_idx) == 0:
            return np.zeros(self.n_items, dtype=np.float32)
        pooled = self.history_items_[item_idx].mean(axis=0)  # (D,)
        p = (1.0 - float(self.settings_["gate"])) * (self.aggregate_ @ pooled)
        p = p / max(float(np.linalg.norm(p)), 1e-12)
        return (self.item_factors_ @ p).astype(np.float32)

    def _save_state(self):  # type: ignore[no-untyped-def]
        arrays, state = super()._save_state()
        arrays["history_items"] = self.history_items_
        arrays["aggregate"] = self.aggregate_
        state["settings"] = self.settings_
        return arrays, state

    def _load_state(self, arrays, state):  # type: ignore[no-untyped-def]
        super()._load_state(arrays, state)
        self.history_items_ = arrays["history_items"]
        self.aggregate_ = arrays["aggregate"]
        # artifacts from before the density rule: their settings were all explicit
        self.settings_ = state.get("settings") or self._settings(1.0)
