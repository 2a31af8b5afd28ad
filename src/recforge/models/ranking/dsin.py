"""DSIN, Deep Session Interest Network (Feng et al., 2019).

1. Session division: the behaviours are cut into sessions by their session number
   (``hist_session``, from ``data.history.history_samples(session_gap=...)``); the
   ``n_sessions`` most recent sessions are kept, each with its ``session_len`` most recent
   behaviours: Q (B, K, T, d).
2. Bias encoding: Q + BE, BE_{k,t,c} = w^K_k + w^T_t + w^C_c.
3. Session interest extractor: a Transformer block within each session (shared weights),
   mean-pooled over the session's real behaviours: I_k (B, K, d).
4. Session interest interacting: a Bi-LSTM across the sessions, oldest first: H_k (B, K, 2h).
5. Session interest activation: U^I = Σ_k softmax_k(I_k W^I q) I_k, U^H likewise over H_k
   (bilinear, Luong "general", attention with the candidate q).

logit = MLP([flatten(fields), U^I, U^H]).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from recforge.data.features import EncodedFeatures, FeatureEncoder, Field, pad_lists
from recforge.data.history import SESSION_COLUMN
from recforge.exceptions import ConfigError, DataError
from recforge.models.ranking.history_base import HistoryInputs, HistoryRanker
from recforge.models.registry import register
from recforge.nn.exporting import exporting
from recforge.nn.mlp import MLP
from recforge.nn.recurrent import PackedRNN
from recforge.nn.target_attention import LuongAttention
from recforge.nn.transformer import TransformerBlock

SESSION_KEY = "__session__"  # the raw session numbers in a batch's "multi" dict


def split_sessions(
    seq: torch.Tensor, session: torch.Tensor, mask: torch.Tensor, n_sessions: int, length: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut left-aligned behaviours into sessions.

    seq (B, L, d), session (B, L) session numbers (non-decreasing over the real steps),
    mask (B, L) -> (sessions (B, K, T, d), valid (B, K, T), n_kept (B,)): the K most
    recent sessions, oldest first, each with its T most recent behaviours, left-aligned.
    """
    b, steps, d = seq.shape
    t = torch.arange(steps, device=seq.device).expand(b, steps)
    s = session.masked_fill(~mask, -1)
    first = torch.ones_like(mask[:, :1])
    new = mask & torch.cat([first, s[:, 1:] != s[:, :-1]], dim=1)  # (B, L) session starts
    ordinal = new.long().cumsum(1) - 1  # (B, L) 0-based session number within the row
    total = new.sum(1, keepdim=True)  # (B, 1) sessions per row
    kept = total.clamp(max=n_sessions)
    slot = kept - (total - 1 - ordinal) - 1  # (B, L) session slot, oldest kept first = 0
    # each session's first step (one start per session, so the sum is that step), then
    # every step's own session start (ONNX has no cummax, which would read the same)
    starts = torch.zeros(b, steps + 1, dtype=torch.long, device=seq.device)
    starts.scatter_add_(1, ordinal.clamp(min=0), t * new.long())  # (B, L+1)
    pos = t - starts.gather(1, ordinal.clamp(min=0))  # (B, L) place within its session
    size = torch.zeros(b, steps + 1, dtype=torch.long, device=seq.device)
    size.scatter_add_(1, ordinal.clamp(min=0), mask.long())  # (B, L+1) behaviours per session
    sess_size = size.gather(1, ordinal.clamp(min=0))  # (B, L)
    col = pos - (sess_size - length).clamp(min=0)  # (B, L) slot within the session
    keep = mask & (slot >= 0) & (col >= 0)
    rows, steps_kept = keep.nonzero(as_tuple=True)
    k, j = slot[rows, steps_kept], col[rows, steps_kept]
    out = seq.new_zeros(b, n_sessions, length, d)
    out = out.index_put((rows, k, j), seq[rows, steps_kept])
    valid = torch.zeros(b, n_sessions, length, dtype=torch.bool, device=seq.device)
    valid[rows, k, j] = True
    return out, valid, kept.squeeze(1)


