"""LambdaMART (Burges 2010): gradient-boosted trees trained with LightGBM's ``lambdarank``
objective on lists of rows grouped by user (or request), e.g. each user's recall
candidates labelled by what the user went on to consume.

The trees see the same inputs as the ``lightgbm`` ranker (``FeatureEncoder`` codes as
categorical features, numeric columns, multi-hot lists: ``tree_matrix``). Rows are grouped
by the ``group`` column (sorted stably inside ``fit``; the group column stays a feature);
the objective optimises NDCG@``eval_at`` of every list, and early stopping watches the
validation lists' NDCG@``eval_at``.

``predict_proba`` returns ``sigmoid(score)``: a monotone map of the ranking score into
[0, 1] so that the model drops into the funnel's ``Ranker`` slot; it orders candidates and
is not a calibrated click probability.
"""

from __future__ import annotations

from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np
import pandas as pd

from recforge.data.features import EncodedFeatures, FeatureEncoder
from recforge.exceptions import DataError
from recforge.models.ranking.gbdt import _LightGBMRanker, binary_labels, tree_matrix
from recforge.models.registry import register


@register("lambdamart")
class LambdaMART(_LightGBMRanker):
    """LambdaMART re-ranker. Own parameters: ``group`` (the column whose rows form one
    list: a user or request id; None: the whole frame is one list), ``eval_at`` (the k of the NDCG it optimises and reports).
    The tree parameters are ``lightgbm``'s (n_estimators, learning_rate, num_leaves, ...)."""

    smoke_params: ClassVar[dict[str, Any]] = {
        "n_estimators": 10,
        "num_leaves": 7,
        "min_child_samples": 5,
        "group": None,
    }

    def __init__(self, *, group: str | None = "user", eval_at: int = 10, **trees: Any) -> None:
        super().__init__(**trees)
        self.group = group
        self.eval_at = eval_at

    def _lgb_params(self) -> dict[str, Any]:
        params = super()._lgb_params()
        params.update(
            objective="lambdarank",
            metric=["ndcg"],
            eval_at=[int(self.eval_at)],
            lambdarank_truncation_level=max(int(self.eval_at) * 2, 20),
        )
        return params

    def _lists(self, frame: pd.DataFrame, label: str, where: str):
        if self.group is None:
            return frame, binary_labels(frame, label, where), np.array([len(frame)])
        if self.group not in frame.columns:
            raise DataError(
                f"{where}: group column {self.group!r} not in the frame (columns: "
                f"{list(frame.columns)}); set group= to the user/request column.",
                column=self.group,
            )
        order = np.argsort(pd.factorize(frame[self.group])[0], kind="stable")
        frame = frame.iloc[order]
        sizes = frame.groupby(self.group, sort=False, observed=True).size().to_numpy()
        return frame, binary_labels(frame, label, where), sizes

    def fit(self, frame: pd.DataFrame, label: str = "label", valid: pd.DataFrame | None = None):
        """Train on the lists of ``frame`` (grouped by ``group``); returns self."""
        self.check_params()
        where = "LambdaMART.fit"
        frame, y, sizes = self._lists(frame, label, where)
        encoder = FeatureEncoder(min_count=self.min_count).fit(frame, label=label)
        x = tree_matrix(encoder, encoder.transform(frame))
        cat = list(range(encoder.n_categorical))
        train_set = lgb.Dataset(x, y, group=sizes, categorical_feature=cat, free_raw_data=False)
        valid_sets, callbacks = [], []
        if valid is not None:
            valid, yv, vs = self._lists(valid, label, f"{where}(valid)")
            xv = tree_matrix(encoder, encoder.transform(valid))
            valid_sets = [
                lgb.Dataset(xv, yv, group=vs, categorical_feature=cat, reference=train_set)
            ]
            if self.early_stopping_rounds > 0:
                callbacks.append(lgb.early_stopping(self.early_stopping_rounds, verbose=False))
        booster = lgb.train(
            self._lgb_params(),
            train_set,
            num_boost_round=self.n_estimators,
            valid_sets=valid_sets,
            callbacks=callbacks,
        )
        self.booster_ = lgb.Booster(model_str=booster.model_to_string())
        self.encoder_ = encoder
        self.metrics_ = {"n_trees": self.booster_.num_trees()}
        if valid_sets:
            key = f"ndcg@{int(self.eval_at)}"
            best = booster.best_score.get("valid_0", {}).get(key)
            if best is not None:
                self.metrics_[f"valid_{key}"] = float(best)
        return self

    def decision_function_encoded(self, x: EncodedFeatures) -> np.ndarray:
        """The raw ranking score per row: (n,) float64."""
        self._check_fitted("decision_function_encoded")
        if len(x) == 0:
            return np.zeros(0, dtype=np.float64)
        return np.asarray(self.booster_.predict(tree_matrix(self.encoder_, x)), dtype=np.float64)

    def predict_proba_encoded(self, x: EncodedFeatures) -> np.ndarray:
        """``sigmoid(score)`` per row (n,): ordered like the score, not calibrated."""
        return 1.0 / (1.0 + np.exp(-self.decision_function_encoded(x)))
