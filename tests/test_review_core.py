"""Regression tests for bugs found in review of the core modules (config, trainer, ...)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from recforge.config import from_dict
from recforge.exceptions import ConfigError
from recforge.train import TrainConfig, Trainer

torch.set_num_threads(1)


@dataclass
class _Cfg:
    a: int = 1


@pytest.mark.parametrize("bad", ["random", [1, 2], 3])
def test_from_dict_rejects_a_non_mapping_with_a_config_error(bad):
    # dict("random") raised a bare ValueError ("dictionary update sequence ...")
    with pytest.raises(ConfigError, match="expected a mapping"):
        from_dict(_Cfg, bad, where="job.split")


def test_early_stopping_ignores_a_nan_first_epoch():
    # a NaN monitor value at epoch 0 (e.g. single-class validation AUC) became the best value
    # and no later finite value could beat it: epoch 0's weights were restored
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).float()
    torch.manual_seed(0)
    m = nn.Linear(3, 1)
    scores = iter([float("nan"), 0.6, 0.7, 0.65, 0.64])
    snapshots = []

    def valid_fn(mod):
        snapshots.append(mod.weight.detach().clone())
        return {"auc": next(scores)}

    def loss_fn(mod, b):
        return nn.functional.binary_cross_entropy_with_logits(mod(b[0]).squeeze(-1), b[1])

    hist = Trainer(TrainConfig(epochs=5, patience=2, lr=0.1)).fit(
        m, loss_fn, lambda e: [(x, y)], valid_fn
    )
    assert hist.best_epoch == 2 and hist.best_value == 0.7
    assert hist.stopped_early and len(hist.valid) == 5
    torch.testing.assert_close(m.weight, snapshots[2])


def test_gbdt_lr_predicts_an_empty_frame():
    # LightGBM's predict(pred_leaf=True) raised ZeroDivisionError on 0 rows
    import numpy as np
    import pandas as pd

    from recforge import models

    rng = np.random.default_rng(0)
    fr = pd.DataFrame(
        {"u": rng.integers(0, 10, 200), "x": rng.random(200), "label": rng.integers(0, 2, 200)}
    )
    m = models.get("gbdt_lr", n_estimators=5, num_leaves=4, min_child_samples=5).fit(fr)
    p = m.predict_proba(fr.iloc[:0].drop(columns="label"))
    assert p.shape == (0,)
    assert m.predict_proba(fr.iloc[:3]).shape == (3,)