class DSINModule(nn.Module):
    """batch -> (B,) logits."""

    def __init__(
        self,
        inputs: HistoryInputs,
        *,
        n_sessions: int,
        session_len: int,
        n_heads: int,
        dropout: float,
        hidden: Sequence[int],
        activation: str,
    ) -> None:
        super().__init__()
        self.inputs = inputs
        d = inputs.item_dim
        if d % n_heads:
            raise ConfigError(
                f"DSIN: n_heads={n_heads} must divide the behaviour width {d} "
                f"(embedding_dim x {len(inputs.pairs)} history columns)."
            )
        self.n_sessions, self.session_len = n_sessions, session_len
        self.bias_session = nn.Parameter(torch.zeros(n_sessions, 1, 1))  # w^K
        self.bias_position = nn.Parameter(torch.zeros(1, session_len, 1))  # w^T
        self.bias_unit = nn.Parameter(torch.zeros(1, 1, d))  # w^C
        self.extractor = TransformerBlock(
            d, n_heads, dropout=dropout, activation="relu", norm_first=False
        )
        self.interacting = PackedRNN(d, d, kind="lstm", bidirectional=True)
        self.activate_interest = LuongAttention(d, d, "general")
        self.activate_evolved = LuongAttention(d, self.interacting.out_dim, "general")
        in_dim = inputs.n_fields * inputs.embedding.dim + d + self.interacting.out_dim
        self.mlp = MLP(in_dim, hidden, activation=activation, dropout=dropout, out_dim=1)

    def forward(self, batch: dict) -> torch.Tensor:
        x = self.inputs(batch)
        q, valid, n_kept = split_sessions(
            x.seq, batch["multi"][SESSION_KEY], x.mask, self.n_sessions, self.session_len
        )  # (B, K, T, d), (B, K, T), (B,)
        b, k, t, d = q.shape
        q = q + self.bias_session + self.bias_position + self.bias_unit  # bias encoding
        real = valid.any(-1)  # (B, K) sessions that exist
        interest = q.new_zeros(b, k, d)
        if exporting():  # every session slot (an empty one pools to 0): no data-dependent branch
            h = self.extractor(q.reshape(b * k, t, d), valid.reshape(b * k, t))
            m = valid.reshape(b * k, t, 1).to(h.dtype)
            interest = ((h * m).sum(1) / m.sum(1).clamp(min=1.0)).reshape(b, k, d)
        elif bool(real.any()):  # the Transformer runs on real sessions only
            sq, sv = q[real], valid[real]  # (N, T, d), (N, T)
            h = self.extractor(sq, sv)
            m = sv.unsqueeze(-1).to(h.dtype)
            interest = interest.index_put(real.nonzero(as_tuple=True), (h * m).sum(1) / m.sum(1))
        evolved, _ = self.interacting(interest, n_kept)  # (B, K, 2h)
        u_i, _ = self.activate_interest(x.query, interest, real)
        u_h, _ = self.activate_evolved(x.query, evolved, real)
        return self.mlp(torch.cat([x.fields.flatten(1), u_i, u_h], dim=1)).squeeze(-1)


@register("dsin")
class DSIN(HistoryRanker):
    """DSIN. Own hyperparameters: ``session`` (the list column of session numbers, one per
    behaviour), ``n_sessions`` (K, most recent sessions kept), ``session_len`` (T, most
    recent behaviours kept per session), ``n_heads`` (must divide embedding_dim x number
    of history columns), ``dropout``, ``hidden`` (MLP widths), ``activation``;
    ``history``, ``history_len`` (see ``HistoryRanker``); shared ones: see ``TorchRanker``."""

    smoke_params: ClassVar[dict[str, Any]] = {
        **HistoryRanker.smoke_params,
        "n_sessions": 3,
        "session_len": 3,
        "hidden": (8,),
    }

    def __init__(
        self,
        *,
        session: str = SESSION_COLUMN,
        n_sessions: int = 5,
        session_len: int = 10,
        n_heads: int = 2,
        dropout: float = 0.0,
        hidden: Sequence[int] = (200, 80),
        activation: str = "dice",
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self.session = session
        self.n_sessions = n_sessions
        self.session_len = session_len
        self.n_heads = n_heads
        self.dropout = dropout
        self.hidden = hidden
        self.activation = activation

    def make_encoder(self, frame: pd.DataFrame) -> FeatureEncoder:
        if int(self.n_sessions) < 1 or int(self.session_len) < 1:
            raise ConfigError("DSIN: n_sessions and session_len must be >= 1.")
        self._session_column(frame)
        encoder = super().make_encoder(frame)
        if self.session not in encoder.exclude:
            encoder.exclude.append(self.session)
        return encoder

    def encode(self, encoder: FeatureEncoder, frame: pd.DataFrame) -> EncodedFeatures:
        x = encoder.transform(frame)
        x.multi[SESSION_KEY] = pad_lists(
            self._session_column(frame), int(self.history_len), keep_last=True
        )
        return x

    def predict_proba_encoded(self, x: EncodedFeatures) -> np.ndarray:
        """Rows encoded by ``encode`` (which adds the session numbers); the encoder's
        ``transform`` alone does not carry them."""
        if SESSION_KEY not in x.multi:
            raise NotImplementedError(
                "DSIN reads raw session numbers besides the encoded fields; encode rows with "
                "DSIN.encode(encoder_, frame), or call predict_proba(frame)."
            )
        return super().predict_proba_encoded(x)

    def export_sample_multi(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The session numbers ``encode`` adds, for ``n`` random rows (non-decreasing runs
        of random lengths): what ``recforge.export.sample_rows`` traces DSIN with."""
        length = int(self.history_len)
        rows = [np.sort(rng.integers(0, 4, rng.integers(0, length + 1))) for _ in range(n)]
        return {SESSION_KEY: pad_lists(pd.Series(rows), length, keep_last=True)}

    def _session_column(self, frame: pd.DataFrame) -> pd.Series:
        if self.session not in frame.columns:
            raise DataError(
                f"DSIN: session column {self.session!r} is not in the frame (columns: "
                f"{list(frame.columns)}); build the samples with "
                f"recforge.data.history.history_samples(..., session_gap=<seconds>) or pass "
                f"session=<the list column of session numbers>.",
                column=self.session,
            )
        return frame[self.session]

    def build_module(self, fields: Sequence[Field]) -> nn.Module:
        return DSINModule(
            self.inputs(fields),
            n_sessions=int(self.n_sessions),
            session_len=int(self.session_len),
            n_heads=int(self.n_heads),
            dropout=float(self.dropout),
            hidden=tuple(self.hidden),
            activation=self.activation,
        )
