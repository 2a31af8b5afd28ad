"""Top-k selection on score matrices (the inner loop of every recommend call)."""

from __future__ import annotations

import numpy as np


def topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest scores per row, sorted descending.

    scores: (B, N) float. Returns (idx (B, k') int64, vals (B, k') float32), k' = min(k, N).
    Ties are broken by lower index first.
    """
    scores = np.asarray(scores)
    if scores.ndim == 1:
        scores = scores[None, :]
    n = scores.shape[1]
    k = min(k, n)
    if k <= 0:
        return np.zeros((scores.shape[0], 0), np.int64), np.zeros((scores.shape[0], 0), np.float32)
    if k < n:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        # argpartition picks arbitrary members of a tie that straddles the k-th place;
        # redo those rows with a stable full sort so that lower indices win ties
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1, keepdims=True)
        straddle = np.flatnonzero(
            (scores == kth).sum(axis=1)
            > (np.take_along_axis(scores, part, axis=1) == kth).sum(axis=1)
        )
        if len(straddle):
            part[straddle] = np.argsort(-scores[straddle], axis=1, kind="stable")[:, :k]
    else:
        part = np.broadcast_to(np.arange(n), scores.shape).copy()
    vals = np.take_along_axis(scores, part, axis=1)
    # sort by (-value, index) so that ties are deterministic
    order = np.lexsort((part, -vals), axis=1) if part.shape[0] else part
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return idx, np.take_along_axis(vals, order, axis=1).astype(np.float32)
