"""ESMM (Ma et al. 2018, "Entire Space Multi-Task Model"): click-through and conversion
trained together on every impression, so the conversion model never sees only the
clicked (selection-biased) sample.

Two labels per impression: ``click`` and ``conversion`` (1 only where the impression was
clicked and then converted: conversion implies click). Shared field embeddings
E (B, F, D) -> x = flatten(E) -> two towers::

    pCTR   = σ(Tower_ctr(x))
    pCVR   = σ(Tower_cvr(x))                 p(conversion | click, x), never supervised directly
    pCTCVR = pCTR · pCVR                     p(click and conversion | x)

    loss   = BCE(pCTR, click) + BCE(pCTCVR, conversion)          over all impressions

The network returns logits (B, 2): ``logit(pCTR)`` and ``logit(pCTCVR)`` (in closed form,
``logit(σ(a)σ(b)) = -logsumexp(-a, -b, -a-b)``), so the shared training, validation and
``predict_proba`` of ``MultiTaskRanker`` apply unchanged: ``predict_proba`` gives columns
pCTR and pCTCVR; ``predict_cvr`` gives pCVR. With a single label ESMM is the CTR tower alone.

Usage::

    model = ESMMRanker().fit(frame, label=["click", "conversion"], valid=valid)
    p = model.predict_proba(frame)        # (n, 2): pCTR, pCTCVR
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from recforge.data.features import Field
from recforge.exceptions import ConfigError, DataError
from recforge.models.ranking.multitask import MultiTaskRanker
from recforge.models.registry import register
from recforge.nn.embedding import FeatureEmbedding
from recforge.nn.inputs import to_tensors
from recforge.nn.mlp import MLP


class ESMMModule(nn.Module):
    """batch -> logits (B, T): logit(pCTR) and, with two tasks, logit(pCTR · pCVR)."""

    def __init__(
        self, embedding: FeatureEmbedding, n_tasks: int, hidden: Sequence[int], dropout: float
    ) -> None:
        super().__init__()
        width = embedding.n_fields * embedding.dim
        self.embedding, self.n_tasks = embedding, n_tasks
        self.ctr = MLP(width, hidden=tuple(hidden), dropout=dropout, out_dim=1)
        self.cvr = MLP(width, hidden=tuple(hidden), dropout=dropout, out_dim=1)

    def towers(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The two tower logits, each (B,)."""
        x = self.embedding(batch).flatten(1)  # (B, F*D)
        return self.ctr(x).squeeze(-1), self.cvr(x).squeeze(-1)

    def forward(self, batch: dict) -> torch.Tensor:
        a, b = self.towers(batch)
        if self.n_tasks == 1:
            return a.unsqueeze(1)  # (B, 1)
        # logit(σ(a)σ(b)) = log p - log(1 - p) = -logsumexp(-a, -b, -a - b): exact, stable
        # for any a, b, and made of ops every ONNX exporter knows
        ctcvr = -torch.logsumexp(torch.stack([-a, -b, -a - b]), dim=0)  # (B,)
        return torch.stack([a, ctcvr], dim=1)  # (B, 2)


@register("esmm")
class ESMMRanker(MultiTaskRanker):
    """Click and conversion over the entire impression space. ``fit(frame,
    label=[click, conversion])`` (conversion must imply click). Own hyperparameters:
    ``hidden`` (each tower's MLP), ``dropout``; ``task_weights`` (CTR loss, CTCVR loss) and
    the shared ones: see ``MultiTaskRanker`` / ``TorchRanker``."""

    smoke_params: ClassVar[dict[str, Any]] = {
        "embedding_dim": 4,
        "hidden": (8,),
        "epochs": 2,
        "batch_size": 64,
    }

    def __init__(
        self, *, hidden: Sequence[int] = (256, 128), dropout: float = 0.0, **shared: Any
    ) -> None:
        super().__init__(**shared)
        self.hidden = hidden
        self.dropout = dropout

    def build_module(self, fields: Sequence[Field]) -> nn.Module:
        return ESMMModule(
            self.feature_embedding(fields), len(self.tasks_), self.hidden, self.dropout
        )

    def check_tasks(self, tasks: list[str]) -> None:
        if len(tasks) > 2:
            raise ConfigError(
                f"ESMMRanker.fit: label takes [click, conversion] (two columns), got {tasks}."
            )

    def check_labels(self, y: np.ndarray, where: str) -> None:
        if y.shape[1] == 2:
            bad = (y[:, 1] > 0.5) & (y[:, 0] < 0.5)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"{where}: row {i} has {self.tasks_[1]}=1 but {self.tasks_[0]}=0; ESMM's "
                    f"conversion label means 'clicked and converted' (set it to 0 where the "
                    f"click label is 0).",
                    column=self.tasks_[1],
                )

    def predict_cvr(self, frame: pd.DataFrame) -> np.ndarray:
        """p(conversion | click, x) per row: (n,) float32, from the CVR tower."""
        self._check_fitted("predict_cvr")
        x = to_tensors(self.encoder_.transform(frame))
        self.module_.eval()
        with torch.no_grad():
            _, b = self.module_.towers(x)
        return torch.sigmoid(b).numpy().astype(np.float32)
