"""Encoded features as torch tensors, and mini-batches cut from them.

A batch is a plain dict::

    {"categorical": (B, n_cat) int64, "numeric": (B, n_num) float32,
     "multi": {name: (B, max_len) int64, 0 = padding}}

``to_tensors`` converts a whole ``EncodedFeatures`` once (zero-copy where the arrays allow);
``take`` cuts rows out of it with one ``index_select`` per array, so the training loop never
touches pandas or Python rows.
"""

from __future__ import annotations

import numpy as np
import torch

from recforge.data.features import EncodedFeatures

Batch = dict  # {"categorical": Tensor, "numeric": Tensor, "multi": dict[str, Tensor]}


def to_tensors(x: EncodedFeatures) -> Batch:
    """All rows of ``x`` as a batch dict (shares memory with contiguous NumPy arrays)."""
    return {
        "categorical": torch.from_numpy(np.ascontiguousarray(x.categorical, dtype=np.int64)),
        "numeric": torch.from_numpy(np.ascontiguousarray(x.numeric, dtype=np.float32)),
        "multi": {
            k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.int64)) for k, v in x.multi.items()
        },
    }


def take(batch: Batch, idx: torch.Tensor) -> Batch:
    """Rows ``idx`` ((B,) int64 tensor) of a batch dict."""
    return {
        "categorical": batch["categorical"].index_select(0, idx),
        "numeric": batch["numeric"].index_select(0, idx),
        "multi": {k: v.index_select(0, idx) for k, v in batch["multi"].items()},
    }


def batch_size_of(batch: Batch) -> int:
    return int(batch["categorical"].shape[0])


def batch_from_encoded(x: EncodedFeatures, idx: np.ndarray | torch.Tensor | None = None) -> Batch:
    """A batch dict from encoded rows: all rows, or rows ``idx``."""
    full = to_tensors(x)
    if idx is None:
        return full
    return take(full, torch.as_tensor(np.asarray(idx), dtype=torch.int64))
