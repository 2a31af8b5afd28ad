"""Multi-gate Mixture-of-Experts (MMoE, Ma et al. 2018) for multi-task ranking.

Shared experts, one softmax gate per task over the experts, one tower per task::

    e_k(x)   = Expert_k(x)                         k = 1..n_experts, each (B, d_e)
    g_t(x)   = softmax(W_t x)                      (B, n_experts), per task t
    f_t(x)   = Σ_k g_t(x)_k e_k(x)                 (B, d_e)
    logit_t  = Tower_t(f_t(x))                     (B,)

``forward`` returns logits (B, n_tasks).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recforge.nn.mlp import MLP


class MMoE(nn.Module):
    """Experts, per-task gates and towers: (B, in_dim) -> logits (B, n_tasks).

    Parameters
    ----------
    in_dim: width of the shared input (e.g. the flattened field embeddings).
    n_tasks: number of tasks T.
    n_experts: number of shared experts.
    expert_hidden: hidden sizes of each expert MLP; the last is the expert width d_e.
    tower_hidden: hidden sizes of each task tower (a final linear layer gives the logit).
    dropout: dropout inside experts and towers.
    """

    def __init__(
        self,
        in_dim: int,
        n_tasks: int,
        *,
        n_experts: int = 4,
        expert_hidden: Sequence[int] = (64,),
        tower_hidden: Sequence[int] = (32,),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if n_tasks < 1 or n_experts < 1 or not expert_hidden:
            raise ValueError(
                f"MMoE: need n_tasks >= 1, n_experts >= 1 and a non-empty expert_hidden; "
                f"got {n_tasks}, {n_experts}, {tuple(expert_hidden)}."
            )
        self.n_tasks, self.n_experts = n_tasks, n_experts
        self.experts = nn.ModuleList(
            MLP(in_dim, hidden=tuple(expert_hidden), dropout=dropout) for _ in range(n_experts)
        )
        self.gates = nn.ModuleList(nn.Linear(in_dim, n_experts) for _ in range(n_tasks))
        width = expert_hidden[-1]
        self.towers = nn.ModuleList(
            MLP(width, hidden=tuple(tower_hidden), dropout=dropout, out_dim=1)
            for _ in range(n_tasks)
        )

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Per-task mixture weights (B, n_tasks, n_experts); each row sums to 1."""
        return torch.stack([torch.softmax(g(x), dim=-1) for g in self.gates], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_dim) -> logits (B, n_tasks)."""
        experts = torch.stack([e(x) for e in self.experts], dim=1)  # (B, E, d_e)
        gates = self.gate_weights(x)  # (B, T, E)
        mixed = gates @ experts  # (B, T, d_e)
        logits = [tower(mixed[:, t]).squeeze(-1) for t, tower in enumerate(self.towers)]  # T x (B,)
        return torch.stack(logits, dim=1)  # (B, T)
