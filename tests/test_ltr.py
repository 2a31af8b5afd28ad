"""Learning to rank: LambdaMART grouped by user, and the torch rankers' listwise option."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recforge import losses, models
from recforge.exceptions import ConfigError, DataError
from recforge.metrics import ndcg_at_k
from recforge.models.ranking.torch_base import _ListBatches

torch.set_num_threads(1)


def lists_frame(n_users: int, seed: int) -> pd.DataFrame:
    """Per user 12 candidates; the relevant ones have a high ``q`` *relative to the user's
    other candidates* (a per-user offset makes pointwise levels uninformative)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        offset = rng.normal(0, 2)
        q = rng.normal(size=12)
        rel = (q >= np.sort(q)[-2]).astype(int)  # the top 2 by q
        for j in range(12):
            rows.append((f"u{u}", f"i{rng.integers(0, 50)}", q[j] + offset, rel[j]))
    return pd.DataFrame(rows, columns=["user", "item", "q", "label"])


def ndcg(frame: pd.DataFrame, score: np.ndarray) -> float:
    f = frame.assign(s=score).sort_values(["user", "s"], ascending=[True, False])
    ranked = [g.index.tolist()[:5] for _, g in f.groupby("user")]
    rel = [set(g.index[g["label"] == 1]) for _, g in f.groupby("user")]
    return float(ndcg_at_k(ranked, rel, 5))


def test_lambdamart_ranks_within_lists(tmp_path):
    train, test = lists_frame(120, 0), lists_frame(60, 1)
    model = models.get("lambdamart", n_estimators=60, num_leaves=7, min_child_samples=5)
    model.fit(train, valid=lists_frame(30, 2))
    p = model.predict_proba(test)
    assert p.shape == (len(test),) and np.all((p > 0) & (p < 1))
    assert ndcg(test, p) > 0.8
    assert ndcg(test, p) > ndcg(test, np.random.default_rng(0).random(len(test))) + 0.3
    assert "valid_ndcg@10" in model.metrics_
    loaded = models.load(model.save(tmp_path / "lm"))
    np.testing.assert_allclose(loaded.predict_proba(test), p)


def test_lambdamart_names_a_missing_group_column():
    with pytest.raises(DataError, match="group column 'request'"):
        models.get("lambdamart", group="request").fit(lists_frame(5, 0))


def test_list_batches_hold_whole_lists_with_a_positive():
    y = torch.tensor([1, 0, 0, 0, 0, 1, 0, 1, 0, 0], dtype=torch.float32)
    groups = np.array([0, 0, 1, 1, 2, 2, 2, 3, 3, 4])  # list 1 has no positive, 4 one row
    x = {"categorical": torch.arange(10)[:, None], "numeric": torch.zeros(10, 0), "multi": {}}
    batches = _ListBatches(x, y, batch_size=4, seed=0, groups=groups)
    seen = []
    for bx, by, seg in batches(0):
        rows = bx["categorical"][:, 0].numpy()
        for s in np.unique(seg.numpy()):
            members = rows[seg.numpy() == s]
            assert len(set(groups[members])) == 1  # one list per segment, whole
            assert sorted(members) == sorted(np.flatnonzero(groups == groups[members[0]]))
            assert by[seg == s].max() == 1
            seen.append(groups[members[0]])
    assert sorted(set(seen)) == [0, 2, 3]


def test_softmax_list_loss_matches_formula():
    model = models.get("deepfm", list_loss="softmax")
    logits = torch.tensor([0.5, -1.0, 2.0, 0.1, 0.3])
    y = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    seg = torch.tensor([0, 0, 0, 1, 1])
    a = -(0.5 * torch.log_softmax(logits[:3], 0)[0] + 0.5 * torch.log_softmax(logits[:3], 0)[2])
    b = -torch.log_softmax(logits[3:], 0)[1]
    torch.testing.assert_close(model.list_loss_value(logits, y, seg), (a + b) / 2)
    model.list_loss = "listnet"
    scores = torch.tensor([[0.5, -1.0, 2.0], [0.1, 0.3, 0.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    torch.testing.assert_close(
        model.list_loss_value(logits, y, seg), losses.listnet(scores, labels, mask)
    )


@pytest.mark.parametrize("list_loss", ["softmax", "lambdarank"])
def test_listwise_deepfm_learns_relative_order(list_loss):
    train, test = lists_frame(150, 0), lists_frame(60, 1)
    model = models.get(
        "deepfm", embedding_dim=4, hidden=(16,), epochs=15, batch_size=96, lr=0.02,
        list_loss=list_loss, seed=0,
    )  # fmt: skip
    model.fit(train.drop(columns="item"))
    p = model.predict_proba(test.drop(columns="item"))
    assert ndcg(test, p) > 0.7


def test_listwise_errors_name_the_fix():
    frame = lists_frame(5, 0)
    with pytest.raises(DataError, match="list_group='request'"):
        models.get("deepfm", list_loss="softmax", list_group="request", epochs=1).fit(frame)
    with pytest.raises(ConfigError, match="list_loss"):
        models.get("deepfm", list_loss="pairwise", epochs=1).fit(frame)
    with pytest.raises(ConfigError, match="sampling"):
        models.get("deepfm", list_loss="softmax", sampling="under", epochs=1).fit(frame)
