"""Recurrent layers over padded, left-aligned sequences (real steps first, padding after).

* ``PackedRNN``: GRU, LSTM or a bidirectional LSTM/GRU run on a packed sequence
  (``pack_padded_sequence``), so padded steps are never computed and cannot change any
  output. Returns every step's output (zeros at padding) and the last real step's state.
* ``AUGRU`` (DIEN, Zhou et al., 2019): a GRU whose update gate is scaled by an attention
  score per step, ``u'_t = a_t · u_t``, ``h_t = (1 - u'_t) ⊙ h_{t-1} + u'_t ⊙ h̃_t``; run the
  same packed way (at step t only the rows still longer than t are computed).

A row of length 0 gives zero outputs and a zero state.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from recforge.exceptions import ConfigError

RNN_KINDS = ("gru", "lstm")


class PackedRNN(nn.Module):
    """A (bi)directional GRU/LSTM over padded sequences.

    Parameters
    ----------
    input_dim: D_in.
    hidden_dim: H per direction.
    kind: "gru" or "lstm".
    bidirectional: run a second, backward direction and concatenate (output 2H).
    n_layers: stacked layers.
    dropout: between stacked layers.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        *,
        kind: str = "gru",
        bidirectional: bool = False,
        n_layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if kind not in RNN_KINDS:
            raise ConfigError(f"PackedRNN: kind={kind!r}; choose one of {RNN_KINDS}.")
        cls = nn.GRU if kind == "gru" else nn.LSTM
        self.rnn = cls(
            input_dim,
            hidden_dim,
            num_layers=n_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if n_layers > 1 else 0.0,
        )
        self.kind, self.bidirectional = kind, bidirectional
        self.out_dim = hidden_dim * (2 if bidirectional else 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, L, D_in), lengths (B,) -> (outputs (B, L, out_dim), last state (B, out_dim)).

        ``last state``: the top layer's hidden state after the last real step (both
        directions concatenated when bidirectional: forward after the last step, backward
        after the first)."""
        b, length, _ = x.shape
        lengths = lengths.to(torch.int64).clamp(max=length)
        empty = lengths == 0
        packed = pack_padded_sequence(
            x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, state = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=length)  # (B, L, O)
        h = state[0] if self.kind == "lstm" else state  # (layers * dirs, B, H)
        last = torch.cat([h[-2], h[-1]], dim=-1) if self.bidirectional else h[-1]  # (B, out_dim)
        if bool(empty.any()):
            keep = (~empty).to(out.dtype)
            out = out * keep.view(b, 1, 1)
            last = last * keep.view(b, 1)
        return out, last


class AUGRUCell(nn.Module):
    """One AUGRU step: (x (N, D), h (N, H), a (N,)) -> h' (N, H)."""

    def __init__(self, input_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.x2h = nn.Linear(input_dim, 3 * hidden_dim)
        self.h2h = nn.Linear(hidden_dim, 3 * hidden_dim, bias=False)

    def forward(self, x: torch.Tensor, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        xr, xu, xn = self.x2h(x).chunk(3, dim=-1)
        hr, hu, hn = self.h2h(h).chunk(3, dim=-1)
        r = torch.sigmoid(xr + hr)  # reset gate
        u = torch.sigmoid(xu + hu) * a.unsqueeze(-1)  # attention-scaled update gate
        cand = torch.tanh(xn + r * hn)
        return (1.0 - u) * h + u * cand


class AUGRU(nn.Module):
    """AUGRU over padded sequences with one attention score per step.

    ``forward(x (B, L, D), scores (B, L), lengths (B,)) -> final state (B, H)``: the state
    after each row's last real step (zeros for an empty row). Rows are sorted by length
    and step t only updates the rows longer than t, as a packed sequence would.
    """

    def __init__(self, input_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.cell = AUGRUCell(input_dim, hidden_dim)
        self.hidden_dim = hidden_dim

    def forward(self, x: torch.Tensor, scores: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        lengths = lengths.to(torch.int64).clamp(min=0, max=length)
        order = torch.argsort(lengths, descending=True, stable=True)
        xs, ss, ls = x[order], scores[order], lengths[order]
        # active[t]: number of rows longer than t (rows are sorted, so they are the first)
        steps = torch.arange(length, device=x.device).unsqueeze(1)  # (L, 1)
        active = (ls.unsqueeze(0) > steps).sum(1).tolist()  # (L,)
        h = x.new_zeros(b, self.hidden_dim)
        for t in range(int(ls[0]) if b else 0):
            n = active[t]
            h_t = self.cell(xs[:n, t], h[:n], ss[:n, t])
            h = torch.cat([h_t, h[n:]], dim=0)  # padded rows keep their state
        out = torch.empty_like(h)
        out[order] = h
        return out
