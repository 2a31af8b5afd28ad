"""Gradient-boosted trees as rankers: plain LightGBM and GBDT+LR (He et al., Facebook 2014).

* ``lightgbm``: a LightGBM binary classifier on the encoded features.
* ``gbdt_lr``: the trees act as a learned feature transform. Each tree maps a row to one of
  its leaves; the leaf indices of all trees, one-hot encoded (n, Σ leaves), are the input
  of an L2-regularised logistic regression (scikit-learn, liblinear).

Inputs come from ``FeatureEncoder``: categorical codes are LightGBM categorical features
(0 = missing/unseen), numeric columns are standardised values, multi-valued fields become
multi-hot columns. The booster is saved in LightGBM's text format inside ``state.json``
(``Booster.model_to_string``) and read back with ``lgb.Booster(model_str=...)``; no pickle.
"""

from __future__ import annotations

import logging
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from recforge.data.features import EncodedFeatures, FeatureEncoder
from recforge.exceptions import ConfigError, DataError
from recforge.metrics import auc, log_loss
from recforge.models.base import Ranker
from recforge.models.registry import register
from recforge.threads import resolve_threads

logger = logging.getLogger(__name__)


def binary_labels(frame: pd.DataFrame, label: str, where: str) -> np.ndarray:
    """The 0/1 label column of ``frame`` as float32 (n,); DataError naming what is wrong."""
    if label not in frame.columns:
        raise DataError(
            f"{where}: label column {label!r} not in the frame; found {list(frame.columns)}."
        )
    y = pd.to_numeric(frame[label], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: labels must be 0/1, row {row} holds {frame[label].iloc[row]!r}; "
            f"binarise the column first (e.g. rating >= 4).",
            column=label,
        )
    return y.astype(np.float32)


def tree_matrix(encoder: FeatureEncoder, x: EncodedFeatures) -> sp.csr_matrix:
    """Encoded features as one CSR matrix for LightGBM: [categorical codes | numeric |
    multi-hot of every multi field], shape (n, n_cat + n_num + Σ multi vocab sizes)."""
    n = len(x)
    blocks = [
        sp.csr_matrix(x.categorical.astype(np.float64)),
        sp.csr_matrix(x.numeric.astype(np.float64)),
    ]
    for f in encoder.fields_of("multi"):
        codes = x.multi[f.name]  # (n, max_len), 0 = padding
        rows, cols = np.nonzero(codes)
        hot = sp.csr_matrix(
            (np.ones(len(rows)), (rows, codes[rows, cols])), shape=(n, f.vocab_size)
        )
        hot.data[:] = 1.0  # a value repeated in one row counts once
        blocks.append(hot[:, 1:])
    return sp.hstack(blocks, format="csr")


