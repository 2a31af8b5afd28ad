"""DSSM / YouTube-DNN: losses with log-Q correction, history layout, pooling, hard
negatives, taste groups, cold users, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recforge import losses, models
from recforge.data.batching import (
    PairSampler,
    PopularitySampler,
    drop_targets,
    history_matrix,
)
from recforge.data.interactions import Interactions
from recforge.exceptions import ConfigError, DataError
from recforge.models.retrieval.torch_base import log_q_corrected, retrieval_loss, sampled_batches
from recforge.models.retrieval.two_tower import DSSM, YouTubeDNN
from recforge.nn.sequence_pool import SequencePooling
from tests.conftest import make_tiny_interactions

torch.set_num_threads(1)

FAST = {
    "embedding_dim": 16,
    "hidden": [32],
    "epochs": 25,
    "batch_size": 64,
    "lr": 0.01,
    "n_negatives": 16,
}


def in_group_share(model, k: int = 5) -> float:
    users = [f"u{u}" for u in range(60)]
    ids, _ = model.recommend(users, k=k)
    groups = np.array([int(u[1:]) % 2 for u in users])
    return float((((ids - 7) // 10 >= 20) == groups[:, None]).mean())


@pytest.fixture(scope="module")
def data():
    return make_tiny_interactions()


@pytest.fixture(scope="module")
def dssm(data):
    return DSSM(**FAST, loss="in_batch", seed=0).fit(data)


@pytest.fixture(scope="module")
def ytdnn(data):
    return YouTubeDNN(**FAST, loss="sampled_softmax", seed=0).fit(data)


# ---------------------------------------------------------------------- data layout
def test_history_matrix_keeps_most_recent_in_time_order():
    import pandas as pd

    frame = pd.DataFrame(
        {"user": ["a", "a", "a", "b", "a"], "item": [1, 2, 3, 1, 2], "timestamp": [5, 1, 3, 0, 9]}
    )
    inter = Interactions(frame)
    uv, iv = inter.vocabs()  # items 1, 2, 3 -> 0, 1, 2
    h = history_matrix(inter, uv, iv, max_history=2)
    # a's items by time: 2 (t=1), 3 (t=3), 1 (t=5), 2 again (t=9, keeps only the last) -> 3, 1, 2
    np.testing.assert_array_equal(h, [[1, 2], [1, 0]])  # a: most recent two are items 1, 2
    np.testing.assert_array_equal(drop_targets(h, np.array([0, 5])), [[0, 2], [1, 0]])


def test_sequence_pooling_mean_and_attention():
    seq = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]], [[5.0, 5.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    out = SequencePooling(2, "mean")(seq, mask)
    np.testing.assert_allclose(out.numpy(), [[2.0, 3.0], [0.0, 0.0]])
    att = SequencePooling(2, "attention")(seq, mask)
    assert torch.isfinite(att).all() and torch.all(att[1] == 0)
    # attention weights are a convex combination of the real positions only
    assert 1.0 <= att[0, 0] <= 3.0
    with pytest.raises(ConfigError):
        SequencePooling(2, "max")


# ---------------------------------------------------------------------- log-Q correction
def test_popularity_sampler_log_q():
    counts = np.array([8.0, 2.0, 0.0, 6.0])
    s = PopularitySampler(counts, alpha=0.5)
    q = np.maximum(counts, 0.5) ** 0.5
    np.testing.assert_allclose(np.exp(s.log_q), q / q.sum(), rtol=1e-6)
    draws = s.sample(20000, np.random.default_rng(0))
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 20000, q / q.sum(), atol=0.02)


def first_batch(sampler, **kwargs):
    """The first training batch of 8 rows (seed 0, epoch 0) that sampled_batches makes."""
    return next(iter(sampled_batches(sampler, batch_size=8, seed=0, epoch=0, **kwargs)))


def test_log_q_correction_changes_logits_as_defined(data):
    sampler = PairSampler(data.to_csr(*data.vocabs()))
    counts = sampler.item_counts()
    pop = PopularitySampler(counts, 0.75)
    in_batch_log_q = np.log(counts / counts.sum()).astype(np.float32)
    torch.manual_seed(0)
    user, items = torch.randn(8, 4), torch.randn(sampler.n_items, 4)

    def vec(idx):
        return items[idx]

    for loss in ("sampled_softmax", "in_batch"):
        batch = first_batch(
            sampler, loss=loss, n_negatives=5, popularity=pop, in_batch_log_q=in_batch_log_q
        )
        pos_ids = batch["pos"]
        np.testing.assert_allclose(
            batch["log_q_pos"].numpy(),
            (pop.log_q if loss == "sampled_softmax" else in_batch_log_q)[pos_ids.numpy()],
        )
        neg_ids = batch["neg"] if loss == "sampled_softmax" else pos_ids
        log_q_neg = batch["log_q_neg"] if loss == "sampled_softmax" else batch["log_q_pos"]
        t = 0.5
        # by hand: logits s / T - log q, accidental hits (and the diagonal) masked
        pos_logit = log_q_corrected((user * items[pos_ids]).sum(-1), batch["log_q_pos"], t)
        neg_logit = log_q_corrected(user @ items[neg_ids].T, log_q_neg[None, :], t)
        hit = neg_ids[None, :] == pos_ids[:, None]
        neg_logit = neg_logit.masked_fill(hit, -1e30)
        logits = torch.cat([pos_logit[:, None], neg_logit], 1)
        expected = F.cross_entropy(logits, torch.zeros(8, dtype=torch.long))
        got = retrieval_loss(loss, user, items[pos_ids], batch, vec, t)
        assert float(got) == pytest.approx(float(expected), rel=1e-5)
        # the correction matters: without it the loss differs
        plain = F.cross_entropy(
            torch.cat(
                [
                    (user * items[pos_ids]).sum(-1, keepdim=True) / t,
                    (user @ items[neg_ids].T / t).masked_fill(hit, -1e30),
                ],
                1,
            ),
            torch.zeros(8, dtype=torch.long),
        )
        assert abs(float(plain) - float(got)) > 1e-4


def test_log_q_corrected_formula():
    s = torch.tensor([[1.0, 2.0]])
    lq = torch.log(torch.tensor([0.5, 0.25]))
    np.testing.assert_allclose(
        log_q_corrected(s, lq, 0.5).numpy(), [[2 - np.log(0.5), 4 - np.log(0.25)]], rtol=1e-6
    )


# ---------------------------------------------------------------------- models
def test_dssm_learns_taste_groups(dssm):
    assert dssm.user_factors_.shape == (dssm.n_users, 16) and dssm.item_factors_.shape == (
        dssm.n_items,
        16,
    )
    np.testing.assert_allclose(
        np.linalg.norm(dssm.item_factors_, axis=1), 1.0, rtol=1e-5
    )  # normalize=True
    assert dssm.train_loss_[-1] < dssm.train_loss_[0]
    assert in_group_share(dssm) > 0.75
    assert dssm.user_encoder_ is not None and dssm.item_encoder_ is not None  # side features used


def test_youtube_dnn_learns_taste_groups(ytdnn):
    assert ytdnn.train_loss_[-1] < ytdnn.train_loss_[0]
    assert in_group_share(ytdnn) > 0.75
    assert ytdnn.item_encoder_ is None  # item side is a plain embedding


@pytest.mark.parametrize("loss", ["infonce", "bpr"])
def test_other_losses_train(data, loss):
    m = DSSM(**{**FAST, "epochs": 15}, loss=loss, pooling="attention").fit(data)
    assert m.train_loss_[-1] < m.train_loss_[0]
    assert in_group_share(m) > 0.65


def test_hard_negatives_mined_outside_seen_and_top(data):
    m = YouTubeDNN(
        **{**FAST, "epochs": 4}, hard_negatives=3, hard_negative_every=2, hard_negative_skip=2
    ).fit(data)
    pool = m._mine_hard_negatives(m.user_factors_, m.item_factors_, 3, 2)
    assert pool.shape == (m.n_users, 3)
    scores = m.user_factors_ @ m.item_factors_.T
    for u in range(5):
        seen = set(m.seen_[u].indices)
        assert not (set(pool[u]) & seen)
        unseen_rank = [i for i in np.argsort(-scores[u], kind="stable") if i not in seen]
        assert list(pool[u]) == unseen_rank[2:5]


def test_cold_user_vectors_match_known_users(ytdnn, data, tmp_path):
    users = ["u0", "u5"]
    idx = ytdnn.user_vocab_.index(users)
    histories = [list(ytdnn.item_vocab_.ids(row[row > 0] - 1)) for row in ytdnn.history_[idx]]
    feats = data.user_features.loc[users]
    vec = ytdnn.user_vectors_from_history(histories, feats)
    np.testing.assert_allclose(vec, ytdnn.user_factors_[idx], rtol=1e-5, atol=1e-6)
    with pytest.raises(DataError, match="user_features"):
        ytdnn.user_vectors_from_history(histories)
    loaded = models.load(ytdnn.save(tmp_path / "yt"))
    np.testing.assert_allclose(
        loaded.user_vectors_from_history(histories, feats), vec, rtol=1e-5, atol=1e-6
    )


def test_save_load_same_outputs(dssm, tmp_path):
    users = ["u1", "u2", "u30"]
    ids, scores = dssm.recommend(users, k=5)
    loaded = models.load(dssm.save(tmp_path / "dssm"))
    ids2, scores2 = loaded.recommend(users, k=5)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_allclose(scores, scores2, rtol=1e-6)
    # the rebuilt towers give the same vectors as the materialised ones
    with torch.no_grad():
        u = loaded.module_.user_vectors(
            torch.arange(3), torch.from_numpy(loaded.history_[:3])
        ).numpy()
    np.testing.assert_allclose(u, dssm.user_factors_[:3], rtol=1e-5, atol=1e-6)


def test_without_features_and_bad_params(data):
    plain = Interactions(data.frame)
    m = DSSM(**{**FAST, "epochs": 2}).fit(plain)
    assert m.user_encoder_ is None and m.item_encoder_ is None
    with pytest.raises(ConfigError, match="loss"):
        DSSM(loss="softmax").fit(data)
    with pytest.raises(DataError, match="nope"):
        DSSM(**{**FAST, "epochs": 1}, user_feature_cols=["nope"]).fit(data)


def test_hard_negatives_that_can_never_run_are_warned_about(caplog):
    import logging

    from recforge import models
    from tests.conftest import make_tiny_interactions

    model = models.get(
        "dssm",
        embedding_dim=4,
        hidden=[8],
        epochs=2,
        batch_size=64,
        n_negatives=8,
        hard_negatives=4,
        hard_negative_every=5,
    )
    with caplog.at_level(logging.WARNING, logger="recforge.models.retrieval.two_tower"):
        model.fit(make_tiny_interactions())
    assert any("hard_negatives=4 has no effect" in r.getMessage() for r in caplog.records)


def test_hard_negatives_get_the_log_q_scale_of_sampled_ones(data):
    """Mined hard negatives used to enter the softmax with log-Q 0 beside sampled negatives
    corrected by log q ~ -5: e^5 times less weight for the same score. Now every logit is
    corrected by the log of the item's expected count over both samplers."""
    from recforge.models.retrieval.torch_base import _mixture_log_q

    pools = np.array([[3, 4], [4, 5]])  # two batch rows, pools of P = 2 mined items
    out = _mixture_log_q(
        {"neg": np.array([4, 9]), "hard": np.array([4, 3])},
        expected_sampled=np.full(10, 0.5),  # N q(i)
        pools=pools,
        n_hard_per_row=1,
    )
    # item 4 is in both pools: 2 rows x 1 draw / 2 = 1 expected hard copy; item 3: 0.5
    np.testing.assert_allclose(np.exp(out["log_q_neg"].numpy()), [1.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(np.exp(out["log_q_hard"].numpy()), [1.5, 1.0], rtol=1e-6)

    sampler = PairSampler(data.to_csr(*data.vocabs()))
    pop = PopularitySampler(sampler.item_counts(), 0.75)
    pool = np.tile(np.arange(6), (sampler.n_users, 1))  # every user's pool: items 0..5
    batch = first_batch(
        sampler,
        loss="sampled_softmax",
        n_negatives=40,
        popularity=pop,
        in_batch_log_q=None,
        hard_pool=pool,
        n_hard_per_row=2,
    )
    hard, neg = batch["hard"].reshape(-1).numpy(), batch["neg"].numpy()
    expected = np.log(40 * pop.q + np.where(np.arange(sampler.n_items) < 6, 8 * 2 / 6, 0.0))
    np.testing.assert_allclose(batch["log_q_hard"].numpy(), expected[hard], rtol=1e-5)
    np.testing.assert_allclose(batch["log_q_neg"].numpy(), expected[neg], rtol=1e-5)
    np.testing.assert_allclose(
        batch["log_q_pos"].numpy(), expected[batch["pos"].numpy()], rtol=1e-5
    )
    torch.manual_seed(0)
    user, items = torch.randn(8, 4), torch.randn(sampler.n_items, 4)
    got = retrieval_loss(
        "sampled_softmax", user, items[batch["pos"]], batch, lambda i: items[i], 1.0
    )
    all_neg = torch.cat([batch["neg"], batch["hard"].reshape(-1)])
    ref = losses.sampled_softmax(
        user,
        items[batch["pos"]],
        items[all_neg],
        log_q_pos=batch["log_q_pos"],
        log_q_neg=torch.from_numpy(expected[all_neg.numpy()].astype(np.float32)),
        pos_ids=batch["pos"],
        neg_ids=all_neg,
    )
    torch.testing.assert_close(got, ref)


# ---------------------------------------------------------------------- scale-aware training
@pytest.mark.parametrize("pooling", ["mean", "sum"])
def test_csr_history_pooling_matches_gather(pooling):
    """The training path (history as CSR row means/sums, ``history_rows``) gives the gather
    path's user vectors and the same gradient on the history embeddings."""
    from recforge.models.retrieval.torch_base import history_mean_rows
    from recforge.models.retrieval.two_tower import TwoTowerModule

    torch.manual_seed(0)
    m = TwoTowerModule(
        kind="youtube_dnn", n_users=4, n_items=9, dim=6, hidden=(8,), dropout=0.0,
        pooling=pooling, normalize=True, user_side=None, item_side=None, init_std=0.3,
    )  # fmt: skip
    history = np.array([[3, 1, 0, 0], [0, 0, 0, 0], [9, 2, 5, 7], [4, 0, 0, 0]])
    users = torch.arange(4)
    dense = m.user_vectors(users, torch.from_numpy(history))
    (g_dense,) = torch.autograd.grad(dense.sum(), m.history.weight)
    rows = history_mean_rows(history, 10, mean=pooling == "mean")
    sparse = m.user_vectors(users, None, history_rows=rows)
    (g_sparse,) = torch.autograd.grad(sparse.sum(), m.history.weight)
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_sparse, g_dense, rtol=1e-5, atol=1e-6)


def test_youtube_dnn_batch_grows_with_the_log_and_stops_early(data):
    """~500 pairs: batch 2 doubles to 4 (8 would leave < 100 steps per epoch), lr x sqrt 2;
    with validation rows and patience, training stops early and keeps the best epoch."""
    from recforge.data.splits import random_split

    train, valid = random_split(data, 0.2, seed=0)
    m = YouTubeDNN(
        **{**FAST, "epochs": 30, "batch_size": 2, "lr": 0.01},
        max_batch_size=8,
        patience=1,
        seed=0,
    ).fit(train, valid=valid)
    assert m.batch_size_ == 4 and m.lr_ == pytest.approx(0.01 * 2**0.5)
    h = m.train_history_
    assert h.stopped_early and len(h.train_loss) < 30
    assert h.best_epoch is not None and h.best_epoch < len(h.train_loss)


def test_history_without_held_out_drops_only_the_held_out_cells():
    import scipy.sparse as sp

    from recforge.models.retrieval.torch_base import history_without_held_out

    seen = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [1, 0, 0]], dtype=np.float32))
    train = seen.copy()
    train[1, 2] = 0
    train.eliminate_zeros()
    history = np.array([[1, 2], [2, 3], [1, 0]])  # item index + 1
    out = history_without_held_out(history, seen, train)
    np.testing.assert_array_equal(out, [[1, 2], [2, 0], [1, 0]])
    assert history_without_held_out(history, seen, seen) is history


def test_youtube_dnn_settings_by_density():
    """None defaults: the sparse settings under 0.2% of cells seen, the dense ones above;
    explicit values win at any density."""
    from recforge.models.retrieval.two_tower import DENSE_SETTINGS, SPARSE_SETTINGS

    m = YouTubeDNN()
    assert m._settings(0.0004) == {**SPARSE_SETTINGS, "lr": m.sparse_lr}
    assert m._settings(0.03) == {**DENSE_SETTINGS, "lr": m.lr}
    m = YouTubeDNN(temperature=0.5, n_negatives=64, sparse_lr=None, lr=0.01)
    assert m._settings(0.0004)["temperature"] == 0.5
    assert m._settings(0.0004)["n_negatives"] == 64 and m._settings(0.0004)["lr"] == 0.01
