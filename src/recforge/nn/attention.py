"""Attention over fields.

* ``AttentionalPooling`` (AFM, Xiao et al. 2017): weights every pairwise interaction
  ``p_ij = e_i ⊙ e_j`` (i < j) by ``a_ij = softmax_ij(hᵀ relu(W p_ij + b))`` and returns
  ``Σ a_ij p_ij`` (B, D) together with the weights (B, P), P = F(F-1)/2.
* ``MultiHeadSelfAttention`` (AutoInt, Song et al. 2019): every field attends to every
  field with ``n_heads`` scaled dot-product heads; a projected residual keeps the input,
  then ReLU: ``out = relu(concat_h softmax(Q_h K_hᵀ / sqrt(d_h)) V_h + W_res x)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recforge.nn.blocking import block_rows
from recforge.nn.exporting import exporting

CHUNK = 256  # rows per block of AttentionalPooling on 1 thread (see its forward)


def pairwise_index(n_fields: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices (P,) of the pairs i < j, in row-major order."""
    rows, cols = torch.triu_indices(n_fields, n_fields, offset=1)
    return rows, cols


class AttentionalPooling(nn.Module):
    """AFM's attention-based pooling of pairwise interactions.

    Parameters
    ----------
    n_fields: F.
    embedding_dim: D.
    attention_dim: width t of the attention network (W: (t, D), h: (t,)).
    dropout: dropout on the attention weights during training.
    """

    def __init__(
        self, n_fields: int, embedding_dim: int, attention_dim: int = 16, dropout: float = 0.0
    ) -> None:
        super().__init__()
        rows, cols = pairwise_index(n_fields)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        # one-hot (P, F) selectors: the pair factors e_i, e_j as two matmuls, whose backward
        # is a matmul too (gathering with rows/cols scatters P x D values per row in the
        # backward, ~1.7x slower on CPU at 39 fields)
        pick = torch.eye(n_fields)
        self.register_buffer("pick_i", pick[rows], persistent=False)
        self.register_buffer("pick_j", pick[cols], persistent=False)
        self.register_buffer("upper", rows * n_fields + cols, persistent=False)  # (P,) in F*F
        self.n_fields = n_fields
        self.attention = nn.Sequential(
            nn.Linear(embedding_dim, attention_dim),
            nn.ReLU(),
            nn.Linear(attention_dim, 1, bias=False),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """emb: (B, F, D) -> (pooled (B, D), weights (B, P)); weights sum to 1 per row.

        Rows go through in blocks (``CHUNK`` rows on one thread, see
        ``recforge.nn.blocking``): each block's (rows, P, D) pair products and attention
        activations are made and used while they are in the core's cache (the whole
        batch's are 85 MB at B=4096, 26 fields: one AFM training step 0.50-0.65 CPU-s
        whole, 0.30-0.33 in blocks of 256-1024 rows, 1 thread); the same sums."""
        rows = block_rows(emb.shape[0], CHUNK)
        if emb.shape[0] > rows and not exporting():  # an export records one block
            parts = [self._pool(c) for c in emb.split(rows)]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        return self._pool(emb)

    def _pool(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, f, _ = emb.shape
        pairs = torch.matmul(self.pick_i, emb) * torch.matmul(self.pick_j, emb)  # (B, P, D)
        weights = torch.softmax(self.attention(pairs).squeeze(-1), dim=1)  # (B, P)
        # Σ_{i<j} a_ij e_i ⊙ e_j = Σ_i e_i ⊙ (A e)_i with A (B, F, F) the weights above the
        # diagonal: one bmm instead of a (B, P, D) weighted copy of the pairs
        a = weights.new_zeros(b, f * f).index_copy(1, self.upper, self.dropout(weights))
        pooled = (torch.bmm(a.view(b, f, f), emb) * emb).sum(dim=1)  # (B, D)
        return pooled, weights


class _InteractChannels(torch.autograd.Function):
    """AutoInt's interacting layer on channel-major activations, with its backward by hand.

    xt (C, B, F) -> (H*d_h, B, F): channel c of every (row, field) contiguous, so that q, k,
    v and the residual of every head are plain row slices of ONE (P*H*d_h, B*F) product
    ``w @ x`` (P = 3, or 4 with the residual), and each head's (B, F, d_h) matrices are
    column-major views of it that the batched products read in place: no head split or
    merge copy of 8-float runs (the natural (B, F, H*d_h) layout needed a copy to
    (part, B*H, F, d_h), one back and their backward: ~35 % of an AutoInt step at 26
    fields x 2 heads of 8, B=4096). What is copied is each head's (B, d_h, F) product into
    the (d_h, B, F) layout, in runs of F floats. The sums are those of the module's
    natural-layout path (``MultiHeadSelfAttention.forward``)."""

    @staticmethod
    def forward(ctx, xt, w, n_heads, head_dim, residual):  # type: ignore[override]
        c, b, f = xt.shape
        width = n_heads * head_dim
        parts = w.shape[0] // width
        y = torch.mm(w, xt.reshape(c, b * f)).view(parts, n_heads, head_dim, b, f)
        out = y.new_empty(n_heads, head_dim, b, f)
        attns = []
        for h in range(n_heads):
            q, k = y[0, h].permute(1, 2, 0), y[1, h].permute(1, 2, 0)  # (B, F, d), views
            a = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1)  # (B, F, F)
            ctx_t = torch.bmm(y[2, h].permute(1, 0, 2), a.transpose(1, 2))  # (B, d, F) = (a v)ᵀ
            if residual:
                torch.add(ctx_t.permute(1, 0, 2), y[3, h], out=out[h])  # (d, B, F)
            else:
                out[h].copy_(ctx_t.permute(1, 0, 2))
            attns.append(a)
        out.relu_()
        ctx.save_for_backward(xt, w, y, out, *attns)
        ctx.n_heads, ctx.residual = n_heads, residual
        return out.view(width, b, f)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        xt, w, y, out, *attns = ctx.saved_tensors
        parts, n_heads, head_dim, b, f = y.shape
        c = xt.shape[0]
        gy = torch.empty_like(y)  # (P, H, d, B, F)
        g = grad.reshape(n_heads, head_dim, b, f)
        g_ctx = gy[3] if ctx.residual else torch.empty_like(out)  # the residual's grad too
        torch.ops.aten.threshold_backward.grad_input(g, out, 0.0, grad_input=g_ctx)  # relu'
        for h in range(n_heads):
            a, gc = attns[h], g_ctx[h]  # (B, F, F), (d, B, F)
            q, k, v = (y[i, h].permute(1, 2, 0) for i in range(3))  # (B, F, d) views
            ga = torch.bmm(gc.permute(1, 2, 0), v.transpose(1, 2))  # (B, F, F)
            gy[2, h].copy_(torch.bmm(gc.permute(1, 0, 2), a).permute(1, 0, 2))  # vᵀ: gcᵀ a
            gs = torch._softmax_backward_data(ga, a, -1, a.dtype)  # (B, F, F)
            gy[0, h].copy_(torch.bmm(k.transpose(1, 2), gs.transpose(1, 2)).permute(1, 0, 2))
            gy[1, h].copy_(torch.bmm(q.transpose(1, 2), gs).permute(1, 0, 2))
        gy2 = gy.view(-1, b * f)  # (P*H*d, B*F)
        x2 = xt.reshape(c, b * f)
        gw = torch.mm(gy2, x2.t())  # (P*H*d, C)
        if xt.stride(0) == 1:  # xt is a view of natural (B, F, C) rows: its grad in kind
            gx = torch.mm(gy2.t(), w).view(b, f, c).permute(2, 0, 1)
        else:
            gx = torch.mm(w.t(), gy2).view(c, b, f)
        return gx, gw, None, None, None


class MultiHeadSelfAttention(nn.Module):
    """AutoInt's interacting layer: (B, F, D_in) -> (B, F, n_heads * head_dim).

    Parameters
    ----------
    in_dim: D_in, the width of each field vector.
    head_dim: d_h, the width of each head.
    n_heads: number of heads.
    residual: add ``W_res x`` (a projection of the input) before the ReLU.
    """

    def __init__(
        self, in_dim: int, head_dim: int = 16, n_heads: int = 2, *, residual: bool = True
    ) -> None:
        super().__init__()
        self.head_dim, self.n_heads = head_dim, n_heads
        out = head_dim * n_heads
        self.query = nn.Linear(in_dim, out, bias=False)
        self.key = nn.Linear(in_dim, out, bias=False)
        self.value = nn.Linear(in_dim, out, bias=False)
        self.residual = nn.Linear(in_dim, out, bias=False) if residual else None
        self.out_dim = out

    def _weight(self) -> torch.Tensor:
        """(3 or 4 * H*d_h, D_in): the query (times 1/sqrt(d_h)), key, value and residual
        weights stacked, for one product (the weights stay four Linear modules: same
        parameters and state dict; the scale folded into the query weight is an
        (H*d_h, D_in) scaling instead of a (B, H, F, F) one)."""
        mods = [self.query, self.key, self.value]
        mods += [self.residual] if self.residual is not None else []
        return torch.cat([self.query.weight * self.head_dim**-0.5] + [m.weight for m in mods[1:]])

    def forward_channels(self, xt: torch.Tensor) -> torch.Tensor:
        """The same layer on channel-major activations: xt (D_in, B, F) -> (H*d_h, B, F)
        (stacked layers stay in this layout; ``e.permute(2, 0, 1)`` of (B, F, D) field
        embeddings is a valid input without a copy). Training and inference; a graph
        export takes ``forward``."""
        if exporting() or xt.shape[2] > 64:  # above 64 fields: forward's fused kernel
            out = self.forward(xt.permute(1, 2, 0))  # (B, F, H*d_h)
            return out.permute(2, 0, 1)
        return _InteractChannels.apply(
            xt, self._weight(), self.n_heads, self.head_dim, self.residual is not None
        )

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """x: (B, F, D_in) -> (B, F, H*d_h); with ``return_attention`` also (B, H, F, F)."""
        b, f, _ = x.shape

        # one (B*F, D_in) x (D_in, 3 or 4 * H*d_h) product instead of three or four skinny
        # ones
        mods = [self.query, self.key, self.value]
        mods += [self.residual] if self.residual is not None else []
        w = self._weight()
        # one copy to (part, B*H, F, d_h): q, k, v (and W_res x) of every head contiguous,
        # so that the batched products below run on them without copies of their own
        y = F.linear(x, w).view(b, f, len(mods), self.n_heads, self.head_dim)
        y = y.permute(2, 0, 3, 1, 4).reshape(len(mods), b * self.n_heads, f, self.head_dim)
        parts = y.unbind(0)  # (its backward is one stack; indexing would zero-fill y per part)
        q, k, v = parts[0], parts[1], parts[2]
        attn = None
        if f <= 64:
            # explicit softmax(q kᵀ) v: at a few dozen fields the fused SDPA kernel is
            # slower (its blocking is built for long sequences): forward + backward of one
            # layer, B=4096, 26 fields, 2 heads of 8, 1 thread: 60-75 ms vs 125-160 ms;
            # equal at 39 fields x 16
            attn = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1)  # (B*H, F, F)
            if self.residual is not None:
                ctx = torch.baddbmm(parts[3], attn, v)  # (B*H, F, d_h): attention + W_res x
            else:
                ctx = torch.bmm(attn, v)
        else:  # long inputs: the same softmax(q kᵀ) v, fused (no (B, H, F, F) tensor)
            ctx = F.scaled_dot_product_attention(q, k, v, scale=1.0)
            ctx = ctx + parts[3] if self.residual is not None else ctx
        out = torch.relu(ctx).view(b, self.n_heads, f, self.head_dim).transpose(1, 2)
        out = out.reshape(b, f, self.out_dim)  # (B, F, H*d_h)
        if return_attention:
            if attn is None:
                attn = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1)
            attn = attn.view(b, self.n_heads, f, f)
        return (out, attn) if return_attention else out
