"""Re-sampling for rare clicks, on encoded features.

``resample(x, y, method=..., rate=..., seed=...)`` returns new ``(x, y, neg_rate)``:

* ``"over"``: random over-sampling of the minority class (with replacement) until
  minority / majority = ``rate``;
* ``"under"``: random under-sampling of the majority class to the same ratio;
* ``"negative_downsample"``: each negative is kept with probability ``rate`` (= w). A
  model trained on the result predicts p' = P(click | kept); ``neg_rate`` = w lets it
  restore calibration with p = p' / (p' + (1 - p') / w), i.e. logit(p) = logit(p') + log w
  (He et al., 2014, "Practical lessons from predicting clicks on ads at Facebook");
* ``"smote"``: SMOTE on the numeric columns; with categorical (and multi) columns
  SMOTE-NC, which gives a synthetic row the most frequent value among its neighbours
  (``imblearn.over_sampling.SMOTENC``; ``SMOTEN`` when no numeric column exists);
* ``"adasyn"``: ADASYN (``imblearn.over_sampling.ADASYN``) on the numeric columns; the
  categorical and multi values of a synthetic row are copied from its nearest minority row.

Over-sampling methods change class proportions on purpose; only ``negative_downsample``
comes with a calibration correction.
"""

from __future__ import annotations

import logging

import numpy as np

from recforge.data.features import EncodedFeatures
from recforge.exceptions import ConfigError, DataError

log = logging.getLogger(__name__)

METHODS = ("none", "over", "under", "negative_downsample", "smote", "adasyn")


def resample(
    x: EncodedFeatures, y: np.ndarray, *, method: str, rate: float = 1.0, seed: int = 0
) -> tuple[EncodedFeatures, np.ndarray, float]:
    """Re-sample encoded rows ``x`` with binary labels ``y`` (n,).

    Returns (x', y', neg_rate): neg_rate is the negative keep probability for
    ``negative_downsample`` and 1.0 otherwise.
    """
    if method not in METHODS:
        raise ConfigError(f"sampling={method!r}; choose one of {METHODS}.")
    if method == "none":
        return x, y, 1.0
    rate = float(rate)
    if not 0.0 < rate <= 1.0:
        raise ConfigError(
            f"sampling_rate={rate!r} for sampling={method!r}: must be in (0, 1] (the kept "
            f"share of negatives, or the target minority/majority ratio)."
        )
    y = np.asarray(y)
    if not np.isin(y, (0, 1)).all():
        raise DataError(
            f"sampling={method!r} needs hard 0/1 labels; got values {np.unique(y)[:5]}."
        )
    y = y.astype(np.float32)
    rng = np.random.default_rng(seed)
    if method == "negative_downsample":
        keep = (y == 1) | (rng.random(len(y)) < rate)
        idx = np.flatnonzero(keep)
        log.info("negative down-sampling: kept %d of %d rows (w=%.4g)", len(idx), len(y), rate)
        return x.take(idx), y[idx], rate
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise DataError(
            f"sampling={method!r} needs both classes; got {n_pos} positives, {n_neg} negatives."
        )
    minority = 1.0 if n_pos <= n_neg else 0.0
    min_idx = np.flatnonzero(y == minority)
    maj_idx = np.flatnonzero(y != minority)
    if method == "over":
        want = int(np.ceil(rate * len(maj_idx)))
        extra = rng.choice(min_idx, size=max(0, want - len(min_idx)), replace=True)
        idx = rng.permutation(np.concatenate([np.arange(len(y)), extra]))
        return x.take(idx), y[idx], 1.0
    if method == "under":
        want = min(len(maj_idx), int(np.ceil(len(min_idx) / rate)))
        kept = rng.choice(maj_idx, size=want, replace=False)
        idx = rng.permutation(np.concatenate([min_idx, kept]))
        return x.take(idx), y[idx], 1.0
    if len(min_idx) >= rate * len(maj_idx):
        log.info("%s: minority/majority is already >= %.3g; nothing to add", method, rate)
        return x, y, 1.0
    return (*_synthetic(x, y, method, rate, seed, len(min_idx)), 1.0)


