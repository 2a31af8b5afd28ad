"""Field embeddings: every categorical and multi-valued field in ONE table.

``FeatureEmbedding(fields, dim)`` sizes itself from ``FeatureEncoder.fields_``:

* categorical fields and multi-valued fields share one ``nn.Embedding``; each field owns
  a block of rows starting at its offset (a multi field that shares a categorical field's
  vocabulary uses that field's block), so a batch needs a single ``F.embedding`` call;
* numeric fields get one learned vector each, scaled by the (standardised) value
  (``numeric="field"``), or are not embedded at all (``numeric="dense"``): their values
  then go straight into a model's deep part (``deep_input``, each times a learned scale)
  and its first-order term, and the interaction layers see only the categorical and
  multi-valued fields (what DeepCTR-Torch does with ``DenseFeat``);
* multi-valued fields are pooled (sum or mean) over their non-padding positions (index 0).

Output field order: categorical fields, then numeric (``numeric="field"`` only), then
multi, each in encoder order (``field_names`` lists it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recforge.data.features import CATEGORICAL, MULTI, NUMERIC, Field
from recforge.exceptions import ConfigError
from recforge.nn.align import cat_padded
from recforge.nn.exporting import exporting

NUMERIC_MODES = ("field", "dense")


class FieldLayout:
    """Row offsets of each field in the shared table, computed from ``fields``."""

    def __init__(self, fields: Sequence[Field]) -> None:
        self.categorical = [f for f in fields if f.type == CATEGORICAL]
        self.numeric = [f for f in fields if f.type == NUMERIC]
        self.multi = [f for f in fields if f.type == MULTI]
        unknown = [f.name for f in fields if f.type not in (CATEGORICAL, NUMERIC, MULTI)]
        if unknown:
            raise ConfigError(f"fields {unknown} have an unknown type.")
        offsets: dict[str, int] = {}
        total = 0
        for f in self.categorical + [m for m in self.multi if m.share is None]:
            offsets[f.name] = total
            total += max(int(f.vocab_size), 1)
        for m in self.multi:
            if m.share is not None:
                if m.share not in offsets:
                    raise ConfigError(
                        f"multi field {m.name!r} shares {m.share!r}, which is not a field."
                    )
                offsets[m.name] = offsets[m.share]
        self.offsets = offsets
        self.n_rows = max(total, 1)
        self.names = [f.name for f in self.categorical + self.numeric + self.multi]

    @property
    def n_fields(self) -> int:
        return len(self.names)


class FeatureEmbedding(nn.Module):
    """(B, F, D) field embeddings from a batch dict (see ``recforge.nn.inputs``).

    Parameters
    ----------
    fields: ``FeatureEncoder.fields_``.
    dim: embedding size D.
    pooling: "mean" or "sum" over the non-padding values of a multi-valued field.
    sparse: sparse gradients for the table (the Trainer then uses a sparse optimizer for it).
    init_std: std of the normal initialisation.
    linear: also hold the first-order (``LinearEmbedding``) weights, as one extra column of
        the same table (and of the numeric vectors) plus a bias, so that
        ``forward_with_linear`` gets both terms from ONE lookup, one backward scatter and
        one optimizer parameter instead of two tables.
    linear_init_std: std of the normal initialisation of that column.
    numeric: "field" (each numeric field is an embedded field: its vector times its value)
        or "dense" (numeric values are not embedded: ``forward`` returns the categorical
        and multi fields only, ``deep_input`` appends the values, each times a learned
        ``dense_scale``, to the flattened embeddings, and the first-order term holds one
        weight per numeric field).
    """

    def __init__(
        self,
        fields: Sequence[Field],
        dim: int,
        *,
        pooling: str = "mean",
        sparse: bool = False,
        init_std: float = 1e-2,
        linear: bool = False,
        linear_init_std: float = 1e-4,
        numeric: str = "field",
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "sum"):
            raise ConfigError(f"pooling={pooling!r}; choose 'mean' or 'sum'.")
        if numeric not in NUMERIC_MODES:
            raise ConfigError(f"numeric={numeric!r}; choose one of {NUMERIC_MODES}.")
        layout = FieldLayout(fields)
        self.layout, self.dim, self.pooling = layout, int(dim), pooling
        self.numeric = numeric
        self.n_categorical, self.n_numeric = len(layout.categorical), len(layout.numeric)
        dense = numeric == "dense"
        self.n_dense = self.n_numeric if dense else 0  # raw numeric values for the deep part
        skip = {f.name for f in layout.numeric} if dense else set()
        self.field_names = [n for n in layout.names if n not in skip]
        self.n_fields = len(self.field_names)  # embedded fields: F
        self.deep_width = self.n_fields * self.dim + self.n_dense  # width of deep_input
        self.multi_names = [m.name for m in layout.multi]
        self.multi_lens = [int(m.max_len) for m in layout.multi]
        self.has_linear = bool(linear)
        width = self.dim + 1 if linear else self.dim  # last column: first-order weights
        self.table = nn.Embedding(layout.n_rows, width, sparse=sparse)
        nn.init.normal_(self.table.weight, std=init_std)
        # "field": a vector (and linear weight) per numeric field; "dense": a linear
        # weight per numeric field only (none without ``linear``)
        num_width = width if not dense else (1 if linear else 0)
        self.numeric_weight = nn.Parameter(torch.randn(self.n_numeric, num_width) * init_std)
        if dense:
            # the deep part sees value * scale, scale learned per field from init_std: the
            # values enter at the embeddings' scale (raw, ~100x larger at the start, they
            # swamp an MLP's first layer: -0.04 validation AUC after one epoch on the
            # Criteo-shaped set); a diagonal factor of the first layer, same function class
            self.dense_scale = nn.Parameter(torch.full((self.n_numeric,), float(init_std)))
        if linear:
            with torch.no_grad():
                self.table.weight[:, self.dim].normal_(std=linear_init_std)
                self.numeric_weight[:, -1].normal_(std=linear_init_std)
            self.linear_bias = nn.Parameter(torch.zeros(()))
        cat_off = [layout.offsets[f.name] for f in layout.categorical]
        multi_off = [layout.offsets[m.name] for m in layout.multi for _ in range(int(m.max_len))]
        self.register_buffer(
            "offsets", torch.tensor(cat_off + multi_off, dtype=torch.int64), persistent=False
        )
        self._used: torch.Tensor | None = None

    def field_offset(self, name: str) -> int:
        """First table row of field ``name`` (its index 0)."""
        return self.layout.offsets[name]

    def lookup(self, name: str, idx: torch.Tensor) -> torch.Tensor:
        """Embeddings (..., D) of indices ``idx`` (any shape, 0 = padding/OOV) in the
        vocabulary of field ``name``, from the shared table (a behaviour history that
        shares its target's vocabulary is embedded with the target's rows)."""
        e = self._gather(idx + self.layout.offsets[name])
        return e[..., : self.dim] if self.has_linear else e

    def forward(self, batch: dict) -> torch.Tensor:
        """batch -> (B, F, D)."""
        out = self._embed(batch)
        return out.split([self.dim, 1], dim=-1)[0] if self.has_linear else out

    def forward_with_linear(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """batch -> ((B, F, D) field embeddings, (B,) first-order logits), from one lookup.
        Needs ``linear=True``; the first-order term equals ``LinearEmbedding``'s."""
        if not self.has_linear:
            raise ConfigError("forward_with_linear needs FeatureEmbedding(..., linear=True).")
        out = self._embed(batch)  # (B, F, D + 1)
        # split, not two slices: its backward is one cat instead of two zero-filled copies
        emb, first = out.split([self.dim, 1], dim=-1)  # (B, F, D), (B, F, 1)
        first = first.sum(dim=(1, 2)) + self.linear_bias  # (B,)
        if self.n_dense:
            first = first + batch["numeric"] @ self.numeric_weight[:, 0]  # (B,)
        return emb, first

    def forward_deep(
        self, batch: dict, width: int | None = None, *, fm: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """batch -> ((B, F, D) embeddings e, ``deep_input(e, batch, width)``, (B,)
        first-order logits, plus ``FMInteraction()(e)`` with ``fm=True``), from one lookup.

        The same values as ``forward_with_linear`` + ``deep_input`` (+ ``FMInteraction``),
        with the copy into the deep input, the first-order sum and the FM term fused into
        one autograd node while training (``_DeepHead``: its backward makes two passes
        over the (B, F, D) gradient where autograd's graph of the same ops makes ~8).
        Needs ``linear=True``."""
        if not self.has_linear:
            raise ConfigError("forward_deep needs FeatureEmbedding(..., linear=True).")
        out = self._embed(batch)  # (B, F, D + 1)
        dense = batch["numeric"] * self.dense_scale if self.n_dense else None  # (B, n_dense)
        width = self.deep_width if width is None else int(width)
        if out.requires_grad and torch.is_grad_enabled() and not exporting():
            deep, first = _DeepHead.apply(out, dense, width, fm)
        else:
            deep, first = _deep_head(out, dense, width, fm)
        first = first + self.linear_bias
        if self.n_dense:
            first = first + batch["numeric"] @ self.numeric_weight[:, 0]  # (B,)
        return out[..., : self.dim], deep, first

    def with_dense(self, x: torch.Tensor, batch: dict, width: int | None = None) -> torch.Tensor:
        """(B, W) -> (B, W + n_dense): ``x`` followed by the numeric values (times the
        learned ``dense_scale``) when ``numeric="dense"`` (``x`` itself otherwise); with
        ``width``, zero columns up to that width in the same copy (an MLP's ``in_width``:
        see ``recforge.nn.align``)."""
        parts = [x, batch["numeric"] * self.dense_scale] if self.n_dense else [x]
        return cat_padded(parts, width)

    def deep_input(self, emb: torch.Tensor, batch: dict, width: int | None = None) -> torch.Tensor:
        """The deep part's input, (B, deep_width): the flattened (B, F, D) embeddings
        ``emb`` of this batch, then the scaled numeric values when ``numeric="dense"``;
        with ``width``, zero-padded to (B, width) (``recforge.nn.align``)."""
        return self.with_dense(emb.flatten(1), batch, width)

    def forward_columns(self, batch: dict) -> torch.Tensor:
        """batch -> (B, F, D + 1): each field's embedding with its first-order weight as
        the last column (needs ``linear=True`` and ``numeric="field"``; ``linear_bias`` is
        the constant term)."""
        if not self.has_linear or self.n_dense:
            raise ConfigError(
                "forward_columns needs FeatureEmbedding(..., linear=True, numeric='field')."
            )
        return self._embed(batch)

    def _gather(self, rows: torch.Tensor) -> torch.Tensor:
        """Table rows ``rows`` (any shape) -> (..., W). A dense table is read with
        ``index_select``, whose backward is one ``index_add_`` into a zero table, faster
        than ``F.embedding``'s sorting backward (``python -m benchmarks.ctr_micro --parts
        gather``, a 4096 x 26 batch of the Criteo-shaped indices into a 324,501 x 17 table,
        forward + backward: 10.7 against 20.6 ms on 2 idle threads, 16.8 against 20.7 on
        1), the same sums."""
        if self.table.sparse:
            return F.embedding(rows, self.table.weight, sparse=True)
        w = self.table.weight
        return w.index_select(0, rows.reshape(-1)).view(*rows.shape, w.shape[1])

    def _embed(self, batch: dict) -> torch.Tensor:
        """batch -> (B, F, W), W = D (+ 1 with the linear column)."""
        cat = batch["categorical"]  # (B, n_cat)
        parts_idx = [cat] + [batch["multi"][n] for n in self.multi_names]
        raw = torch.cat(parts_idx, dim=1) if len(parts_idx) > 1 else cat  # (B, n_cat + L)
        emb = self._gather(raw + self.offsets)  # (B, n_cat + L, W)
        out = [emb[:, : self.n_categorical]]
        if self.n_numeric and not self.n_dense:
            out.append(batch["numeric"].unsqueeze(-1) * self.numeric_weight)  # (B, n_num, W)
        used = emb[:, : self.n_categorical]
        if self.multi_names:
            start = self.n_categorical
            pooled = []
            for length in self.multi_lens:
                e = emb[:, start : start + length]  # (B, L_f, W)
                mask = (
                    (raw[:, start : start + length] != 0).unsqueeze(-1).to(e.dtype)
                )  # (B, L_f, 1)
                s = (e * mask).sum(1)  # (B, W)
                if self.pooling == "mean":
                    s = s / mask.sum(1).clamp_min(1.0)
                pooled.append(s)
                start += length
            out.append(torch.stack(pooled, 1))  # (B, n_multi, W)
            if self.training:
                m = (raw[:, self.n_categorical :] != 0).unsqueeze(-1).to(emb.dtype)
                used = torch.cat([used, emb[:, self.n_categorical :] * m], 1)
        if self.training:
            self._used = used
        return torch.cat(out, 1) if len(out) > 1 else out[0]

    def l2_penalty(self) -> torch.Tensor:
        """Sum of squares of the embedding rows used by the last training forward, divided
        by the batch size (0 before any training forward)."""
        if self._used is None:
            return torch.zeros(())
        u = self._used
        return u.pow(2).sum() / max(1, u.shape[0])


def _deep_head(
    out: torch.Tensor, dense: torch.Tensor | None, width: int, fm: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, F, D + 1) embeddings with their first-order column -> ((B, width) deep input:
    the flattened (B, F, D) part, then ``dense``, then zero columns; (B,) sum of the
    first-order column, plus the FM term ``0.5 * (|sum_f e_f|^2 - sum_f |e_f|^2)`` with
    ``fm``). Plain ops (inference, export); ``_DeepHead`` is the training node."""
    b, n_fields, w = out.shape
    d = w - 1
    e = out[..., :d]
    parts = [e.reshape(b, n_fields * d)] + ([dense] if dense is not None else [])
    deep = cat_padded(parts, width)
    first = out[..., d].sum(1)
    if fm:
        first = first + 0.5 * (e.sum(1).pow(2).sum(1) - e.pow(2).sum((1, 2)))
    return deep, first


class _DeepHead(torch.autograd.Function):
    """``_deep_head`` with its backward written out. Forward: one copy of e (and
    ``dense``) into the deep input, the FM sums read from that contiguous copy. Backward,
    with g the deep input's gradient and s the first-order/FM output's: de = g[:, :F*D]
    + s * (S - e) (S = sum_f e_f: the FM term's gradient), d(first column) = s, d(dense)
    = the dense columns of g: two passes over (B, F, D) where autograd's graph of the
    same ops (split, flatten, cat, pow, sums, the split's cat backward) takes ~8."""

    @staticmethod
    def forward(ctx, out, dense, width, fm):  # type: ignore[override]
        b, n_fields, w = out.shape
        d = w - 1
        flat_w = n_fields * d
        deep = out.new_empty(b, width)
        deep[:, :flat_w].view(b, n_fields, d).copy_(out[..., :d])
        n_dense = 0 if dense is None else dense.shape[1]
        if n_dense:
            deep[:, flat_w : flat_w + n_dense].copy_(dense)
        deep[:, flat_w + n_dense :].zero_()
        first = out[..., d].sum(1)  # (B,)
        total = None
        if fm:
            flat = deep[:, :flat_w]
            total = flat.view(b, n_fields, d).sum(1)  # (B, D): S
            sq = torch.linalg.vecdot(flat, flat)  # (B,): sum_f |e_f|^2
            first = first + 0.5 * (torch.linalg.vecdot(total, total) - sq)
        ctx.save_for_backward(out, total)
        ctx.meta = (n_dense, dense is not None, fm)
        return deep, first

    @staticmethod
    def backward(ctx, g_deep, g_first):  # type: ignore[override]
        out, total = ctx.saved_tensors
        n_dense, has_dense, fm = ctx.meta
        b, n_fields, w = out.shape
        d = w - 1
        flat_w = n_fields * d
        if g_deep is None:
            g_deep = out.new_zeros(b, flat_w + n_dense)
        if g_first is None:
            g_first = out.new_zeros(b)
        grad = out.new_empty(b, n_fields, w)
        ge = grad[..., :d]
        g_emb = g_deep[:, :flat_w].view(b, n_fields, d)
        if fm:
            s = g_first.view(b, 1, 1)  # de_f = g_f + s * (S - e_f), in two passes
            torch.addcmul(g_emb, out[..., :d], -s, out=ge)
            ge.add_(s * total.unsqueeze(1))  # (B, 1, D) broadcast over the fields
        else:
            ge.copy_(g_emb)
        grad[..., d].copy_(g_first.view(b, 1).expand(b, n_fields))
        g_dense = g_deep[:, flat_w : flat_w + n_dense] if has_dense else None
        return grad, g_dense, None, None


class LinearEmbedding(nn.Module):
    """First-order term: one weight per categorical value, per numeric field (scaled by the
    value) and per multi value (pooled), plus a bias. batch -> (B,) logits."""

    def __init__(
        self, fields: Sequence[Field], *, pooling: str = "mean", sparse: bool = False
    ) -> None:
        super().__init__()
        self.weights = FeatureEmbedding(fields, 1, pooling=pooling, sparse=sparse, init_std=1e-4)
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, batch: dict) -> torch.Tensor:
        return self.weights(batch).sum(dim=(1, 2)) + self.bias  # (B,)
