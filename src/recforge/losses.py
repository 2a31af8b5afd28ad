"""Loss functions on tensors: plain functions, no modules, no state. Each returns a scalar
(the mean over examples) unless ``reduction="none"``.

Pointwise (CTR): ``bce_with_logits``, ``weighted_bce``, ``focal`` (binary and multi-class).
Pairwise: ``bpr``, ``hinge``, ``ranknet``. Listwise: ``listnet``, ``lambdarank``.
Retrieval: ``infonce`` (in-batch), ``sampled_softmax`` (with log-Q correction).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    if reduction == "none":
        return x
    raise ValueError(f"reduction={reduction!r}; choose 'mean', 'sum' or 'none'.")


# ---------------------------------------------------------------------- pointwise
def bce_with_logits(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Binary cross-entropy on logits (B,) and targets in [0, 1] (B,), optional per-example
    weights (B,)."""
    loss = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def weighted_bce(
    logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 1.0, reduction: str = "mean"
) -> torch.Tensor:
    """BCE with positives weighted by ``pos_weight`` (e.g. n_neg / n_pos for rare clicks)."""
    t = target.to(logits.dtype)
    w = 1.0 + (float(pos_weight) - 1.0) * t  # (B,): pos_weight for y=1, 1 for y=0
    return bce_with_logits(logits, t, w, reduction)