def _synthetic(
    x: EncodedFeatures, y: np.ndarray, method: str, rate: float, seed: int, n_min: int
) -> tuple[EncodedFeatures, np.ndarray]:
    """SMOTE / ADASYN rows appended to the originals."""
    from imblearn.over_sampling import ADASYN, SMOTE, SMOTEN, SMOTENC

    if n_min < 2:
        raise DataError(f"sampling={method!r} needs at least 2 minority rows, got {n_min}.")
    k = min(5, n_min - 1)
    names = list(x.multi)
    discrete = np.hstack([x.categorical] + [x.multi[n] for n in names])  # (n, n_cat + sum L)
    n_disc, n_num = discrete.shape[1], x.numeric.shape[1]
    yi = y.astype(np.int64)
    if method == "smote":
        if n_num == 0:
            sampler = SMOTEN(sampling_strategy=rate, k_neighbors=k, random_state=seed)
            xr, yr = sampler.fit_resample(discrete, yi)
            disc_new, num_new = (
                np.asarray(xr)[len(y) :],
                np.zeros((len(yr) - len(y), 0), np.float32),
            )
        elif n_disc == 0:
            xr, yr = SMOTE(sampling_strategy=rate, k_neighbors=k, random_state=seed).fit_resample(
                x.numeric, yi
            )
            disc_new, num_new = np.zeros((len(yr) - len(y), 0), np.int64), np.asarray(xr)[len(y) :]
        else:
            full = np.hstack([discrete.astype(np.float64), x.numeric.astype(np.float64)])
            sampler = SMOTENC(
                categorical_features=list(range(n_disc)),
                sampling_strategy=rate,
                k_neighbors=k,
                random_state=seed,
            )
            xr, yr = sampler.fit_resample(full, yi)
            new = np.asarray(xr)[len(y) :]
            disc_new, num_new = new[:, :n_disc], new[:, n_disc:]
    else:  # adasyn
        if n_num == 0:
            raise ConfigError(
                "sampling='adasyn' interpolates numeric features and there are none; use "
                "'smote' (SMOTE-N for categorical data), 'over' or 'negative_downsample'."
            )
        from sklearn.neighbors import NearestNeighbors

        try:
            xr, yr = ADASYN(sampling_strategy=rate, n_neighbors=k, random_state=seed).fit_resample(
                x.numeric, yi
            )
        except ValueError as e:  # no minority row has majority neighbours: nothing to add
            log.warning("adasyn generated no rows (%s)", e)
            return x, y
        num_new = np.asarray(xr)[len(y) :]
        minority_rows = (
            np.flatnonzero(yi == int(yr[-1])) if len(yr) > len(y) else np.zeros(0, np.int64)
        )
        if len(num_new):
            nn_ = NearestNeighbors(n_neighbors=1).fit(x.numeric[minority_rows])
            nearest = minority_rows[nn_.kneighbors(num_new, return_distance=False)[:, 0]]
            disc_new = discrete[nearest]
        else:
            disc_new = np.zeros((0, n_disc), np.int64)
    y_new = np.asarray(yr, dtype=np.float32)[len(y) :]
    disc_new = np.rint(disc_new).astype(np.int64)
    n_cat = x.categorical.shape[1]
    multi, start = {}, n_cat
    for n in names:
        width = x.multi[n].shape[1]
        multi[n] = np.vstack([x.multi[n], disc_new[:, start : start + width]])
        start += width
    out = EncodedFeatures(
        np.vstack([x.categorical, disc_new[:, :n_cat]]),
        np.vstack([x.numeric, num_new.astype(np.float32)]),
        multi,
    )
    log.info("%s: added %d synthetic minority rows", method, len(y_new))
    return out, np.concatenate([y, y_new])
