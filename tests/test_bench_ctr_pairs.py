"""The ranker speed benchmark's side-by-side table (benchmarks.ctr_pairs / ctr_speed): the
pairs are well formed, and writing the docs section keeps the other benchmarks' parts."""

from __future__ import annotations

import importlib.util

import pytest

from benchmarks import ctr_pairs, ctr_speed
from recforge import models


def test_every_pair_names_a_registered_ranker_with_valid_settings():
    for key, pair in ctr_pairs.PAIRS.items():
        assert pair.model in models.available("ranker"), key
        models.get(pair.model, **pair.params)  # the settings are real hyperparameters
    for name, params in ctr_pairs.SOLO.items():
        models.get(name, **params)


@pytest.mark.skipif(importlib.util.find_spec("deepctr_torch") is None, reason="bench extra")
def test_every_peer_class_exists():
    import deepctr_torch.models as dm

    for pair in ctr_pairs.PAIRS.values():
        assert hasattr(dm, pair.peer), pair.peer


def _side(sps: int, auc: float) -> dict:
    return {"samples_per_s": sps, "fit_s": 1.0, "auc": auc, "load": 3.1}


def test_table_and_docs_section(tmp_path):
    zoo = {
        "pairs": {
            "nfm": {
                "peer": "NFM",
                "settings": "MLP",
                "note": "",
                "recforge": _side(3000, 0.74),
                "deepctr": _side(1000, 0.739),
                "ratio": 3.0,
            },
            "afm": {
                "peer": "AFM",
                "settings": "att",
                "note": "more pairs",
                "recforge": _side(900, 0.73),
                "deepctr": {"error": "ValueError: x"},
            },
        },
        "solo": {"lr": _side(20000, 0.7)},
    }
    table = ctr_pairs.to_markdown(zoo)
    assert "| nfm | NFM | MLP | 3,000 | 1,000 | **3.00x** | 0.7400 | 0.7390 | 3.1, 3.1 |" in table
    assert "error: ValueError: x" in table and "lr 20,000 samples/s" in table
    d = {"samples_per_s": 10, "test_auc": 0.7, "fit_seconds": 1.0, "train_loop_samples_per_s": 11}
    r = {
        "date": "2026-12-01",
        "threads": 2,
        "torch": "2",
        "machine": "x",
        "rows": {"train": 10, "test": 5, "click_rate": 0.3, "zoo": 10},
        "deepfm": {"recforge_dense": d, "recforge_sparse": d, "deepctr_torch": d},
        "speedup_vs_deepctr": {"dense": 1.0, "sparse": 1.0},
        "latency_200": {"p50_ms": 1, "p99_ms": 2},
        "peak_rss": {},
        "zoo": zoo,
    }
    doc = tmp_path / "B.md"
    doc.write_text("# B\n\n## Ranking speed\n\nold\n\n### ONNX export\n\nkeep\n\n## Recall\n\nk2\n")
    ctr_speed.write_docs(doc, r, "A shared machine.")
    text = doc.read_text()
    assert "old" not in text and "A shared machine." in text and "**3.00x**" in text
    assert "### ONNX export\n\nkeep" in text and "## Recall\n\nk2" in text
    assert ctr_speed._without_note(["--docs", "d", "--note", "x y", "--models=a"]) == [
        "--docs",
        "d",
        "--models=a",
    ]


def test_repeats_alternate_the_sides_and_show_the_median_round(monkeypatch):
    calls = []
    ours = iter([3000, 1000, 2400])  # rounds' ratios: 3.0, 1.0, 2.0 -> the median is 2.0
    theirs = iter([1000, 1000, 1200])

    def fake(side, it):
        def fit(*args):
            calls.append(side)
            return _side(next(it), 0.7)

        return fit

    monkeypatch.setattr(ctr_pairs, "fit_recforge", fake("recforge", ours))
    monkeypatch.setattr(ctr_pairs, "fit_deepctr", fake("deepctr", theirs))
    monkeypatch.setattr(ctr_speed, "warm_up_torch", lambda: None)
    r = ctr_pairs.bench_pairs(None, None, ["nfm"], [], repeats=3)
    row = r["pairs"]["nfm"]
    assert calls == ["recforge", "deepctr", "deepctr", "recforge", "recforge", "deepctr"]
    assert row["ratio"] == 2.0 and row["ratios"] == [3.0, 1.0, 2.0]
    assert row["recforge"]["samples_per_s"] == 2400 and row["deepctr"]["samples_per_s"] == 1200
    assert "**2.00x** (3.00, 1.00, 2.00)" in ctr_pairs.to_markdown(r)


def test_micro_benchmarks_time_both_sides():
    from benchmarks import ctr_micro

    gather = ctr_micro.bench_gather(reps=1)
    assert set(gather) == {"F.embedding", "index_select"} and min(gather.values()) > 0
    mlp = ctr_micro.bench_mlp(reps=1)
    assert set(mlp) == {"autograd (nn.Sequential)", "_ReluStack"} and min(mlp.values()) > 0