def focal(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Focal loss (Lin et al., 2017): ``-alpha_t * (1 - p_t)^gamma * log(p_t)``.

    Binary: logits (B,), target (B,) in [0, 1]; ``alpha`` (float) weighs positives and
    ``1 - alpha`` negatives. Multi-class: logits (B, C), target (B,) int64 class ids;
    ``alpha`` is a per-class weight sequence/tensor (C,). gamma=0 and alpha=None give
    plain cross-entropy.
    """
    if logits.dim() == 1:
        t = target.to(logits.dtype)
        ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")  # -log p_t
        p = torch.sigmoid(logits)
        p_t = p * t + (1 - p) * (1 - t)
        loss = (1 - p_t).pow(gamma) * ce
        if alpha is not None:
            a = float(alpha)  # type: ignore[arg-type]
            loss = (a * t + (1 - a) * (1 - t)) * loss
        return _reduce(loss, reduction)
    logp = F.log_softmax(logits, dim=-1)  # (B, C)
    logp_t = logp.gather(1, target.long().unsqueeze(1)).squeeze(1)  # (B,)
    loss = -(1 - logp_t.exp()).pow(gamma) * logp_t
    if alpha is not None:
        a = torch.as_tensor(alpha, dtype=logits.dtype, device=logits.device)
        loss = a[target.long()] * loss
    return _reduce(loss, reduction)


# ---------------------------------------------------------------------- pairwise
def bpr(pos: torch.Tensor, neg: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Bayesian personalised ranking: ``-log sigmoid(s_pos - s_neg)``. pos (B,), neg (B,)
    or (B, K) (K negatives per positive)."""
    if neg.dim() == pos.dim() + 1:
        pos = pos.unsqueeze(-1)
    return _reduce(-F.logsigmoid(pos - neg), reduction)


def hinge(
    pos: torch.Tensor, neg: torch.Tensor, margin: float = 1.0, reduction: str = "mean"
) -> torch.Tensor:
    """Pairwise hinge: ``max(0, margin - s_pos + s_neg)``. Shapes as in ``bpr``."""
    if neg.dim() == pos.dim() + 1:
        pos = pos.unsqueeze(-1)
    return _reduce(F.relu(margin - pos + neg), reduction)


def _pair_mask(labels: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, L, L) bool: pair (i, j) counts when label_i > label_j and both are valid."""
    pairs = labels.unsqueeze(2) > labels.unsqueeze(1)
    if mask is not None:
        m = mask.bool()
        pairs = pairs & m.unsqueeze(2) & m.unsqueeze(1)
    return pairs


def ranknet(
    scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """RankNet (Burges et al., 2005) over lists: scores, labels (B, L), optional validity
    mask (B, L). Mean of ``-log sigmoid(s_i - s_j)`` over pairs with label_i > label_j."""
    pairs = _pair_mask(labels, mask)
    diff = scores.unsqueeze(2) - scores.unsqueeze(1)  # (B, L, L)
    loss = -F.logsigmoid(diff)
    n = pairs.sum().clamp_min(1)
    return (loss * pairs).sum() / n


def listnet(
    scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """ListNet top-one (Cao et al., 2007): cross-entropy between softmax(labels) and
    softmax(scores) over each list. scores, labels (B, L); mask (B, L) drops padding."""
    s, y = scores, labels.to(scores.dtype)
    if mask is not None:
        neg_inf = torch.finfo(scores.dtype).min
        s = s.masked_fill(~mask.bool(), neg_inf)
        y = y.masked_fill(~mask.bool(), neg_inf)
    target = F.softmax(y, dim=-1)
    return -(target * F.log_softmax(s, dim=-1)).nan_to_num(0.0).sum(-1).mean()


def lambdarank(
    scores: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    k: int | None = None,
) -> torch.Tensor:
    """LambdaRank (Burges, 2010) as a loss: RankNet pair losses weighted by |delta NDCG@k|,
    the NDCG change from swapping the pair in the current ranking. Gains ``2^label - 1``.
    scores, labels (B, L); mask (B, L)."""
    y = labels.to(scores.dtype)
    valid = torch.ones_like(y, dtype=torch.bool) if mask is None else mask.bool()
    L = scores.shape[1]
    with torch.no_grad():
        s = scores.masked_fill(~valid, float("-inf"))
        order = s.argsort(dim=1, descending=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(L, device=scores.device).expand_as(order))  # 0-based
        discount = 1.0 / torch.log2(rank.to(scores.dtype) + 2.0)  # (B, L)
        if k is not None:
            discount = discount * (rank < k)
        gain = (2.0**y - 1.0) * valid
        ideal = gain.sort(dim=1, descending=True).values
        idisc = 1.0 / torch.log2(torch.arange(L, device=scores.device, dtype=scores.dtype) + 2.0)
        if k is not None:
            idisc = idisc * (torch.arange(L, device=scores.device) < k)
        idcg = (ideal * idisc).sum(1, keepdim=True).clamp_min(1e-12)  # (B, 1)
        dg = gain.unsqueeze(2) - gain.unsqueeze(1)  # (B, L, L)
        dd = discount.unsqueeze(2) - discount.unsqueeze(1)
        delta = (dg * dd).abs() / idcg.unsqueeze(2)
    pairs = _pair_mask(labels, valid)
    loss = -F.logsigmoid(scores.unsqueeze(2) - scores.unsqueeze(1)) * delta
    return (loss * pairs).sum() / pairs.sum().clamp_min(1)


# ---------------------------------------------------------------------- retrieval
def infonce(
    query: torch.Tensor,
    key: torch.Tensor,
    temperature: float = 0.1,
    *,
    normalize: bool = True,
    extra_negatives: torch.Tensor | None = None,
    key_ids: torch.Tensor | None = None,
    extra_ids: torch.Tensor | None = None,
    query_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """In-batch InfoNCE: row i of ``query`` (B, D) should pick row i of ``key`` (B, D)
    among all keys (plus ``extra_negatives`` (N, D)). Cosine similarity when ``normalize``.

    With ids (``key_ids`` (B,), ``extra_ids`` (N,)), accidental hits are masked out, as in
    ``sampled_softmax``: another row's key that is the same item as row i's (popular items
    recur within a batch) and an extra negative equal to it are not negatives of row i.
    ``query_ids`` (B,) (with ``key_ids``): when queries and keys are the same kind of thing
    (item-item pairs), a key equal to row i's query item is not a negative of row i either.
    """
    if normalize:
        query, key = F.normalize(query, dim=-1), F.normalize(key, dim=-1)
        if extra_negatives is not None:
            extra_negatives = F.normalize(extra_negatives, dim=-1)
    keys = key if extra_negatives is None else torch.cat([key, extra_negatives], 0)
    logits = query @ keys.T / temperature  # (B, B + N)
    B = query.shape[0]
    if key_ids is not None:
        ids = key_ids
        if extra_negatives is not None:
            if extra_ids is None:
                raise ValueError("infonce: pass extra_ids with key_ids and extra_negatives.")
            ids = torch.cat([key_ids, extra_ids])
        hit = key_ids.unsqueeze(1) == ids.unsqueeze(0)  # (B, B + N)
        if query_ids is not None:
            hit = hit | (query_ids.unsqueeze(1) == ids.unsqueeze(0))
        hit[torch.arange(B), torch.arange(B)] = False  # the target itself stays
        logits = logits.masked_fill(hit, torch.finfo(logits.dtype).min)
    target = torch.arange(B, device=query.device)
    return F.cross_entropy(logits, target)


def sampled_softmax(
    query: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor | None = None,
    *,
    log_q_pos: torch.Tensor | None = None,
    log_q_neg: torch.Tensor | None = None,
    pos_ids: torch.Tensor | None = None,
    neg_ids: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Sampled softmax with the log-Q correction (Yi et al., 2019).

    query (B, D), positives pos (B, D). Negatives: ``neg`` (N, D) shared by the batch, or
    (``neg=None``) the other rows' positives (in-batch). Each logit ``q . k / T`` has the
    log sampling probability of its item subtracted (``log_q_pos`` (B,), ``log_q_neg``
    (N,); in-batch negatives use ``log_q_pos``), which removes the popularity bias of the
    sampler. With ids ((B,) / (N,)), negatives that equal the row's positive item
    ("accidental hits") are masked out.

    The (B, N) logits are a step's largest tensors (32 MiB at 4096 x 2048), and each is a
    fresh allocation the kernel page-faults in and zeroes: so the temperature divides the
    (B, D) query, the accidental hits are masked in place, and the loss is
    ``logaddexp(pos, logsumexp(neg)) - pos`` rather than a cross-entropy over a concatenated
    (B, 1 + N) copy; the same loss, with a third fewer page faults per step
    (docs/BENCHMARKS.md, "Recall at 40k items").
    """
    B = query.shape[0]
    q = query / temperature  # (B, D)
    pos_logit = (q * pos).sum(-1)  # (B,)
    if log_q_pos is not None:
        pos_logit = pos_logit - log_q_pos
    if neg is None:
        neg_logit = q @ pos.T  # (B, B)
        if log_q_pos is not None:
            neg_logit = neg_logit - log_q_pos.unsqueeze(0)
        hit = torch.eye(B, dtype=torch.bool, device=query.device)
        if pos_ids is not None:
            hit = hit | (pos_ids.unsqueeze(1) == pos_ids.unsqueeze(0))
    else:
        neg_logit = q @ neg.T  # (B, N)
        if log_q_neg is not None:
            neg_logit = neg_logit - log_q_neg.unsqueeze(0)
        hit = None
        if pos_ids is not None and neg_ids is not None:
            hit = pos_ids.unsqueeze(1) == neg_ids.unsqueeze(0)
    if hit is not None:  # in place: the product's backward does not need its output
        neg_logit.masked_fill_(hit, torch.finfo(neg_logit.dtype).min)
    return (torch.logaddexp(pos_logit, torch.logsumexp(neg_logit, 1)) - pos_logit).mean()
