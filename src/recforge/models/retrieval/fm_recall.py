"""FM-recall: a factorisation machine over user fields and item fields, served as a
two-tower dot product.

Fields: the user side has the user id plus the columns of ``interactions.user_features``,
the item side the item id plus the columns of ``interactions.item_features`` (categorical,
numeric scaled vectors, multi-valued mean-pooled; ``FeatureEmbedding``). With field
vectors ``u_1..u_m`` (user side), ``v_1..v_n`` (item side), first-order weights ``w`` and
bias ``w_0``, the FM score is

    fm(u, i) = w_0 + sum_a w_a + sum_b w_b + sum_{f < g} <x_f, x_g>  over all m + n fields.

Derivation of the two-tower form. With ``U = sum_a u_a`` and ``I = sum_b v_b``, the pair
sum splits into user-user, item-item and user-item pairs, and
``sum_{f<g} <x_f, x_g> = 1/2 (|U + I|^2 - sum_f |x_f|^2)``, so

    fm(u, i) = [w_0 + sum_a w_a + S(u)] + <U, I> + [sum_b w_b + S(i)],
    S(u) = 1/2 (|U|^2 - sum_a |u_a|^2),   S(i) = 1/2 (|I|^2 - sum_b |v_b|^2).

The first bracket does not depend on the item, so for one user the ranking of items by
``fm`` equals the ranking by ``<U, I> + sum_b w_b + S(i)`` =
``[U, 1] . [I, sum_b w_b + S(i)]``. Hence ``user_factors_ = [U, 1]`` and
``item_factors_ = [I, item linear + item self-interaction]`` (D + 1 columns), and
``fm(u, i) - user_factors_[u] . item_factors_[i]`` is the same for every item i.

Training: BPR (``loss="bpr"``, uniform unseen negatives) or sampled softmax with log-Q
correction (``loss="sampled_softmax"``) on the full FM score of (user, item) pairs, which
equals the dot product above up to the user constant (it cancels in both losses).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from recforge import losses as L
from recforge.data.batching import PairSampler, PopularitySampler
from recforge.data.features import EncodedFeatures, Field
from recforge.data.interactions import Interactions
from recforge.exceptions import ConfigError
from recforge.models.registry import register
from recforge.models.retrieval.torch_base import (
    FeatureRows,
    TorchRetrievalModel,
    encode_side_table,
    sampled_batches,
)
from recforge.nn.embedding import FeatureEmbedding, LinearEmbedding

FM_LOSSES = ("bpr", "sampled_softmax")


class FieldSide(nn.Module):
    """One side (users or items) of the FM: an id field plus optional feature fields.

    ``fields(idx)`` -> (B, F, D) field vectors, ``linear(idx)`` -> (B,) first-order sum.
    """

    def __init__(
        self,
        n: int,
        dim: int,
        fields: Sequence[Field] | None,
        encoded: EncodedFeatures | None,
        init_std: float,
    ) -> None:
        super().__init__()
        self.id_embedding = nn.Embedding(n, dim)
        self.id_linear = nn.Embedding(n, 1)
        nn.init.normal_(self.id_embedding.weight, std=init_std)
        nn.init.zeros_(self.id_linear.weight)
        self.rows = FeatureRows(encoded) if encoded is not None else None
        self.features = FeatureEmbedding(fields, dim, init_std=init_std) if fields else None
        self.features_linear = LinearEmbedding(fields) if fields else None
        self._used: torch.Tensor | None = None

    def fields(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B,) -> (B, F, D), the id field first."""
        ids = self.id_embedding(idx)  # (B, D)
        if self.training:
            self._used = ids
        parts = [ids[:, None, :]]  # (B, 1, D)
        if self.features is not None:
            parts.append(self.features(self.rows.take(idx)))  # (B, F - 1, D)
        return torch.cat(parts, 1)

    def l2_penalty(self) -> torch.Tensor:
        """Sum of squares of the id rows the last training forward used, per row (the
        feature rows are penalised by ``FeatureEmbedding.l2_penalty``)."""
        if self._used is None:
            return torch.zeros(())
        return self._used.pow(2).sum() / max(1, self._used.shape[0])

    def linear(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B,) -> (B,) first-order terms (the feature side carries one bias)."""
        out = self.id_linear(idx)[:, 0]
        if self.features_linear is not None:
            out = out + self.features_linear(self.rows.take(idx))
        return out


def self_interaction(fields: torch.Tensor) -> torch.Tensor:
    """``1/2 (|sum_f x_f|^2 - sum_f |x_f|^2)``, the pairwise FM term within one side:
    fields (B, F, D) -> (B,)."""
    return 0.5 * (fields.sum(1).pow(2).sum(-1) - fields.pow(2).sum((1, 2)))


class FMRecallModule(nn.Module):
    """User side, item side and a global bias; the full FM score and the two towers."""

    def __init__(self, user_side: FieldSide, item_side: FieldSide) -> None:
        super().__init__()
        self.users, self.items = user_side, item_side
        self.bias = nn.Parameter(torch.zeros(()))

    def fm_score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The FM score of pairs, computed over all fields at once: (B,), (B,) -> (B,)."""
        x = torch.cat([self.users.fields(users), self.items.fields(items)], 1)  # (B, Fu + Fi, D)
        return self.bias + self.users.linear(users) + self.items.linear(items) + self_interaction(x)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """[U, 1]: (B, D + 1)."""
        u = self.users.fields(users).sum(1)
        return torch.cat([u, torch.ones_like(u[:, :1])], 1)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """[I, item linear + S(i)]: (N, D + 1)."""
        x = self.items.fields(items)  # (N, Fi, D)
        extra = self.items.linear(items) + self_interaction(x)
        return torch.cat([x.sum(1), extra[:, None]], 1)


