"""Per-user sequences and the next-item models (SASRec, GRU4Rec, BERT4Rec)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from recforge import models
from recforge.data.interactions import Interactions
from recforge.data.sequences import SequencePrefixes, pad_sequences, sequence_matrix
from recforge.exceptions import ConfigError, DataError
from recforge.models.base import mask_seen
from recforge.models.retrieval.sequential import (
    length_batches,
    next_item_loss,
    rank_metrics,
    resolve_loss,
    resolve_smoothing,
    target_ranks,
)

SEQ_MODELS = ["sasrec", "gru4rec", "bert4rec"]


def _log() -> Interactions:
    # user a: 5 events out of time order in the frame, with a repeat; user b: 2; c: 1
    df = pd.DataFrame(
        {
            "user": ["a", "b", "a", "a", "c", "a", "b", "a"],
            "item": [30, 10, 10, 20, 40, 10, 20, 50],
            "timestamp": [3, 1, 1, 2, 9, 4, 2, 5],
        }
    )
    return Interactions(df)


def test_sequence_matrix_orders_by_time_keeps_repeats_and_the_most_recent():
    inter = _log()
    users, items = inter.vocabs()
    idx = {i: int(items.index([i])[0]) + 1 for i in [10, 20, 30, 40, 50]}
    right = sequence_matrix(inter, users, items, max_len=4)
    a, b, c = (int(users.index([u])[0]) for u in "abc")
    # a in time order: 10 20 30 10 50 -> last 4, the repeat of 10 kept
    assert right[a].tolist() == [idx[20], idx[30], idx[10], idx[50]]
    assert right[b].tolist() == [0, 0, idx[10], idx[20]]
    assert right[c].tolist() == [0, 0, 0, idx[40]]
    left = sequence_matrix(inter, users, items, max_len=4, align="left")
    assert left[b].tolist() == [idx[10], idx[20], 0, 0]
    assert left[a].tolist() == right[a].tolist()
    with pytest.raises(ConfigError, match="align"):
        sequence_matrix(inter, users, items, max_len=4, align="middle")


def test_sequence_matrix_without_timestamps_uses_row_order():
    df = pd.DataFrame({"user": ["x", "x", "x"], "item": [3, 1, 2]})
    inter = Interactions(df)
    users, items = inter.vocabs()
    row = sequence_matrix(inter, users, items, max_len=2)[0]
    assert items.ids(row - 1).tolist() == [1, 2]


def test_pad_sequences_matches_sequence_matrix():
    out = pad_sequences([np.array([1, 2, 3]), np.array([], dtype=np.int64)], 2)
    assert out.tolist() == [[2, 3], [0, 0]]
    assert pad_sequences([np.array([4])], 3, align="left").tolist() == [[4, 0, 0]]


def test_length_batches_cover_every_nonempty_row_once():
    lengths = np.array([0, 3, 1, 5, 5, 2, 0, 4])
    batches = length_batches(lengths, 3, np.random.default_rng(0))
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == [1, 2, 3, 4, 5, 7]
    assert all(np.ptp(lengths[b]) <= 2 for b in batches)  # similar lengths together


def test_loss_auto_is_scale_aware():
    assert resolve_loss("auto", 1000) == "ce"
    assert resolve_loss("auto", 10_000_000) == "sampled_softmax"
    with pytest.raises(ConfigError, match="loss="):
        resolve_loss("softmax", 10)


def test_rank_metrics():
    m = rank_metrics(np.array([0, 1, 10, 50]), 10)
    assert m["hr@10"] == 0.5
    assert m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(3)) / 4)


def test_target_ranks_match_masking_and_a_full_sort():
    rng = np.random.default_rng(0)
    n_users, n_items = 50, 30
    q, table = torch.randn(n_users, 4), torch.randn(n_items, 4)
    seen = sp.random(n_users, n_items, density=0.2, format="csr", random_state=1)
    users, items = rng.permutation(n_users)[:40], rng.integers(0, n_items, 40)
    got = target_ranks(q[users], table, items, seen, users, max_rows=7)  # several blocks
    scores = (q[users] @ table.T).numpy()
    target = scores[np.arange(len(users)), items].copy()
    mask_seen(scores, seen, users)
    order = np.argsort(-scores, axis=1, kind="stable")
    for b in range(len(users)):  # rank = items strictly above the target, masked ones never
        above = [i for i in order[b] if scores[b, i] > target[b]]
        assert got[b] == len(above)


def _chains(n_users: int = 80, n_items: int = 20, length: int = 8, seed: int = 0) -> Interactions:
    """Each user walks i, i+1, i+2, ... (mod n_items) from a random start: the next item is
    determined by the last one, which only an order-aware model can learn."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start = int(rng.integers(n_items))
        for t in range(length):
            rows.append((f"u{u}", (start + t) % n_items, t))
    return Interactions(pd.DataFrame(rows, columns=["user", "item", "timestamp"]))


