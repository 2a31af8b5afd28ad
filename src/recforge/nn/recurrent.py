"""Recurrent layers over padded, left-aligned sequences (real steps first, padding after).

* ``PackedRNN``: GRU, LSTM or a bidirectional LSTM/GRU run on a packed sequence
  (``pack_padded_sequence``), so padded steps are never computed and cannot change any
  output. Returns every step's output (zeros at padding) and the last real step's state.
* ``AUGRU`` (DIEN, Zhou et al., 2019): a GRU whose update gate is scaled by an attention
  score per step, ``u'_t = a_t · u_t``, ``h_t = (1 - u'_t) ⊙ h_{t-1} + u'_t ⊙ h̃_t``; run the
  same packed way (at step t only the rows still longer than t are computed).

A row of length 0 gives zero outputs and a zero state.

While a graph is exported (``recforge.nn.exporting.exporting()``: TorchScript tracing, ONNX export or
``torch.export``) both run an export-friendly path instead, with the same results: every
step of the padded array, a row's state frozen once its length is passed (``PackedRNN``
then runs the GRU/LSTM equations on ``nn.GRU``/``nn.LSTM``'s own weights; packing, sorting
and a loop bound read from the data cannot be traced).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from recforge.exceptions import ConfigError
from recforge.nn.exporting import exporting

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
        if exporting():
            return self._masked(x, lengths)
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

    def _masked(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` without packing: each layer and direction stepped over all L
        positions with ``nn.GRU``/``nn.LSTM``'s weights (gate order r, z, n / i, f, g, o),
        a row's state kept once t >= its length; the backward direction reads each row's
        real steps reversed. Eval mode only (no dropout between layers)."""
        b, length, _ = x.shape
        t = torch.arange(length, device=x.device)
        live = t.unsqueeze(0) < lengths.unsqueeze(1)  # (B, L)
        # index that reverses each row's real steps and leaves its padding in place
        rev = torch.where(live, lengths.unsqueeze(1) - 1 - t, t.expand(b, length))  # (B, L)
        inp, lasts = x, []
        for layer in range(self.rnn.num_layers):
            outs, lasts = [], []
            for suffix in ("", "_reverse") if self.bidirectional else ("",):
                w = [getattr(self.rnn, f"{n}_l{layer}{suffix}") for n in _RNN_WEIGHTS]
                seq = inp if not suffix else _take_steps(inp, rev)
                out, last = self._direction(seq, live, *w)
                outs.append(out if not suffix else _take_steps(out, rev))
                lasts.append(last)
            inp = torch.cat(outs, dim=-1)  # (B, L, out_dim)
        return inp, torch.cat(lasts, dim=-1)

    def _direction(self, x, live, w_ih, w_hh, b_ih, b_hh):  # type: ignore[no-untyped-def]
        """One direction of one layer: (outputs (B, L, H), 0 at padding; last state (B, H))."""
        b, length, _ = x.shape
        hidden = w_hh.shape[1]
        gx = torch.nn.functional.linear(x, w_ih, b_ih)  # (B, L, G * H)
        h = x.new_zeros(b, hidden)
        c = x.new_zeros(b, hidden)
        outs = []
        for step in range(length):
            gh = torch.nn.functional.linear(h, w_hh, b_hh)  # (B, G * H)
            g = gx[:, step]
            if self.kind == "gru":
                xr, xz, xn = g.chunk(3, dim=-1)
                hr, hz, hn = gh.chunk(3, dim=-1)
                r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                h_new = (1.0 - z) * torch.tanh(xn + r * hn) + z * h
            else:
                i, f, cand, o = (g + gh).chunk(4, dim=-1)
                c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(cand)
                h_new = torch.sigmoid(o) * torch.tanh(c_new)
                c = torch.where(live[:, step, None], c_new, c)
            h = torch.where(live[:, step, None], h_new, h)
            outs.append(h_new * live[:, step, None].to(h.dtype))
        return torch.stack(outs, dim=1), h


_RNN_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _take_steps(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, L, D), idx (B, L) step indices -> x[b, idx[b, t]] (B, L, D)."""
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


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
        if exporting():  # every step, a row's state kept once past its length
            h = x.new_zeros(b, self.hidden_dim)
            for t in range(length):
                live = (lengths > t).unsqueeze(-1)  # (B, 1)
                h = torch.where(live, self.cell(x[:, t], h, scores[:, t]), h)
            return h
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
