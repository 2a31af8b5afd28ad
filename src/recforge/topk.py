"""Top-k selection on score matrices (the inner loop of every recommend call), and the
memory budget that sizes the score blocks it runs on.

Memory: scoring a batch of users materialises a dense (batch, n_items) float32 block; with
a fixed batch that grows with the catalogue (1,024 users x 1M items = 4 GB, plus what
top-k allocates). ``rows_per_batch`` sizes batches from ``SCORE_MEMORY_BUDGET`` instead
(``BYTES_PER_SCORE`` bytes per cell: the block and the copy that masking works on), and
``topk`` itself allocates only O(batch x n_items / chunk) beyond its input on large rows.
"""

from __future__ import annotations

import os

import numpy as np

# Bytes one batch of dense scores may take (RECFORGE_SCORE_MEMORY_MB overrides), counted at
# BYTES_PER_SCORE per score: 512 MiB = 44 users x 1M items, 894 users x 50k items.
SCORE_MEMORY_BUDGET = int(os.environ.get("RECFORGE_SCORE_MEMORY_MB", "512")) << 20
BYTES_PER_SCORE = 12  # float32 block + the float32 copy being masked, + slack
_FAST_MIN_COLS = 8192  # below this the plain partition is as fast
_FALLBACK_CELLS = 1 << 23  # rows x cols per exact-partition sub-batch (~100 MB of temporaries)


def rows_per_batch(n_cols: int, max_rows: int, budget: int | None = None) -> int:
    """How many rows of ``n_cols`` float32 scores fit the memory budget (at least 1, at most
    ``max_rows``). ``budget``: bytes, default ``SCORE_MEMORY_BUDGET``."""
    budget = SCORE_MEMORY_BUDGET if budget is None else int(budget)
    return int(max(1, min(int(max_rows), budget // (BYTES_PER_SCORE * max(int(n_cols), 1)))))


def topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest scores per row, sorted descending.

    scores: (B, N) float. Returns (idx (B, k') int64, vals (B, k') float32), k' = min(k, N).
    Ties are broken by lower index first; NaN ranks below every number.

    Wide rows take a chunked path: the row is cut into chunks of c columns, the k-th largest
    chunk maximum is a threshold that at least k scores reach, so every score of the top k
    (ties included) lies in one of the k chunks whose maximum reaches it; only those chunks
    are gathered and sorted. Rows where ties make that unselective (e.g. everything -inf)
    use the exact partition below, in bounded sub-batches.
    """
    scores = np.asarray(scores)
    if scores.ndim == 1:
        scores = scores[None, :]
    b, n = scores.shape
    k = min(k, n)
    if k <= 0:
        return np.zeros((b, 0), np.int64), np.zeros((b, 0), np.float32)
    if n < _FAST_MIN_COLS or 4 * k > n // 32 or b == 0:
        return _topk_partition(scores, k)
    return _topk_chunked(np.ascontiguousarray(scores), k)


def _topk_chunked(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    b, n = scores.shape
    c = max(32, min(1024, n // (4 * k)))  # columns per chunk
    m = n // c  # full chunks; the tail (n - m * c < c columns) is one more chunk
    body = scores[:, : m * c].reshape(b, m, c)  # a view: (B, m, c)
    cmax = np.fmax.reduce(body, axis=2)  # (B, m), NaN only where a chunk is all NaN
    if m * c < n:
        cmax = np.concatenate([cmax, np.fmax.reduce(scores[:, m * c :], axis=1)[:, None]], 1)
    cmax = np.where(np.isnan(cmax), -np.inf, cmax)
    n_chunks = cmax.shape[1]
    thr = np.partition(cmax, n_chunks - k, axis=1)[:, n_chunks - k]  # (B,) k-th largest
    sel = cmax >= thr[:, None]  # (B, n_chunks): k chunks per row unless maxima tie
    n_sel = sel.sum(axis=1)
    exact = np.flatnonzero((n_sel > 2 * k + 8) | np.isneginf(thr))
    sel[exact] = False

    rows, chunks = np.nonzero(sel)
    body_rows, body_chunks = rows[chunks < m], chunks[chunks < m]
    block = body[body_rows, body_chunks]  # (S, c) gathered chunks
    rr, jj = np.nonzero(block >= thr[body_rows][:, None])
    cand_row = [body_rows[rr]]
    cand_col = [body_chunks[rr].astype(np.int64) * c + jj]
    cand_val = [block[rr, jj]]
    tail_rows = rows[chunks == m]
    if len(tail_rows):
        tail = scores[tail_rows, m * c :]
        tr, tj = np.nonzero(tail >= thr[tail_rows][:, None])
        cand_row.append(tail_rows[tr])
        cand_col.append(m * c + tj.astype(np.int64))
        cand_val.append(tail[tr, tj])
    row = np.concatenate(cand_row)
    col = np.concatenate(cand_col)
    val = np.concatenate(cand_val)

    per_row = np.bincount(row, minlength=b)
    short = np.setdiff1d(np.flatnonzero(per_row < k), exact)  # NaN-heavy rows: exact path
    if len(short):
        keep = ~np.isin(row, short)
        row, col, val = row[keep], col[keep], val[keep]
        per_row[short] = 0
        exact = np.union1d(exact, short)
    order = np.lexsort((col, -val, row))  # by row, then score descending, then index
    row, col, val = row[order], col[order], val[order]
    starts = np.concatenate([[0], np.cumsum(per_row)[:-1]])

    out_idx = np.empty((b, k), np.int64)
    out_val = np.empty((b, k), np.float32)
    fast = np.setdiff1d(np.arange(b), exact)
    take = starts[fast][:, None] + np.arange(k)  # (F, k) positions in the sorted candidates
    out_idx[fast], out_val[fast] = col[take], val[take].astype(np.float32)
    step = max(1, _FALLBACK_CELLS // n)
    for s in range(0, len(exact), step):
        rows_e = exact[s : s + step]
        out_idx[rows_e], out_val[rows_e] = _topk_partition(scores[rows_e], k)
    return out_idx, out_val


def _topk_partition(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact top k by a full-row partition (temporaries: ~13 bytes per score)."""
    n = scores.shape[1]
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
