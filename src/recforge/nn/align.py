"""Zero-padding of GEMM inner dimensions to a multiple of ``ALIGN`` columns.

MKL's float32 GEMM is ~12 % slower for an inner dimension that is not a multiple of 8/16:
a B=4096 MLP 429-400-400-400-1 step (forward, backward, fused Adam) took 0.128 CPU-s on
one thread, 0.112 with 432 input columns (2 threads: 0.124 vs 0.110). The deep input
of the Criteo-shaped protocol is 26*16 + 13 = 429 columns wide.

So the layers that read a wide concatenation (``MLP``'s first layer, the cross networks)
take it padded with zero columns to ``aligned(width)``, and pad their own weights with
zero columns (and rows) *at forward time*: the parameters keep their logical shapes, so
initialisation, the optimizer state, weight decay, L2 penalties and saved artifacts are
those of the unpadded layer, and the outputs are the same function (the zero columns
multiply zero inputs; only the order of the GEMM's sums can change, ~1e-7).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

ALIGN = 16  # columns; a multiple of 8 was as fast as 16 for 429 -> 432


def aligned(width: int) -> int:
    """``width`` rounded up to a multiple of ``ALIGN``."""
    return -(-int(width) // ALIGN) * ALIGN


def pad_last(t: torch.Tensor, width: int) -> torch.Tensor:
    """``t`` (..., n) with zero columns appended up to (..., width); ``t`` itself if n == width."""
    extra = width - t.shape[-1]
    return t if extra == 0 else F.pad(t, (0, extra))


def pad_square(w: torch.Tensor, width: int) -> torch.Tensor:
    """A (n, n) matrix embedded top-left in a zero (width, width) one."""
    extra = width - w.shape[-1]
    return w if extra == 0 else F.pad(w, (0, extra, 0, extra))


def cat_padded(parts: Sequence[torch.Tensor], width: int | None = None) -> torch.Tensor:
    """``torch.cat(parts, 1)`` of (B, n_i) tensors, with zero columns appended up to
    ``width`` in the same copy (None: no padding). A single part with nothing to pad is
    returned as is (no copy)."""
    parts = list(parts)
    n = sum(int(p.shape[1]) for p in parts)
    extra = 0 if width is None else int(width) - n
    if extra < 0:
        raise ValueError(f"cat_padded: {n} columns do not fit in width={width}.")
    if extra:
        parts.append(parts[0].new_zeros(parts[0].shape[0], extra))
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)