@pytest.mark.parametrize("name", SEQ_MODELS)
@pytest.mark.parametrize("loss", ["ce", "sampled_softmax", "bce"])
def test_models_learn_the_next_item_with_every_loss(name, loss):
    torch.manual_seed(0)
    params = dict(models.get_class(name).smoke_params)
    params.update(embedding_dim=16, epochs=20, batch_size=32, lr=0.02, loss=loss, n_negatives=8)
    params.update(num_threads=1, dropout=0.0)
    if name == "gru4rec":
        params.update(hidden_dim=24)  # != embedding_dim: the projection is exercised
    if name == "bert4rec":  # fine-tune at this test's lr, not the default 1e-4 tuned for Beauty
        params.update(finetune_lr=None)
    model = models.get(name, **params).fit(_chains())
    assert model.loss_ == loss
    # a history ending in item 5 should be followed by 6
    ids, _ = model.recommend_from_history([2, 3, 4, 5], k=3)
    assert 6 in ids, (name, loss, ids)


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_order_matters_and_future_items_do_not_leak(name):
    model = models.get(name, **models.get_class(name).smoke_params).fit(_chains(seed=1))
    a = model.score_history(np.array([1, 2, 3]))
    b = model.score_history(np.array([2, 1, 3]))
    assert not np.allclose(a, b)  # same items, same last one: only the order differs
    # scoring a prefix never depends on what comes after it: the module's state at a
    # position is the same whether or not later items follow
    module = model.module_
    if name == "bert4rec":
        return  # bidirectional by design; its query is the appended [MASK]
    seqs = model.pad_histories([np.array([1, 2, 3, 4]), np.array([1, 2, 3, 9])])
    with torch.no_grad():
        h = module.hidden(torch.from_numpy(seqs))
    last_shared = -2 if model.align == "right" else 2
    torch.testing.assert_close(h[0, last_shared], h[1, last_shared])


def test_validation_keeps_the_best_epoch_and_early_stops():
    inter = _chains(n_users=60, length=6)
    frame = inter.frame.sort_values(["user", "timestamp"])
    last = frame.groupby("user").tail(1).index
    train = Interactions(frame.drop(index=last).reset_index(drop=True))
    valid = Interactions(frame.loc[last].reset_index(drop=True))
    model = models.get("sasrec", **{**models.get_class("sasrec").smoke_params, "epochs": 6})
    model.fit(train, valid=valid)
    hist = model.train_history_
    assert len(hist.valid) == len(hist.train_loss) and "ndcg@10" in hist.valid[0]
    assert hist.best_value == max(v["ndcg@10"] for v in hist.valid)


def test_errors_name_the_problem():
    one_each = Interactions(pd.DataFrame({"user": ["a", "b"], "item": [1, 2], "timestamp": [0, 0]}))
    with pytest.raises(DataError, match="two or more interactions"):
        models.get("sasrec", epochs=1).fit(one_each)
    with pytest.raises(ConfigError, match="max_len"):
        models.get("gru4rec", max_len=1).fit(_chains())
    with pytest.raises(ConfigError, match="n_heads=3 must divide"):
        models.get("sasrec", embedding_dim=8, n_heads=3, epochs=1).fit(_chains())


