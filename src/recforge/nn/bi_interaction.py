"""NFM's bi-interaction pooling (He & Chua 2017).

Sums the element-wise products of every pair of field embeddings in O(F·D)::

    f_BI(E) = Σ_{i<j} e_i ⊙ e_j = 0.5 * ((Σ_i e_i)² - Σ_i e_i²)

so FM's second-order term is ``f_BI(E).sum(-1)`` and NFM feeds the (B, D) vector to an MLP.
"""

from __future__ import annotations

import torch
from torch import nn


class BiInteraction(nn.Module):
    """(B, F, D) field embeddings -> (B, D) sum of pairwise element-wise products."""

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        square_of_sum = emb.sum(dim=1).pow(2)  # (B, D)
        sum_of_square = emb.pow(2).sum(dim=1)  # (B, D)
        return 0.5 * (square_of_sum - sum_of_square)
