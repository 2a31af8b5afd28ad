"""Factorization-machine interactions: FM's sum-square trick and field-aware FM.

FM (Rendle, 2010): ``sum_{i<j} <v_i, v_j> = 0.5 * sum_d ((sum_i v_id)^2 - sum_i v_id^2)``,
O(F * D) instead of O(F^2 * D).
FFM (Juan et al., 2016): each field i has one vector per other field j, and the pair
(i, j) uses ``<v_{i,j}, v_{j,i}>``.
"""

from __future__ import annotations

import torch
from torch import nn


class FMInteraction(nn.Module):
    """Second-order FM term. (B, F, D) -> (B,) or, with ``reduce_sum=False``, (B, D)."""

    def __init__(self, *, reduce_sum: bool = True) -> None:
        super().__init__()
        self.reduce_sum = reduce_sum

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        square_of_sum = emb.sum(dim=1).pow(2)  # (B, D)
        sum_of_square = emb.pow(2).sum(dim=1)  # (B, D)
        out = 0.5 * (square_of_sum - sum_of_square)  # (B, D)
        return out.sum(dim=1) if self.reduce_sum else out


class FFMInteraction(nn.Module):
    """Field-aware pairwise term. Input (B, F, F, D) where ``[:, i, j]`` is field i's vector
    for field j; output (B,) = sum over i<j of <v_{i,j}, v_{j,i}>."""

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        pair = (emb * emb.transpose(1, 2)).sum(-1)  # (B, F, F), symmetric
        diag = torch.diagonal(pair, dim1=1, dim2=2).sum(-1)  # (B,)
        return 0.5 * (pair.sum(dim=(1, 2)) - diag)