def test_label_smoothing_spreads_the_target_mass_and_is_full_softmax_only():
    g = torch.Generator().manual_seed(0)
    h, table = torch.randn(4, 3, generator=g), torch.randn(6, 3, generator=g)
    target = torch.tensor([0, 2, 5, 1])
    logp = torch.log_softmax(h @ table.T, -1)
    expected = -(0.9 * logp[torch.arange(4), target] + 0.1 * logp.mean(1)).mean()
    torch.testing.assert_close(next_item_loss("ce", h, target, table, {}, 0.1), expected)
    for bad in ({"loss": "sampled_softmax", "label_smoothing": 0.1}, {"label_smoothing": 1.0}):
        with pytest.raises(ConfigError, match="label_smoothing"):
            models.get("sasrec", **{**models.get_class("sasrec").smoke_params, **bad}).fit(
                _chains()
            )
    # SASRec's default (None): 0.1 with the full softmax, nothing to smooth with sampled losses
    assert models.get("sasrec").label_smoothing is None
    assert resolve_smoothing(None, "ce") == 0.1 and resolve_smoothing(None, "bce") == 0.0
    assert models.get("gru4rec").label_smoothing == 0.0 == models.get("bert4rec").label_smoothing


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_time_limit_stops_after_the_epoch_that_passes_it(name):
    params = {**models.get_class(name).smoke_params, "epochs": 5, "time_limit_s": 1e-9}
    model = models.get(name, **params).fit(_chains(n_users=20))
    assert all(len(h.train_loss) == 1 for h in model.phase_histories_)
    assert model.phase_histories_[0].stopped_early
    # BERT4Rec's fine-tuning phase still gets its one epoch
    assert len(model.phase_histories_) == (2 if name == "bert4rec" else 1)
    with pytest.raises(ConfigError, match="time_limit_s"):
        models.get(name, **{**params, "time_limit_s": 0}).fit(_chains(n_users=20))


def test_bert4rec_fine_tuning_runs_when_the_first_phase_eats_the_budget():
    """Phase 1 (Cloze) with far more epochs than fit in ``time_limit_s`` stops at 80% of
    it, so the final-position fine-tuning phase still runs (it never ran in the first
    Beauty benchmark, cut by its budget)."""
    params = {**models.get_class("bert4rec").smoke_params, "epochs": 100_000, "patience": 0}
    params.update(finetune_epochs=2, time_limit_s=3.0)
    model = models.get("bert4rec", **params)
    model.fit(_chains(n_users=20))
    cloze, finetune = model.phase_histories_
    assert cloze.stopped_early and len(cloze.train_loss) < 100_000
    assert len(finetune.train_loss) >= 1


def test_bert4rec_fine_tuning_uses_finetune_lr():
    """Phase 2 trains at ``finetune_lr``: at a negligible one it leaves the Cloze weights
    where phase 1 put them (the same seed without phase 2), at ``lr`` it moves them."""
    params = {**models.get_class("bert4rec").smoke_params, "num_threads": 1}
    data = _chains(n_users=20)
    cloze_only = models.get("bert4rec", **{**params, "finetune_epochs": 0}).fit(data)
    tiny = models.get("bert4rec", **params, finetune_lr=1e-12).fit(data)
    same_lr = models.get("bert4rec", **params).fit(data)
    np.testing.assert_allclose(tiny.item_factors_, cloze_only.item_factors_, atol=1e-6)
    assert not np.allclose(same_lr.item_factors_, cloze_only.item_factors_, atol=1e-4)
    with pytest.raises(ConfigError, match="finetune_lr"):
        models.get("bert4rec", **params, finetune_lr=0.0).fit(data)


