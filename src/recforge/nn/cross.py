"""Cross networks: explicit bounded-degree feature crosses (DCN and DCN-V2).

* ``CrossNetwork`` (DCN, Wang et al. 2017): ``x_{l+1} = x0 * (x_l · w_l) + b_l + x_l`` with a
  weight *vector* per layer, so each layer adds one degree of interaction at O(d) parameters.
* ``CrossNetworkV2`` (DCN-V2, Wang et al. 2021): ``x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l`` with
  a full (d, d) matrix per layer; with ``low_rank=r`` the matrix is replaced by a mixture of
  ``n_experts`` low-rank experts (DCN-Mix)::

      E_i(x_l) = x0 ⊙ (U_i g(C_i g(V_iᵀ x_l)) + b_l)      U_i, V_i: (d, r), C_i: (r, r)
      x_{l+1}  = Σ_i softmax_i(G x_l) E_i(x_l) + x_l       G: (n_experts, d), g = tanh

Both take and return flat vectors (B, d): the concatenated field embeddings, or (B, d')
with zero columns up to d' = ``recforge.nn.align.aligned(d)`` (the faster GEMM shape):
the weights then get zero rows/columns at forward time, the padding stays zero through
every layer, and the parameters and the function are those of width d.

The bias is shared by the experts and the gates sum to 1, so the mixture is computed as
``x0 ⊙ (Σ_i g_i U_i c_i + b_l)``: one (B, E·r) x (E·r, d) product, never the (B, E, d)
expert outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recforge.nn.align import pad_last, pad_square
from recforge.nn.exporting import exporting


class _FullRankCross(torch.autograd.Function):
    """DCN-V2's full-rank layers ``x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l`` with the backward
    written out: per layer one addmm forward, and backward u = g ⊙ x0, dW_l = uᵀ x_l,
    db_l = Σ u, dx0 += g ⊙ t_l, g <- g + u W_l (one addmm). Autograd's graph of the same
    ops adds scalar multiplies (addcmul's value), separate accumulations of x0's four
    gradients and a (B, d) temporary per product. The sums are the same."""

    @staticmethod
    def forward(ctx, x0, weight, bias):  # type: ignore[override]
        xs, ts = [], []
        x = x0
        for layer in range(weight.shape[0]):
            t = torch.addmm(bias[layer], x, weight[layer].t())  # (B, d)
            xs.append(x)
            ts.append(t)
            x = torch.addcmul(x, x0, t)
        ctx.save_for_backward(x0, weight, *xs, *ts)
        return x

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x0, weight, *rest = ctx.saved_tensors
        n = weight.shape[0]
        xs, ts = rest[:n], rest[n:]
        gw, gb = torch.empty_like(weight), weight.new_empty(weight.shape[:2])
        g = grad
        gx0 = None
        for layer in reversed(range(n)):
            u = g * x0  # dL/dt_l
            if gx0 is None:
                gx0 = g * ts[layer]
            else:
                gx0.addcmul_(g, ts[layer])
            torch.mm(u.t(), xs[layer], out=gw[layer])
            torch.sum(u, 0, out=gb[layer])
            if g is grad:  # dL/dx_l; the caller's gradient is not ours to overwrite
                g = torch.addmm(g, u, weight[layer])
            else:
                g.addmm_(u, weight[layer])
        gx0.add_(g)  # x_0 is x0
        return gx0, gw, gb


class CrossNetwork(nn.Module):
    """DCN's cross network: ``n_layers`` rank-one crosses. (B, d) -> (B, d)."""

    def __init__(self, in_dim: int, n_layers: int = 3) -> None:
        super().__init__()
        self.in_dim, self.n_layers = in_dim, n_layers
        self.weight = nn.Parameter(torch.empty(n_layers, in_dim))  # w_l
        self.bias = nn.Parameter(torch.zeros(n_layers, in_dim))  # b_l
        nn.init.xavier_normal_(self.weight)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """x0: (B, d) or zero-padded (B, d') -> the same shape."""
        width = x0.shape[1]
        weight, bias = pad_last(self.weight, width), pad_last(self.bias, width)
        x = x0
        for layer in range(self.n_layers):
            xw = x @ weight[layer]  # (B,)
            x = x0 * xw.unsqueeze(-1) + bias[layer] + x  # (B, d)
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
        """x0: (B, d) or zero-padded (B, d') -> the same shape."""
        x = x0
        b, width = x0.shape
        d = self.in_dim
        bias = pad_last(self.bias, width)  # (L, d')
        if self.low_rank is None:
            weight = pad_square(self.weight, width)  # (L, d', d')
            if torch.is_grad_enabled() and not exporting():
                return _FullRankCross.apply(x0, weight, bias)
            for layer in range(self.n_layers):
                x = torch.addcmul(x, x0, F.linear(x, weight[layer], bias[layer]))
            return x
        e, r = self.n_experts, self.low_rank
        for layer in range(self.n_layers):
            v_all = self.V[layer].permute(1, 0, 2).reshape(d, e * r)  # (d, E*r)
            v_all = F.pad(v_all, (0, 0, 0, width - d))  # (d', E*r): zero rows for the padding
            v = torch.tanh(x @ v_all).view(b, e, r).transpose(0, 1)  # (E, B, r)
            c = torch.tanh(torch.bmm(v, self.C[layer].transpose(1, 2)))  # (E, B, r)
            gate_w = pad_last(self.gates[layer].weight, width)  # (E, d')
            gate = torch.softmax(F.linear(x, gate_w), dim=-1)  # (B, E)
            gc = (c * gate.T.unsqueeze(-1)).transpose(0, 1).reshape(b, e * r)  # (B, E*r)
            u_all = self.U[layer].permute(0, 2, 1).reshape(e * r, d)  # (E*r, d)
            mixed = gc @ pad_last(u_all, width)  # (B, d') = Σ_i g_i U_i c_i
            x = x0 * (mixed + bias[layer]) + x  # the gates sum to 1: b_l once
        return x
