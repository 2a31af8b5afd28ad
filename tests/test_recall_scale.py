"""benchmarks.recall_scale on tiny data: a child's row has the figures the table shows,
and implicit's ALS run raw with our defaults gives our ALS's recall (same factors)."""

from __future__ import annotations

import pytest

from benchmarks import recall_scale
from recforge.data.splits import random_split
from recforge.data.synth import SIZES, make_synthetic


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("recall_scale")
    train, test = random_split(make_synthetic(**SIZES["tiny"]), 0.2, seed=0)
    for name, part in (("train", train), ("eval", test)):
        part.frame[["user", "item"]].to_parquet(out / f"{name}.parquet", index=False)
    return out


def test_child_rows_and_peer_parity(folder):
    ours = recall_scale.run_child("als", folder, {"num_threads": 1})
    peer = recall_scale.run_child("implicit_als", folder)
    for row in (ours, peer):
        assert 0 < row["recall@20"] <= 1 and row["peak_rss_mib"] > 0 and row["fit_s"] > 0
        assert row["epochs"] == ours["params"]["iterations"]
    assert peer["source"] == "implicit" and ours["source"] == "recforge"
    assert peer["recall@20"] == pytest.approx(ours["recall@20"], abs=1e-6)
    md = recall_scale.markdown(
        [ours, peer, {"model": "x", "error": "boom"}],
        {"rows": 1, "train_rows": 1, "eval_rows": 1, "users": 1, "items": 1},
        "test",
    )
    assert md.startswith(recall_scale.SUBSECTION) and "| implicit_als | implicit |" in md
    assert "not run: boom" in md


def test_curve_reports_per_epoch_validation(folder):
    from recforge.models.registry import get_class

    params = {**get_class("youtube_dnn").smoke_params, "epochs": 2}
    row = recall_scale.run_child("youtube_dnn", folder, params, curve=True)
    assert len(row["valid_recall@10"]) == row["epochs"] == 2
    with pytest.raises(ValueError, match="split='valid'"):
        recall_scale.run(models=("youtube_dnn",), split="test", curve=True)


def test_full_curve_scores_every_epoch_as_full_ranking_does(folder):
    """--full-curve's per-epoch Recall@20 of the evaluation part is full_ranking's figure
    (its last epoch, with no best epoch restored, is the fitted model's)."""
    from recforge.models.registry import get_class

    params = {**get_class("simplex").smoke_params, "epochs": 2, "patience": 0}
    row = recall_scale.run_child("simplex", folder, params, curve=True, full_curve=True)
    full = [e["full_recall@20"] for e in row["epoch_valid"]]
    assert len(full) == row["epochs"] == 2
    assert full[-1] == pytest.approx(row["recall@20"], abs=5e-5)  # the row rounds to 4 digits
    with pytest.raises(ValueError, match="split='valid'"):
        recall_scale.run(models=("simplex",), split="test", full_curve=True)
