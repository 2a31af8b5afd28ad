"""Sequence augmentations for contrastive sequential training (CL4SRec, Xie et al. 2022).

Each view of a history applies one augmentation, drawn uniformly per sequence:

* **crop**: a random contiguous ``CROP`` share of the items;
* **mask**: each item dropped with probability ``MASK`` (the item tables have no mask
  token, so a masked item is removed rather than replaced; at least one item stays);
* **reorder**: a random contiguous ``REORDER`` share of the items shuffled in place.

``two_views(seqs, align, rng)`` takes a padded batch (B, W) of item index + 1 (0 =
padding) laid out as ``align`` says ("right": the most recent item in the last column,
"left": from the first column) and returns two augmented batches of the same shape and
layout.
"""

from __future__ import annotations

import numpy as np

CROP = 0.6  # share of a history a crop keeps (CL4SRec's eta)
MASK = 0.3  # probability an item is masked (gamma)
REORDER = 0.3  # share of a history a reorder shuffles (beta)
AUGMENTATIONS = ("crop", "mask", "reorder")


def augment(items: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One augmentation of one history (its items, oldest first, no padding)."""
    n = len(items)
    if n <= 1:
        return items.copy()
    if kind == "crop":
        keep = max(1, int(round(CROP * n)))
        start = int(rng.integers(0, n - keep + 1))
        return items[start : start + keep].copy()
    if kind == "mask":
        kept = items[rng.random(n) >= MASK]
        return kept if len(kept) else items[-1:].copy()
    if kind == "reorder":
        span = max(2, int(round(REORDER * n)))
        start = int(rng.integers(0, n - span + 1))
        out = items.copy()
        out[start : start + span] = rng.permutation(out[start : start + span])
        return out
    raise ValueError(f"augment: kind={kind!r}; choose one of {AUGMENTATIONS}.")


def two_views(
    seqs: np.ndarray, align: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Two augmented copies (B, W) of the padded batch ``seqs`` (B, W), same layout."""
    views = [np.zeros_like(seqs), np.zeros_like(seqs)]
    for r, row in enumerate(seqs):
        items = row[row > 0]
        for v in views:
            aug = augment(items, AUGMENTATIONS[int(rng.integers(0, 3))], rng)
            if align == "right":
                v[r, v.shape[1] - len(aug) :] = aug
            else:
                v[r, : len(aug)] = aug
    return views[0], views[1]