def test_padding_width_does_not_change_any_model():
    """Trimmed training batches and full-width scoring must agree: the same history padded
    to different widths gives the same query (positions count from the newest item)."""
    for name in SEQ_MODELS:
        model = models.get(name, **models.get_class(name).smoke_params).fit(_chains(seed=2))
        seqs = model.pad_histories([np.array([1, 2, 3])])  # (1, max_len)
        narrow = seqs[:, -5:] if model.align == "right" else seqs[:, :5]
        with torch.no_grad():
            wide_q = model._query(model.module_, torch.from_numpy(seqs))
            narrow_q = model._query(model.module_, torch.from_numpy(narrow))
        torch.testing.assert_close(wide_q, narrow_q, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("embedding_norm", [True, False])
def test_sasrec_layouts_query_the_newest_position_and_learn(norm_first, embedding_norm):
    """Pre-/Post-LN, with or without the input LayerNorm: the fast last-position query
    equals the full encoder's last position, padding stays 0, and the chain is learned."""
    params = {**models.get_class("sasrec").smoke_params, "epochs": 15, "dropout": 0.0}
    params.update(norm_first=norm_first, embedding_norm=embedding_norm, embedding_dim=16)
    model = models.get("sasrec", **params).fit(_chains())
    assert (model.module_.input_norm is not None) == embedding_norm
    seqs = torch.from_numpy(model.pad_histories([np.array([1, 2, 3]), np.array([4, 5])]))
    with torch.no_grad():
        full = model.module_.hidden(seqs)
        query = model._query(model.module_, seqs)
    torch.testing.assert_close(query, full[:, -1], atol=1e-5, rtol=1e-5)
    assert torch.all(full[seqs == 0] == 0)
    ids, _ = model.recommend_from_history([2, 3, 4, 5], k=3)
    assert 6 in ids, (norm_first, embedding_norm, ids)


def test_target_weighting_weighs_every_training_target_the_same():
    """weighting="target": the epoch's batch losses add up to the sum of every target's loss
    over the mean targets per batch, whatever the lengths a batch holds; "batch": each
    batch's loss is the mean over its targets. BERT4Rec (masked targets) refuses "target"."""
    rng = np.random.default_rng(0)
    rows = [
        (f"u{u}", int(i), t)
        for u in range(30)
        for t, i in enumerate(rng.integers(0, 15, 2 + u % 7))
    ]
    log = Interactions(pd.DataFrame(rows, columns=["user", "item", "timestamp"]))
    base = {**models.get_class("sasrec").smoke_params, "dropout": 0.0, "label_smoothing": 0.0}
    seen: dict = {}

    class Spy(models.get_class("sasrec")):  # type: ignore[misc, valid-type]
        def _train(self, module, loss_fn, batches, valid_fn=None, **config):  # noqa: ANN001
            seen.update(module=module, loss_fn=loss_fn, batches=list(batches(0)))
            raise RuntimeError("captured")

    for weighting in ("target", "batch"):
        with pytest.raises(RuntimeError, match="captured"):
            Spy(**{**base, "batch_size": 4, "weighting": weighting}).fit(log)
        m, total, losses, counts = seen["module"].eval(), 0.0, [], []
        with torch.no_grad():
            for b in seen["batches"]:
                where = b["target"] > 0
                per_target = torch.nn.functional.cross_entropy(
                    m.hidden(b["input"])[where] @ m.item_table().T,
                    b["target"][where] - 1,
                    reduction="none",
                )
                total += float(per_target.sum())
                counts.append(int(where.sum()))
                losses.append((float(seen["loss_fn"](m, b)), float(per_target.mean())))
        assert len(set(counts)) > 1  # batches of different target counts
        if weighting == "target":
            per_batch = sum(counts) / len(counts)
            assert sum(x for x, _ in losses) == pytest.approx(total / per_batch, rel=1e-5)
        else:
            assert all(x == pytest.approx(mean, rel=1e-5) for x, mean in losses)
    assert models.get("sasrec").weighting == "target" and models.get("gru4rec").weighting == "batch"
    with pytest.raises(ConfigError, match="weighting"):
        models.get("bert4rec", **models.get_class("bert4rec").smoke_params, weighting="target").fit(
            _chains()
        )
    with pytest.raises(ConfigError, match="weighting"):
        models.get("sasrec", **base, weighting="tokens").fit(_chains())


def test_sequence_prefixes_are_every_windowed_prefix_in_time_order():
    inter = _log()
    users, items = inter.vocabs()
    idx = {i: int(items.index([i])[0]) + 1 for i in [10, 20, 30, 40, 50]}
    prefixes = SequencePrefixes(inter, users, items, width=3)
    a, b = (int(users.index([u])[0]) for u in "ab")
    rows = prefixes.rows(np.arange(len(prefixes)))
    # a: 10 20 30 10 50 -> 4 prefixes (the first item has none); b: 10 20 -> 1; c: none
    expected = {
        (a, (0, idx[10], idx[20])),
        (a, (idx[10], idx[20], idx[30])),
        (a, (idx[20], idx[30], idx[10])),
        (a, (idx[30], idx[10], idx[50])),
        (b, (0, idx[10], idx[20])),
    }
    assert {(int(u), tuple(r)) for u, r in zip(prefixes.users, rows.tolist())} == expected
    assert prefixes.lengths.tolist() == (rows > 0).sum(1).tolist()


def test_sasrec_prefix_rows_train_on_the_last_position_and_learn():
    """One row per prefix: the target is its last item only, every prefix of a history is
    a row (batch_size counts prefixes), and the chain is learned."""
    params = {**models.get_class("sasrec").smoke_params, "epochs": 15, "dropout": 0.0}
    params.update(embedding_dim=16, prefix_rows=True)
    model = models.get("sasrec", **params)
    inter = _chains()
    model.fit(inter)
    get_rows, lengths, row_users = model._training_rows(inter)
    assert len(lengths) == 80 * 7 and np.bincount(row_users).tolist() == [7] * 80
    inp, tgt = model._training_targets(get_rows(np.arange(3)), np.random.default_rng(0))
    assert (tgt[:, :-1] == 0).all() and (tgt[:, -1] > 0).all()
    ids, _ = model.recommend_from_history([2, 3, 4, 5], k=3)
    assert 6 in ids, ids