class _LightGBMRanker(Ranker):
    """Shared LightGBM training: encoding, early stopping on ``valid``, text-format saving."""

    _fitted_attr = "booster_"

    def __init__(
        self,
        *,
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        max_depth: int = -1,
        min_child_samples: int = 20,
        subsample: float = 1.0,
        colsample_bytree: float = 1.0,
        reg_lambda: float = 0.0,
        early_stopping_rounds: int = 30,
        min_count: int = 1,
        seed: int = 0,
        num_threads: int | None = None,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = early_stopping_rounds
        self.min_count = min_count
        self.seed = seed
        self.num_threads = num_threads

    def _lgb_params(self) -> dict[str, Any]:
        if self.n_estimators < 1 or self.num_leaves < 2 or self.learning_rate <= 0:
            raise ConfigError(
                f"{type(self).__name__}: need n_estimators >= 1, num_leaves >= 2, learning_rate > 0; "
                f"got {self.n_estimators}, {self.num_leaves}, {self.learning_rate}."
            )
        return {
            "objective": "binary",
            "metric": ["auc", "binary_logloss"],
            "first_metric_only": True,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_child_samples": self.min_child_samples,
            "bagging_fraction": self.subsample,
            "bagging_freq": 1 if self.subsample < 1 else 0,
            "feature_fraction": self.colsample_bytree,
            "lambda_l2": self.reg_lambda,
            "seed": self.seed,
            "num_threads": resolve_threads(self.num_threads),
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }

    def _train_booster(
        self, frame: pd.DataFrame, label: str, valid: pd.DataFrame | None
    ) -> tuple[sp.csr_matrix, np.ndarray]:
        """Fit the encoder and the booster (sets encoder_, booster_, metrics_); returns the
        training matrix and labels for a second stage."""
        self.check_params()
        where = f"{type(self).__name__}.fit"
        y = binary_labels(frame, label, where)
        encoder = FeatureEncoder(min_count=self.min_count).fit(frame, label=label)
        x = tree_matrix(encoder, encoder.transform(frame))
        cat = list(range(encoder.n_categorical))
        train_set = lgb.Dataset(x, y, categorical_feature=cat, free_raw_data=False)
        valid_sets, callbacks = [], []
        if valid is not None:
            yv = binary_labels(valid, label, f"{where}(valid)")
            xv = tree_matrix(encoder, encoder.transform(valid))
            valid_sets = [lgb.Dataset(xv, yv, categorical_feature=cat, reference=train_set)]
            if self.early_stopping_rounds > 0:
                callbacks.append(lgb.early_stopping(self.early_stopping_rounds, verbose=False))
        booster = lgb.train(
            self._lgb_params(),
            train_set,
            num_boost_round=self.n_estimators,
            valid_sets=valid_sets,
            callbacks=callbacks,
        )
        # keep only the best iterations, so that a saved and a live booster predict alike
        self.booster_ = lgb.Booster(model_str=booster.model_to_string())
        self.encoder_ = encoder
        self.metrics_ = {"n_trees": self.booster_.num_trees()}
        return x, y

    def _features(self, frame: pd.DataFrame) -> sp.csr_matrix:
        self._check_fitted("predict_proba")
        return tree_matrix(self.encoder_, self.encoder_.transform(frame))

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Click probability per row: (n,) float64."""
        self._check_fitted("predict_proba")
        return self.predict_proba_encoded(self.encoder_.transform(frame))

    def _record_valid(self, valid: pd.DataFrame | None, label: str) -> None:
        if valid is not None:
            yv = binary_labels(valid, label, "valid")
            p = self.predict_proba(valid)
            if 0 < yv.sum() < len(yv):
                self.metrics_["valid_auc"] = auc(yv, p)
            self.metrics_["valid_logloss"] = log_loss(yv, p)

    def _save_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, state = super()._save_state()
        state["encoder"] = self.encoder_.to_json()
        state["booster"] = self.booster_.model_to_string()
        return arrays, state

    def _load_state(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        super()._load_state(arrays, state)
        self.encoder_ = FeatureEncoder.from_json(state["encoder"])
        self.booster_ = lgb.Booster(model_str=state["booster"])

    def _schema(self) -> dict[str, Any]:
        return {"features": [f.source or f.name for f in self.encoder_.fields_]}


@register("lightgbm")
class LightGBMRanker(_LightGBMRanker):
    """A LightGBM binary classifier (``objective="binary"``) over ``FeatureEncoder`` inputs.

    Early stopping on validation AUC when ``valid`` is given (``early_stopping_rounds``).
    Parameters follow LightGBM's scikit-learn names: n_estimators (max boosting rounds),
    learning_rate, num_leaves, max_depth, min_child_samples, subsample (bagging fraction),
    colsample_bytree (feature fraction), reg_lambda (L2 on leaf values); min_count is the
    encoder's rare-value threshold; num_threads: LightGBM's threads (None: the
    ``recforge.threads`` default; training is deterministic with any count).
    """

    smoke_params = {"n_estimators": 10, "num_leaves": 7, "min_child_samples": 5}

    def fit(self, frame: pd.DataFrame, label: str = "label", valid: pd.DataFrame | None = None):
        self._train_booster(frame, label, valid)
        self._record_valid(valid, label)
        return self

    def predict_proba_encoded(self, x: EncodedFeatures) -> np.ndarray:
        """``predict_proba`` of rows already encoded by ``encoder_``: (n,) float64."""
        return np.asarray(self.booster_.predict(tree_matrix(self.encoder_, x)), dtype=np.float64)


@register("gbdt_lr")
class GBDTLR(_LightGBMRanker):
    """GBDT+LR: LightGBM leaves one-hot encoded into an L2 logistic regression.

    Extra parameters: ``C`` (inverse L2 strength of the logistic regression) and
    ``lr_max_iter``. The trees are trained first (with early stopping on ``valid``), then
    the logistic regression on the one-hot leaf indices of the training rows.
    """

    smoke_params = {"n_estimators": 10, "num_leaves": 7, "min_child_samples": 5}

    def __init__(
        self,
        *,
        n_estimators: int = 100,
        learning_rate: float = 0.1,
        num_leaves: int = 31,
        max_depth: int = -1,
        min_child_samples: int = 20,
        subsample: float = 1.0,
        colsample_bytree: float = 1.0,
        reg_lambda: float = 0.0,
        early_stopping_rounds: int = 30,
        min_count: int = 1,
        C: float = 0.1,
        lr_max_iter: int = 200,
        seed: int = 0,
        num_threads: int | None = None,
    ) -> None:
        super().__init__(
            n_estimators=n_estimators,
            learning_rate=learning_rate,
            num_leaves=num_leaves,
            max_depth=max_depth,
            min_child_samples=min_child_samples,
            subsample=subsample,
            colsample_bytree=colsample_bytree,
            reg_lambda=reg_lambda,
            early_stopping_rounds=early_stopping_rounds,
            min_count=min_count,
            seed=seed,
            num_threads=num_threads,
        )
        self.C = C
        self.lr_max_iter = lr_max_iter

    def fit(self, frame: pd.DataFrame, label: str = "label", valid: pd.DataFrame | None = None):
        from sklearn.linear_model import LogisticRegression

        x, y = self._train_booster(frame, label, valid)
        tree_info = self.booster_.dump_model()["tree_info"]
        leaves = np.array([t["num_leaves"] for t in tree_info], dtype=np.int64)
        self.leaf_offsets_ = np.concatenate([[0], np.cumsum(leaves)[:-1]])  # (n_trees,)
        self.n_leaves_ = int(leaves.sum())
        if len(np.unique(y)) < 2:
            raise DataError(f"GBDTLR.fit: the label column {label!r} holds a single class.")
        lr = LogisticRegression(
            C=self.C, solver="liblinear", max_iter=self.lr_max_iter, random_state=self.seed
        )
        lr.fit(self._leaf_onehot(x), y)
        self.coef_ = lr.coef_.ravel().astype(np.float64)  # (n_leaves,)
        self.intercept_ = float(lr.intercept_[0])
        self._record_valid(valid, label)
        return self

    def _leaf_onehot(self, x: sp.csr_matrix) -> sp.csr_matrix:
        """Leaf index of every tree, one-hot: (n, n_leaves_) with one 1 per tree."""
        if x.shape[0] == 0:  # LightGBM's pred_leaf divides by the row count
            return sp.csr_matrix((0, self.n_leaves_))
        leaf = np.asarray(self.booster_.predict(x, pred_leaf=True), dtype=np.int64)  # (n, n_trees)
        leaf = leaf.reshape(x.shape[0], -1)
        cols = (leaf + self.leaf_offsets_[None, :]).ravel()
        rows = np.repeat(np.arange(x.shape[0]), leaf.shape[1])
        return sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(x.shape[0], self.n_leaves_))

    def decision_function(self, frame: pd.DataFrame) -> np.ndarray:
        """The logistic regression's logit per row: (n,)."""
        return self._leaf_onehot(self._features(frame)) @ self.coef_ + self.intercept_

    def predict_proba_encoded(self, x: EncodedFeatures) -> np.ndarray:
        """``predict_proba`` of rows already encoded by ``encoder_``: (n,) float64."""
        z = self._leaf_onehot(tree_matrix(self.encoder_, x)) @ self.coef_ + self.intercept_
        return 1.0 / (1.0 + np.exp(-z))

    def _save_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, state = super()._save_state()
        arrays["coef"] = self.coef_
        arrays["leaf_offsets"] = self.leaf_offsets_
        state["intercept"] = self.intercept_
        state["n_leaves"] = self.n_leaves_
        return arrays, state

    def _load_state(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        super()._load_state(arrays, state)
        self.coef_ = arrays["coef"]
        self.leaf_offsets_ = arrays["leaf_offsets"]
        self.intercept_ = float(state["intercept"])
        self.n_leaves_ = int(state["n_leaves"])
