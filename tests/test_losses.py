"""Losses against torch references and hand-computed values."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from recforge import losses

torch.manual_seed(0)


def test_bce_and_weighted_bce_match_torch():
    z, y = torch.randn(20), (torch.rand(20) > 0.5).float()
    torch.testing.assert_close(
        losses.bce_with_logits(z, y), F.binary_cross_entropy_with_logits(z, y)
    )
    ref = F.binary_cross_entropy_with_logits(z, y, pos_weight=torch.tensor(3.0))
    torch.testing.assert_close(losses.weighted_bce(z, y, 3.0), ref)
    w = torch.rand(20)
    torch.testing.assert_close(
        losses.bce_with_logits(z, y, w),
        (F.binary_cross_entropy_with_logits(z, y, reduction="none") * w).mean(),
    )


def test_focal_binary():
    z, y = torch.randn(30), (torch.rand(30) > 0.5).float()
    torch.testing.assert_close(
        losses.focal(z, y, gamma=0.0), F.binary_cross_entropy_with_logits(z, y)
    )
    p = torch.sigmoid(z)
    p_t = torch.where(y == 1, p, 1 - p)
    a_t = torch.where(y == 1, torch.tensor(0.25), torch.tensor(0.75))
    expected = (-a_t * (1 - p_t) ** 2 * torch.log(p_t)).mean()
    torch.testing.assert_close(losses.focal(z, y, gamma=2.0, alpha=0.25), expected)
    # easy examples are down-weighted relative to BCE
    easy = torch.tensor([6.0]), torch.tensor([1.0])
    assert losses.focal(*easy, gamma=2.0) < 1e-3 * losses.bce_with_logits(*easy)


def test_focal_multiclass_with_per_class_alpha():
    z, y = torch.randn(12, 4), torch.randint(0, 4, (12,))
    torch.testing.assert_close(losses.focal(z, y, gamma=0.0), F.cross_entropy(z, y))
    alpha = [0.1, 0.2, 0.3, 0.4]
    p_t = F.softmax(z, -1).gather(1, y[:, None]).squeeze(1)
    expected = (-torch.tensor(alpha)[y] * (1 - p_t) ** 1.5 * torch.log(p_t)).mean()
    torch.testing.assert_close(losses.focal(z, y, gamma=1.5, alpha=alpha), expected)


def test_bpr_and_hinge():
    pos, neg = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(1.0))) / 2
    assert abs(losses.bpr(pos, neg).item() - expected) < 1e-6
    assert abs(losses.hinge(pos, neg, margin=1.0).item() - (0.0 + 2.0) / 2) < 1e-6
    many = torch.tensor([[1.0, 3.0], [1.0, 1.0]])  # K=2 negatives per positive
    assert losses.bpr(pos, many).shape == ()
    assert abs(losses.hinge(pos, many, margin=0.5).item() - (0 + 1.5 + 1.5 + 1.5) / 4) < 1e-6


def test_ranknet_hand_computed():
    s = torch.tensor([[1.0, 2.0, 0.0]])
    y = torch.tensor([[2.0, 1.0, 0.0]])
    # pairs (0,1), (0,2), (1,2) with diffs -1, 1, 2
    expected = sum(math.log(1 + math.exp(-d)) for d in (-1.0, 1.0, 2.0)) / 3
    assert abs(losses.ranknet(s, y).item() - expected) < 1e-6
    mask = torch.tensor([[True, True, False]])
    assert abs(losses.ranknet(s, y, mask).item() - math.log(1 + math.exp(1.0))) < 1e-6


def test_listnet_and_padding():
    s, y = torch.randn(3, 5), torch.rand(3, 5)
    expected = -(F.softmax(y, -1) * F.log_softmax(s, -1)).sum(-1).mean()
    torch.testing.assert_close(losses.listnet(s, y), expected)
    mask = torch.tensor([[1, 1, 1, 0, 0]] * 3).bool()
    ref = -(F.softmax(y[:, :3], -1) * F.log_softmax(s[:, :3], -1)).sum(-1).mean()
    torch.testing.assert_close(losses.listnet(s, y, mask), ref)


def test_lambdarank_weights_pairs_by_ndcg_delta():
    s = torch.tensor([[0.0, 0.0, 0.0]], requires_grad=True)
    y = torch.tensor([[0.0, 1.0, 2.0]])
    loss = losses.lambdarank(s, y)
    loss.backward()
    g = s.grad[0]
    assert g[2] < g[1] < 0 < g[0]  # the most relevant item is pushed up the most
    # a perfectly ranked list with big margins has ~0 loss
    assert losses.lambdarank(torch.tensor([[0.0, 10.0, 20.0]]), y).item() < 1e-3


def test_infonce_matches_cross_entropy():
    q, k = torch.randn(6, 4), torch.randn(6, 4)
    qn, kn = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    ref = F.cross_entropy(qn @ kn.T / 0.2, torch.arange(6))
    torch.testing.assert_close(losses.infonce(q, k, 0.2), ref)
    extra = torch.randn(3, 4)
    ref2 = F.cross_entropy(q @ torch.cat([k, extra]).T, torch.arange(6))
    torch.testing.assert_close(
        losses.infonce(q, k, 1.0, normalize=False, extra_negatives=extra), ref2
    )


def test_infonce_masks_accidental_hits_by_id():
    """Row 0 and row 2 share a positive item (popular items recur in a batch) and the extra
    negative 1 is row 1's positive: those are no negatives of the row, so the loss equals a
    cross-entropy over the remaining columns."""
    torch.manual_seed(0)
    q, k, extra = torch.randn(4, 3), torch.randn(4, 3), torch.randn(2, 3)
    k[2] = k[0]  # same item, same vector
    key_ids, extra_ids = torch.tensor([7, 8, 7, 9]), torch.tensor([8, 5])
    got = losses.infonce(
        q, k, 1.0, normalize=False, extra_negatives=extra, key_ids=key_ids, extra_ids=extra_ids
    )
    logits = q @ torch.cat([k, extra]).T  # (4, 6)
    keep = [[0, 1, 3, 4, 5], [0, 1, 2, 3, 5], [1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]]
    ref = torch.stack(
        [-F.log_softmax(logits[i, cols], 0)[cols.index(i)] for i, cols in enumerate(keep)]
    ).mean()
    torch.testing.assert_close(got, ref)
    unmasked = losses.infonce(q, k, 1.0, normalize=False, extra_negatives=extra)
    assert unmasked > got  # the duplicates were pulling the positive down
    # the same masking as sampled_softmax's in-batch accidental hits
    torch.testing.assert_close(
        losses.infonce(q, k, 1.0, normalize=False, key_ids=key_ids),
        losses.sampled_softmax(q, k, pos_ids=key_ids),
    )


def test_sampled_softmax_log_q_and_accidental_hits():
    q, p = torch.randn(5, 3), torch.randn(5, 3)
    # in-batch without correction == unnormalised InfoNCE
    torch.testing.assert_close(
        losses.sampled_softmax(q, p), losses.infonce(q, p, 1.0, normalize=False)
    )
    logq = torch.log(torch.tensor([0.5, 0.2, 0.1, 0.1, 0.1]))
    logits = q @ p.T - logq[None, :]
    torch.testing.assert_close(
        losses.sampled_softmax(q, p, log_q_pos=logq), F.cross_entropy(logits, torch.arange(5))
    )
    # shared negatives, one of which is row 0's positive item -> masked
    neg = torch.randn(4, 3)
    ids, neg_ids = torch.tensor([7, 1, 2, 3, 4]), torch.tensor([7, 8, 9, 10])
    logq_neg = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1]))
    out = losses.sampled_softmax(q, p, neg, log_q_neg=logq_neg, pos_ids=ids, neg_ids=neg_ids)
    nl = q @ neg.T - logq_neg[None, :]
    nl[0, 0] = float("-inf")
    ref = F.cross_entropy(
        torch.cat([(q * p).sum(-1, keepdim=True), nl], 1), torch.zeros(5, dtype=torch.long)
    )
    torch.testing.assert_close(out, ref)
