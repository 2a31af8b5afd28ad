"""``MultiTaskRanker``: what every multi-label ranker shares (MMoE, PLE, ESMM), so that a
model file only builds its network.

``fit(frame, label=[...])`` takes one column name or a list of them (``tasks_`` keeps the
list); the network's ``forward(batch)`` returns logits (B, T), one per task.

Training loss: ``Σ_t w_t · loss(logit_t, y_t)`` with ``task_weights`` (default all 1) and the
shared ``loss`` (BCE by default). Validation: AUC and logloss per task (``auc_<label>``,
``logloss_<label>``) and their means (``auc``, ``logloss``, what early stopping monitors), per
epoch in ``train_history_.valid``; the best epoch's figures are in ``metrics_``.

``predict_proba`` returns (n, T) for T > 1 tasks and (n,) for a single label (so that a
one-label model is a drop-in ``Ranker``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from recforge.data.features import FeatureEncoder
from recforge.exceptions import ConfigError, DataError
from recforge.models.ranking.gbdt import binary_labels
from recforge.models.ranking.torch_base import TorchRanker
from recforge.nn.inputs import to_tensors


class MultiTaskRanker(TorchRanker):
    """Base of the multi-task rankers. Own hyperparameter: ``task_weights`` (one weight per
    label, None = all 1). Shared ones: see ``TorchRanker`` (``sampling`` must stay "none":
    re-sampling is defined for one label)."""

    def __init__(self, *, task_weights: Sequence[float] | None = None, **shared: Any) -> None:
        super().__init__(**shared)
        self.task_weights = task_weights

    def check_tasks(self, tasks: list[str]) -> None:
        """Hook: a model that needs a given number or kind of labels raises here."""

    def loss_value(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Weighted sum over tasks of the per-task loss; logits, y: (B, T)."""
        weights = self._weights()
        return sum(
            w * super(MultiTaskRanker, self).loss_value(logits[:, t], y[:, t])
            for t, w in enumerate(weights)
        )

    def valid_metrics(self, y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
        """Per-task AUC/logloss and their means; y, logits: (n, T)."""
        out: dict[str, float] = {}
        for t, task in enumerate(self.tasks_):
            m = super().valid_metrics(y[:, t], logits[:, t])
            out[f"auc_{task}"], out[f"logloss_{task}"] = m["auc"], m["logloss"]
        out["auc"] = float(np.mean([out[f"auc_{t}"] for t in self.tasks_]))
        out["logloss"] = float(np.mean([out[f"logloss_{t}"] for t in self.tasks_]))
        return out

    def _weights(self) -> list[float]:
        if self.task_weights is None:
            return [1.0] * len(self.tasks_)
        if len(self.task_weights) != len(self.tasks_):
            raise ConfigError(
                f"{type(self).__name__}: task_weights has {len(self.task_weights)} entries for "
                f"{len(self.tasks_)} labels {self.tasks_}; give one weight per label."
            )
        return [float(w) for w in self.task_weights]

    # ------------------------------------------------------------------ fit / predict
    def fit(
        self,
        frame: pd.DataFrame,
        label: str | Sequence[str] = "label",
        valid: pd.DataFrame | None = None,
    ) -> MultiTaskRanker:
        """Train on every label column at once; returns self. ``label``: a name or a list."""
        name = type(self).__name__
        self._check_params()
        tasks = [label] if isinstance(label, str) else list(label)
        if not tasks or len(set(tasks)) != len(tasks):
            raise ConfigError(f"{name}.fit: label must name distinct columns, got {label!r}.")
        if self.sampling != "none":
            raise ConfigError(
                f"{name}: sampling must be 'none' (re-sampling needs a single label)."
            )
        if self.list_loss != "none":
            raise ConfigError(f"{name}: list_loss must be 'none' (listwise losses take one label).")
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"{name}.fit expects a pandas DataFrame, got {type(frame).__name__}.")
        self.check_tasks(tasks)
        self.tasks_ = tasks
        self._weights()  # fail early on a wrong task_weights length
        y = np.stack([binary_labels(frame, t, f"{name}.fit") for t in tasks], axis=1)  # (n, T)
        self.check_labels(y, f"{name}.fit")
        options = dict(self.encoder_options or {})
        options["exclude"] = [*options.get("exclude", ()), *tasks]
        encoder = FeatureEncoder(min_count=self.min_count, max_len=self.max_len, **options).fit(
            frame
        )
        valid_data = None
        if valid is not None:
            yv = np.stack(
                [binary_labels(valid, t, f"{name}.fit(valid=...)") for t in tasks], axis=1
            )
            self.check_labels(yv, f"{name}.fit(valid=...)")
            valid_data = (to_tensors(encoder.transform(valid)), yv)
        module, hist = self._train(encoder.fields_, encoder.transform(frame), y, valid_data, 1.0)
        self.module_, self.train_history_, self.neg_rate_ = module, hist, 1.0
        if hist.valid:
            best = hist.best_epoch if hist.best_epoch is not None else len(hist.valid) - 1
            self.metrics_ = {"best_epoch": best, **hist.valid[best]}
        self.n_features_ = len(encoder.fields_)
        self.encoder_ = encoder  # last: marks the model fitted
        return self

    def check_labels(self, y: np.ndarray, where: str) -> None:
        """Hook: a model whose labels must relate (ESMM: conversion implies click) checks
        the (n, T) label matrix here."""

    def predict_logits(self, frame: pd.DataFrame, batch_size: int = 16384) -> np.ndarray:
        """Logits (n, T), or (n,) with a single label."""
        z = super().predict_logits(frame, batch_size)
        return z[:, 0] if z.ndim == 2 and z.shape[1] == 1 else z

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Probabilities (n, T), columns in ``tasks_`` order, or (n,) with a single label."""
        return super().predict_proba(frame)

    # ------------------------------------------------------------------ persistence
    def _save_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, state = super()._save_state()
        state["tasks"] = list(self.tasks_)
        return arrays, state

    def _load_state(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        self.tasks_ = list(state["tasks"])  # build_module needs the number of tasks
        super()._load_state(arrays, state)