@register("fm_recall")
class FMRecall(TorchRetrievalModel):
    """Factorisation machine over user and item fields, served by dot product.

    Parameters
    ----------
    embedding_dim: field vector size D (the factors have D + 1 columns).
    loss: "bpr" | "sampled_softmax" (popularity**alpha negatives, log-Q corrected).
    n_negatives: sampled negatives per batch for sampled_softmax.
    alpha: popularity exponent of the sampled-softmax sampler.
    use_features: use interactions.user_features / item_features when present;
    user_feature_cols / item_feature_cols: their columns to use (None = all);
    min_count: feature values seen fewer times map to the unknown index.
    l2: penalty on the id and feature embedding rows each batch used (``TrainConfig.l2``).
    init_std: std of the normal initialisation.
    epochs, batch_size, lr, optimizer, weight_decay, seed, num_threads, progress: training
        (shared by the torch retrieval models, see ``TorchRetrievalModel``).
    """

    smoke_params = {"embedding_dim": 8, "epochs": 3, "batch_size": 64, "lr": 0.01}

    train_defaults = {"epochs": 30, "batch_size": 1024, "lr": 2e-3}

    def __init__(
        self,
        *,
        loss: str = "bpr",
        n_negatives: int = 256,
        alpha: float = 0.75,
        use_features: bool = True,
        user_feature_cols: Sequence[str] | None = None,
        item_feature_cols: Sequence[str] | None = None,
        min_count: int = 1,
        l2: float = 0.0,
        init_std: float = 0.05,
        **shared: Any,
    ) -> None:
        super().__init__(**(self.train_defaults | shared))
        self.loss = loss
        self.n_negatives = n_negatives
        self.alpha = alpha
        self.use_features = use_features
        self.user_feature_cols = user_feature_cols
        self.item_feature_cols = item_feature_cols
        self.min_count = min_count
        self.l2 = l2
        self.init_std = init_std

    def _side(self, table: pd.DataFrame | None, raw_ids: np.ndarray, kind: str) -> FieldSide:
        enc = None
        if self.use_features:
            enc = encode_side_table(
                table,
                raw_ids,
                columns=self.user_feature_cols if kind == "user" else self.item_feature_cols,
                min_count=self.min_count,
                where=f"FMRecall: {kind}_feature_cols / interactions.{kind}_features",
            )
        fields, encoded = (enc[0].fields_, enc[1]) if enc is not None else (None, None)
        return FieldSide(len(raw_ids), self.embedding_dim, fields, encoded, self.init_std)

    def _fit(self, interactions: Interactions) -> None:
        if self.loss not in FM_LOSSES:
            raise ConfigError(f"FMRecall: loss={self.loss!r}; choose one of {FM_LOSSES}.")
        torch.manual_seed(self.seed)
        module = FMRecallModule(
            self._side(interactions.user_features, self.user_vocab_.raw_ids, "user"),
            self._side(interactions.item_features, self.item_vocab_.raw_ids, "item"),
        )
        sampler = PairSampler(self.seen_)
        popularity = (
            PopularitySampler(sampler.item_counts(), self.alpha)
            if self.loss == "sampled_softmax"
            else None
        )

        def batches(epoch: int):
            return sampled_batches(
                sampler,
                batch_size=self.batch_size,
                seed=self.seed,
                epoch=epoch,
                loss=self.loss,
                n_negatives=self.n_negatives,
                popularity=popularity,
                in_batch_log_q=None,
            )

        def loss_fn(m: FMRecallModule, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            users, pos, neg = batch["users"], batch["pos"], batch["neg"]
            u = m.user_vectors(users)  # (B, D + 1)
            # one item forward for positives and negatives, so that the l2 penalty of the
            # feature embeddings sees every row the batch used
            items = m.item_vectors(torch.cat([pos, neg]))
            p, n = items[: len(pos)], items[len(pos) :]
            if self.loss == "bpr":  # neg (B,): one per row
                return L.bpr((u * p).sum(-1), (u * n).sum(-1))
            return L.sampled_softmax(
                u,
                p,
                n,
                log_q_pos=batch["log_q_pos"],
                log_q_neg=batch["log_q_neg"],
                pos_ids=pos,
                neg_ids=neg,
            )

        def vectors(m: FMRecallModule) -> tuple[np.ndarray, np.ndarray]:
            users = m.user_vectors(torch.arange(self.n_users))
            items = m.item_vectors(torch.arange(self.n_items))
            return users.numpy().astype(np.float32), items.numpy().astype(np.float32)

        self._train(module, loss_fn, batches, vectors=vectors, l2=float(self.l2))
        self.module_ = module
        with torch.no_grad():
            self.user_factors_, self.item_factors_ = vectors(module)
