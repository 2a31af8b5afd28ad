"""xDeepFM's Compressed Interaction Network (Lian et al. 2018).

Vector-wise explicit interactions of bounded degree. With X0 (B, m, D) the field embeddings
and X^k (B, H_k, D) the k-th feature map::

    Z^{k+1}[b, h, i, :] = X^k[b, h, :] ⊙ X0[b, i, :]             (B, H_k, m, D)
    X^{k+1}[b, j, :]    = Σ_{h,i} W^{k+1}[j, h, i] Z^{k+1}[b, h, i, :]   (B, H_{k+1}, D)

(a 1x1 convolution over the H_k*m outer-product channels, computed as a matrix product
of the (B*D, H_k*m) outer products with the convolution's (H_{k+1}, H_k*m) weight: the
embedding axis leads, so the product is a plain GEMM -- faster on CPU than the
convolution kernel over length-D signals, and its backward too). The outer products are
the largest tensors of xDeepFM (B*D x H_k*m: 436 MB at B=4096, 26 fields, 64 maps), so
``cin_layer`` never holds them whole: it builds and multiplies them a block of rows at a
time (``CHUNK`` on one thread, a block that stays in the core's cache; see
``recforge.nn.blocking``) and rebuilds each block in the backward
instead of saving it, the same sums as the whole-batch product. Each layer's map is sum-pooled
over the embedding dimension; the pooled vectors are concatenated into the output. With
``split_half`` every layer but the last sends half of its maps to the output and only the
other half on to the next layer, as in the paper's released code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recforge.nn.blocking import block_rows
from recforge.nn.exporting import exporting

CHUNK = 256  # rows (b, d) per block on 1 thread (256 x 1664 floats = 1.7 MB): nn.blocking


class _CinLayer(torch.autograd.Function):
    """z = x ⊗ x0 row by row, out = z Wᵀ + b, in blocks of ``CHUNK`` rows.

    x (N, H), x0 (N, m), weight (J, H*m), bias (J,) -> (N, J); N = B*D rows (b, d). The
    backward rebuilds each block of z: dW += gᵀ z, dz = g W, dx = Σ_i dz[:, :, i] x0_i,
    dx0 = Σ_h dz[:, h, :] x_h."""

    @staticmethod
    def forward(ctx, x, x0, weight, bias):  # type: ignore[override]
        n, h = x.shape
        m = x0.shape[1]
        rows = block_rows(n, CHUNK)
        out = x.new_empty(n, weight.shape[0])
        z = x.new_empty(min(rows, n), h, m)
        wt = weight.t()
        for s in range(0, n, rows):
            e = min(n, s + rows)
            zc = torch.mul(x[s:e, :, None], x0[s:e, None, :], out=z[: e - s]).view(e - s, -1)
            torch.addmm(bias, zc, wt, out=out[s:e])
        ctx.save_for_backward(x, x0, weight)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, x0, weight = ctx.saved_tensors
        grad = grad.contiguous()
        n, h = x.shape
        m = x0.shape[1]
        gx, gx0 = torch.empty_like(x), torch.empty_like(x0)
        gw = torch.zeros_like(weight)
        rows = block_rows(n, CHUNK)
        z = x.new_empty(min(rows, n), h, m)
        gz = x.new_empty(min(rows, n), h * m)
        for s in range(0, n, rows):
            e = min(n, s + rows)
            zc = torch.mul(x[s:e, :, None], x0[s:e, None, :], out=z[: e - s])
            gc = grad[s:e]
            gw.addmm_(gc.t(), zc.view(e - s, -1))
            dz = torch.mm(gc, weight, out=gz[: e - s]).view(e - s, h, m)
            torch.bmm(dz, x0[s:e, :, None], out=gx[s:e, :, None])
            torch.bmm(x[s:e, None, :], dz, out=gx0[s:e, None, :])
        return gx, gx0, gw, grad.sum(0)


def cin_layer(x: torch.Tensor, x0: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    """One CIN product: rows of x (N, H) and x0 (N, m) -> (x ⊗ x0) weightᵀ + bias (N, J).
    While a graph is exported the whole-batch product is recorded instead (a loop over
    blocks would be traced for one batch size)."""
    if exporting():
        z = (x.unsqueeze(-1) * x0.unsqueeze(-2)).flatten(1)  # (N, H*m)
        return torch.addmm(bias, z, weight.t())
    return _CinLayer.apply(x.contiguous(), x0.contiguous(), weight, bias)


_ACTIVATIONS = {"identity": nn.Identity, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class CIN(nn.Module):
    """Compressed Interaction Network: (B, m, D) field embeddings -> (B, out_dim).

    Parameters
    ----------
    n_fields: m, the number of fields.
    layer_sizes: H_1..H_L, feature maps per layer (even numbers when ``split_half``).
    activation: applied to each layer's feature maps ("identity", "relu", "tanh", "sigmoid").
    split_half: route half of each non-final layer to the output (see the module docstring).
    """

    def __init__(
        self,
        n_fields: int,
        layer_sizes: Sequence[int] = (128, 128),
        *,
        activation: str = "relu",
        split_half: bool = True,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"CIN: unknown activation {activation!r}; use one of {sorted(_ACTIVATIONS)}."
            )
        if not layer_sizes:
            raise ValueError("CIN: layer_sizes must name at least one layer.")
        self.n_fields, self.split_half = n_fields, split_half
        self.layer_sizes = list(layer_sizes)
        self.convs = nn.ModuleList()
        self.activation = _ACTIVATIONS[activation]()
        prev, out_dim = n_fields, 0
        for k, size in enumerate(self.layer_sizes):
            last = k == len(self.layer_sizes) - 1
            if split_half and not last and size % 2:
                raise ValueError(
                    f"CIN: with split_half every layer but the last needs an even size, got {size}."
                )
            self.convs.append(nn.Conv1d(prev * n_fields, size, kernel_size=1))
            prev = size // 2 if split_half and not last else size
            out_dim += size // 2 if split_half and not last else size
        self.out_dim = out_dim

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """x0: (B, m, D) -> (B, out_dim), the sum-pooled maps of every layer concatenated."""
        b, m, d = x0.shape
        x0r = x0.transpose(1, 2).reshape(b * d, m)  # (B*D, m): rows (b, d)
        x, pooled = x0r, []
        for k, conv in enumerate(self.convs):
            w = conv.weight.view(conv.out_channels, -1)  # (H_{k+1}, H_k*m)
            h = self.activation(cin_layer(x, x0r, w, conv.bias))  # (B*D, H_{k+1})
            if self.split_half and k < len(self.convs) - 1:
                x, out = torch.split(h, h.shape[-1] // 2, dim=-1)  # next layer, output
            else:
                x, out = h, h
            pooled.append(out.reshape(b, d, -1).sum(dim=1))  # (B, H_out)
        return torch.cat(pooled, dim=1)  # (B, out_dim)
