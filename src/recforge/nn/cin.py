"""xDeepFM's Compressed Interaction Network (Lian et al. 2018).

Vector-wise explicit interactions of bounded degree. With X0 (B, m, D) the field embeddings
and X^k (B, H_k, D) the k-th feature map::

    Z^{k+1}[b, h, i, :] = X^k[b, h, :] ⊙ X0[b, i, :]             (B, H_k, m, D)
    X^{k+1}[b, j, :]    = Σ_{h,i} W^{k+1}[j, h, i] Z^{k+1}[b, h, i, :]   (B, H_{k+1}, D)

(a 1x1 convolution over the H_k*m outer-product channels, computed as one matrix product
of the (B*D, H_k*m) outer products with the convolution's (H_{k+1}, H_k*m) weight: the
embedding axis leads, so the product is a plain GEMM -- faster on CPU than the
convolution kernel over length-D signals, and its backward too). Each layer's map is sum-pooled
over the embedding dimension; the pooled vectors are concatenated into the output. With
``split_half`` every layer but the last sends half of its maps to the output and only the
other half on to the next layer, as in the paper's released code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

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
        x0t = x0.transpose(1, 2)  # (B, D, m)
        x, pooled = x0t, []
        for k, conv in enumerate(self.convs):
            z = (x.unsqueeze(-1) * x0t.unsqueeze(-2)).reshape(b * d, -1)  # (B*D, H_k*m)
            w = conv.weight.view(conv.out_channels, -1)  # (H_{k+1}, H_k*m)
            h = self.activation(F.linear(z, w, conv.bias)).view(b, d, -1)  # (B, D, H_{k+1})
            if self.split_half and k < len(self.convs) - 1:
                x, out = torch.split(h, h.shape[-1] // 2, dim=-1)  # next layer, output
            else:
                x, out = h, h
            pooled.append(out.sum(dim=1))  # (B, H_out)
        return torch.cat(pooled, dim=1)  # (B, out_dim)
