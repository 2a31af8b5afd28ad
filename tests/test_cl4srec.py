"""CL4SRec augmentations (crop, mask, reorder) and the contrastive term of SASRec/GRU4Rec."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recforge import models
from recforge.data.augment import augment, two_views
from recforge.exceptions import ConfigError
from tests.test_sequential import _chains


def test_augmentations_keep_items_and_order_where_they_should():
    rng = np.random.default_rng(0)
    items = np.arange(1, 11)
    crop = augment(items, "crop", rng)
    assert len(crop) == 6 and np.all(np.diff(crop) == 1)  # contiguous 60 %
    masked = augment(items, "mask", rng)
    assert 1 <= len(masked) <= 10 and np.all(np.diff(masked) > 0)  # a subsequence
    reordered = augment(items, "reorder", rng)
    assert sorted(reordered) == list(items)
    moved = np.flatnonzero(reordered != items)
    assert len(moved) == 0 or moved.max() - moved.min() < 3  # one span of 30 %
    np.testing.assert_array_equal(augment(np.array([4]), "crop", rng), [4])


@pytest.mark.parametrize("align", ["right", "left"])
def test_two_views_keep_the_padding_layout(align):
    seqs = np.array([[0, 0, 3, 4, 5, 6], [0, 0, 0, 0, 1, 2]])
    if align == "left":
        seqs = np.array([[3, 4, 5, 6, 0, 0], [1, 2, 0, 0, 0, 0]])
    v1, v2 = two_views(seqs, align, np.random.default_rng(1))
    for v in (v1, v2):
        assert v.shape == seqs.shape
        for row, orig in zip(v, seqs):
            items = row[row > 0]
            assert set(items) <= set(orig[orig > 0]) and len(items) >= 1
            filled = np.flatnonzero(row > 0)
            assert (filled[-1] == len(row) - 1) if align == "right" else (filled[0] == 0)


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_contrastive_term_trains_and_changes_the_model(name):
    torch.manual_seed(0)
    params = dict(models.get_class(name).smoke_params)
    params.update(embedding_dim=16, epochs=15, batch_size=32, lr=0.02, num_threads=1)
    base = models.get(name, **params).fit(_chains())
    cl = models.get(name, cl_weight=0.3, cl_temperature=0.5, **params).fit(_chains())
    assert not np.allclose(base.item_factors_, cl.item_factors_)
    ids, _ = cl.recommend_from_history([2, 3, 4, 5], k=3)
    assert 6 in ids  # the next-item task is still learned
    with pytest.raises(ConfigError, match="cl_temperature"):
        models.get(name, cl_weight=0.3, cl_temperature=0.0, **params).fit(_chains())
