"""Mixtures of experts for multi-task ranking: MMoE (Ma et al. 2018) and PLE (Tang et al.
2020, progressive layered extraction).

MMoE:

Shared experts, one softmax gate per task over the experts, one tower per task::

    e_k(x)   = Expert_k(x)                         k = 1..n_experts, each (B, d_e)
    g_t(x)   = softmax(W_t x)                      (B, n_experts), per task t
    f_t(x)   = Σ_k g_t(x)_k e_k(x)                 (B, d_e)
    logit_t  = Tower_t(f_t(x))                     (B,)

PLE stacks ``n_levels`` CGC (customized gate control) levels. A level holds task-specific
experts per task and shared experts; task t's gate mixes only its own and the shared
experts, and (below the top level) a shared gate mixes all of them into the next level's
shared input::

    h_t^{l+1} = softmax(W_t^l h_t^l) · [E_t^l(h_t^l); E_s^l(h_s^l)]       per task t
    h_s^{l+1} = softmax(W_s^l h_s^l) · [E_1^l(h_1^l); ...; E_T^l(h_T^l); E_s^l(h_s^l)]
    logit_t   = Tower_t(h_t^L)

with h_t^0 = h_s^0 = x. One level with no task-specific experts is MMoE.
``forward`` returns logits (B, n_tasks) for both.
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


class CGCLevel(nn.Module):
    """One PLE level: (T task inputs, shared input) -> (T task outputs, shared output).

    Inputs are lists/tensors of shape (B, in_dim); outputs (B, d_e) where d_e is
    ``expert_hidden[-1]``. ``shared_out`` is False at the top level (no shared gate).
    """

    def __init__(
        self,
        in_dim: int,
        n_tasks: int,
        *,
        n_specific: int,
        n_shared: int,
        expert_hidden: Sequence[int],
        dropout: float,
        shared_out: bool,
    ) -> None:
        super().__init__()

        def experts(n: int) -> nn.ModuleList:
            return nn.ModuleList(
                MLP(in_dim, hidden=tuple(expert_hidden), dropout=dropout) for _ in range(n)
            )

        self.n_tasks, self.n_specific, self.n_shared = n_tasks, n_specific, n_shared
        self.specific = nn.ModuleList(experts(n_specific) for _ in range(n_tasks))
        self.shared = experts(n_shared)
        self.task_gates = nn.ModuleList(
            nn.Linear(in_dim, n_specific + n_shared) for _ in range(n_tasks)
        )
        n_all = n_tasks * n_specific + n_shared
        self.shared_gate = nn.Linear(in_dim, n_all) if shared_out else None

    def forward(
        self, task_in: Sequence[torch.Tensor], shared_in: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        shared = [e(shared_in) for e in self.shared]  # n_shared x (B, d_e)
        own = [[e(task_in[t]) for e in self.specific[t]] for t in range(self.n_tasks)]
        out = []
        for t in range(self.n_tasks):
            stack = torch.stack([*own[t], *shared], dim=1)  # (B, n_specific + n_shared, d_e)
            g = torch.softmax(self.task_gates[t](task_in[t]), dim=-1)  # (B, n_specific + n_shared)
            out.append((g.unsqueeze(1) @ stack).squeeze(1))  # (B, d_e)
        if self.shared_gate is None:
            return out, None
        every = torch.stack([e for row in own for e in row] + shared, dim=1)  # (B, n_all, d_e)
        g = torch.softmax(self.shared_gate(shared_in), dim=-1)  # (B, n_all)
        return out, (g.unsqueeze(1) @ every).squeeze(1)


class PLE(nn.Module):
    """Progressive layered extraction: (B, in_dim) -> logits (B, n_tasks).

    Parameters
    ----------
    in_dim: width of the shared input.
    n_tasks: number of tasks T.
    n_levels: number of stacked CGC levels (1 = CGC).
    n_specific: task-specific experts per task and level.
    n_shared: shared experts per level.
    expert_hidden: hidden sizes of each expert MLP; the last is the expert width d_e.
    tower_hidden: hidden sizes of each task tower.
    dropout: dropout inside experts and towers.
    """

    def __init__(
        self,
        in_dim: int,
        n_tasks: int,
        *,
        n_levels: int = 2,
        n_specific: int = 1,
        n_shared: int = 1,
        expert_hidden: Sequence[int] = (64,),
        tower_hidden: Sequence[int] = (32,),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if n_tasks < 1 or n_levels < 1 or n_specific < 0 or n_shared < 0 or not expert_hidden:
            raise ValueError(
                f"PLE: need n_tasks >= 1, n_levels >= 1, n_specific >= 0, n_shared >= 0 and a "
                f"non-empty expert_hidden; got {n_tasks}, {n_levels}, {n_specific}, {n_shared}, "
                f"{tuple(expert_hidden)}."
            )
        if n_specific + n_shared < 1:
            raise ValueError("PLE: n_specific + n_shared must be >= 1 (a gate needs an expert).")
        width = expert_hidden[-1]
        self.levels = nn.ModuleList(
            CGCLevel(
                in_dim if level == 0 else width,
                n_tasks,
                n_specific=n_specific,
                n_shared=n_shared,
                expert_hidden=expert_hidden,
                dropout=dropout,
                shared_out=level < n_levels - 1,
            )
            for level in range(n_levels)
        )
        self.towers = nn.ModuleList(
            MLP(width, hidden=tuple(tower_hidden), dropout=dropout, out_dim=1)
            for _ in range(n_tasks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_dim) -> logits (B, n_tasks)."""
        task_in: list[torch.Tensor] = [x] * len(self.towers)
        shared: torch.Tensor | None = x
        for level in self.levels:
            task_in, shared = level(task_in, shared)
        logits = [tower(task_in[t]).squeeze(-1) for t, tower in enumerate(self.towers)]
        return torch.stack(logits, dim=1)  # (B, T)
