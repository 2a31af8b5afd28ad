"""Re-sampling: ratios, calibration after negative down-sampling, SMOTE/ADASYN rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recforge import models
from recforge.data.features import FeatureEncoder
from recforge.data.imbalance import resample
from recforge.exceptions import ConfigError
from tests.conftest import make_tiny_ctr

torch.set_num_threads(1)


def rare_clicks(n: int, seed: int) -> pd.DataFrame:
    """~4% clicks; the true probability is a known logistic function of the features."""
    rng = np.random.default_rng(seed)
    cat = rng.choice(["a", "b", "c"], n)
    num = rng.normal(size=n)
    logit = -3.6 + 1.2 * (cat == "a") - 0.8 * (cat == "c") + 0.9 * num
    p = 1 / (1 + np.exp(-logit))
    return pd.DataFrame({"cat": cat, "num": num, "p": p, "label": (rng.random(n) < p).astype(int)})


@pytest.fixture(scope="module")
def encoded():
    df = make_tiny_ctr(400, seed=3)
    df["label"] = (np.arange(400) % 10 == 0).astype(int)  # 10% positives
    enc = FeatureEncoder().fit(df, label="label")
    return enc.transform(df), df["label"].to_numpy().astype(np.float32)


def test_over_and_under_reach_the_requested_ratio(encoded):
    x, y = encoded
    xo, yo, w = resample(x, y, method="over", rate=0.5, seed=0)
    assert w == 1.0 and yo.sum() == 180 and (yo == 0).sum() == 360 and len(xo) == 540
    xu, yu, _ = resample(x, y, method="under", rate=0.5, seed=0)
    assert yu.sum() == 40 and (yu == 0).sum() == 80 and len(xu) == 120
    # rows are copies of real rows
    orig = {tuple(r) for r in x.categorical}
    assert all(tuple(r) in orig for r in xo.categorical)


def test_negative_downsample_keeps_every_positive(encoded):
    x, y = encoded
    xs, ys, w = resample(x, y, method="negative_downsample", rate=0.25, seed=1)
    assert w == 0.25 and ys.sum() == y.sum()
    assert 0.15 * 360 < (ys == 0).sum() < 0.35 * 360
    with pytest.raises(ConfigError, match="sampling_rate"):
        resample(x, y, method="negative_downsample", rate=0.0)


def test_negative_downsampling_calibration_is_restored():
    train, test = rare_clicks(30000, seed=0), rare_clicks(6000, seed=1)
    feats = ["cat", "num", "label"]
    common = {"epochs": 4, "lr": 0.05, "batch_size": 512, "seed": 0}
    down = models.get("lr", sampling="negative_downsample", sampling_rate=0.1, **common)
    down.fit(train[feats])
    p = down.predict_proba(test[feats])
    base = test["label"].mean()
    assert abs(p.mean() - test["p"].mean()) < 0.2 * base  # calibrated on average
    # per-example: close to the true probabilities
    assert np.abs(p - test["p"]).mean() < 0.25 * base
    # without the correction the model would be ~1/w times too confident
    raw = 1 / (1 + np.exp(-(down.predict_logits(test[feats]) - np.log(0.1))))
    assert raw.mean() > 3 * base


def test_smote_and_adasyn_add_minority_rows(encoded):
    x, y = encoded
    xs, ys, _ = resample(x, y, method="smote", rate=1.0, seed=0)
    assert ys.sum() == (ys == 0).sum() == 360
    assert set(np.unique(xs.categorical[:, 0])) <= set(np.unique(x.categorical[:, 0]))
    new_num = xs.numeric[400:, 0]
    pos_num = x.numeric[y == 1, 0]
    assert pos_num.min() - 1e-6 <= new_num.min() and new_num.max() <= pos_num.max() + 1e-6
    assert xs.multi["tags"].shape == (720, x.multi["tags"].shape[1])
    xa, ya, _ = resample(x, y, method="adasyn", rate=1.0, seed=0)
    assert ya.sum() > 200 and len(xa) == len(ya)
    # categorical values of ADASYN rows come from real positive rows
    pos_cats = {tuple(r) for r in x.categorical[y == 1]}
    assert all(tuple(r) in pos_cats for r in xa.categorical[400:])


def test_ranker_sampling_option():
    df = make_tiny_ctr(400, seed=1)
    for method in ("over", "under", "smote", "adasyn"):
        m = models.get(
            "fm", embedding_dim=4, epochs=1, batch_size=64, sampling=method, sampling_rate=1.0
        )
        p = m.fit(df).predict_proba(df)
        assert np.isfinite(p).all() and m.neg_rate_ == 1.0
    with pytest.raises(ConfigError, match="sampling"):
        models.get("fm", sampling="sometimes").fit(df)
