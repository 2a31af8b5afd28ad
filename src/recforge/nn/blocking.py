"""How many rows a layer that works in row blocks (CIN, AFM's attention pooling) takes
at a time.

A block of a few hundred rows keeps a layer's large intermediate tensors in the core's
cache (1 thread: CIN forward + backward at B=4096, 26 fields 1.4 CPU-s in 256-row blocks,
2.1 in 4096-row blocks, 3.2-3.6 whole). With several torch threads every op of every
block is a parallel region, and on a busy machine each region can wait a scheduler slice
for a descheduled thread: 2 threads at load 4-5, the same CIN took 50 s in 256-row
blocks, 3.5-3.9 s in 4096-16384-row blocks, 5-6 s whole. So: small blocks on one thread,
at most ``MAX_BLOCKS`` blocks per call on more.
"""

from __future__ import annotations

import torch

MAX_BLOCKS = 8  # blocks per call when torch runs more than one thread


def block_rows(n: int, rows: int) -> int:
    """Rows per block for ``n`` rows: ``rows`` on one torch thread, else at least
    ``n / MAX_BLOCKS``."""
    if torch.get_num_threads() <= 1:
        return rows
    return max(rows, -(-n // MAX_BLOCKS))
