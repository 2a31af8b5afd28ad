"""Cross networks: explicit bounded-degree feature crosses (DCN and DCN-V2).

* ``CrossNetwork`` (DCN, Wang et al. 2017): ``x_{l+1} = x0 * (x_l · w_l) + b_l + x_l`` with a
  weight *vector* per layer, so each layer adds one degree of interaction at O(d) parameters.
* ``CrossNetworkV2`` (DCN-V2, Wang et al. 2021): ``x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l`` with
  a full (d, d) matrix per layer; with ``low_rank=r`` the matrix is replaced by a mixture of
  ``n_experts`` low-rank experts (DCN-Mix)::

      E_i(x_l) = x0 ⊙ (U_i g(C_i g(V_iᵀ x_l)) + b_l)      U_i, V_i: (d, r), C_i: (r, r)
      x_{l+1}  = Σ_i softmax_i(G x_l) E_i(x_l) + x_l       G: (n_experts, d), g = tanh

Both take and return flat vectors (B, d): the concatenated field embeddings.
"""

from __future__ import annotations

import torch
from torch import nn


class CrossNetwork(nn.Module):
    """DCN's cross network: ``n_layers`` rank-one crosses. (B, d) -> (B, d)."""

    def __init__(self, in_dim: int, n_layers: int = 3) -> None:
        super().__init__()
        self.in_dim, self.n_layers = in_dim, n_layers
        self.weight = nn.Parameter(torch.empty(n_layers, in_dim))  # w_l
        self.bias = nn.Parameter(torch.zeros(n_layers, in_dim))  # b_l
        nn.init.xavier_normal_(self.weight)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """x0: (B, d) -> (B, d)."""
        x = x0
        for layer in range(self.n_layers):
            xw = x @ self.weight[layer]  # (B,)
            x = x0 * xw.unsqueeze(-1) + self.bias[layer] + x  # (B, d)
        return x


class CrossNetworkV2(nn.Module):
    """DCN-V2's cross network, full-rank or a mixture of low-rank experts. (B, d) -> (B, d).

    Parameters
    ----------
    in_dim: d, the width of the input (all field embeddings concatenated).
    n_layers: number of cross layers.
    low_rank: None for full-rank (d, d) matrices; an int r for the low-rank mixture.
    n_experts: number of low-rank experts per layer (only with ``low_rank``).
    """

    def __init__(
        self, in_dim: int, n_layers: int = 3, *, low_rank: int | None = None, n_experts: int = 1
    ) -> None:
        super().__init__()
        self.in_dim, self.n_layers = in_dim, n_layers
        self.low_rank, self.n_experts = low_rank, n_experts
        self.bias = nn.Parameter(torch.zeros(n_layers, in_dim))
        if low_rank is None:
            self.weight = nn.Parameter(torch.empty(n_layers, in_dim, in_dim))  # (L, d_out, d_in)
            for layer in range(n_layers):
                nn.init.xavier_normal_(self.weight[layer])
        else:
            if low_rank < 1 or n_experts < 1:
                raise ValueError(
                    f"CrossNetworkV2: low_rank and n_experts must be >= 1, got {low_rank}, {n_experts}."
                )
            shape = (n_layers, n_experts)
            self.U = nn.Parameter(torch.empty(*shape, in_dim, low_rank))
            self.V = nn.Parameter(torch.empty(*shape, in_dim, low_rank))
            self.C = nn.Parameter(torch.empty(*shape, low_rank, low_rank))
            for p in (self.U, self.V, self.C):
                for layer in range(n_layers):
                    for e in range(n_experts):
                        nn.init.xavier_normal_(p[layer, e])
            self.gates = nn.ModuleList(
                nn.Linear(in_dim, n_experts, bias=False) for _ in range(n_layers)
            )

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """x0: (B, d) -> (B, d)."""
        x = x0
        for layer in range(self.n_layers):
            if self.low_rank is None:
                x = x0 * (x @ self.weight[layer].T + self.bias[layer]) + x
                continue
            v = torch.tanh(torch.einsum("bd,edr->ber", x, self.V[layer]))  # (B, E, r)
            c = torch.tanh(torch.einsum("ber,eqr->beq", v, self.C[layer]))  # (B, E, r)
            u = torch.einsum("beq,edq->bed", c, self.U[layer])  # (B, E, d)
            experts = x0.unsqueeze(1) * (u + self.bias[layer])  # (B, E, d)
            gate = torch.softmax(self.gates[layer](x), dim=-1)  # (B, E)
            x = (gate.unsqueeze(-1) * experts).sum(dim=1) + x  # (B, d)
        return x
