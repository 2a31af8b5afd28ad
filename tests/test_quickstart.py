"""The quickstart runs end to end on tiny data and leaves a report and loadable models."""

from __future__ import annotations

import json

import numpy as np

from recforge import models
from recforge import quickstart as qs


def test_quickstart_tiny(tmp_path, monkeypatch):
    monkeypatch.setitem(qs.RANKERS, "deepfm", {"epochs": 1, "embedding_dim": 4, "hidden": (16,)})
    monkeypatch.setitem(qs.RANKERS, "lr", {"epochs": 1})
    monkeypatch.setitem(qs.RANKERS, "dcnv2", {"epochs": 1, "embedding_dim": 4, "hidden": (16,)})
    monkeypatch.setitem(qs.RANKERS, "lightgbm", {"n_estimators": 20})
    lines: list[str] = []
    summary = qs.run(tmp_path, size="tiny", echo=lines.append)

    assert {r["model"] for r in summary["recall"]} >= set(qs.RECALL_MODELS)
    assert {r["model"] for r in summary["ranking"]} == set(qs.RANKERS)
    for row in summary["recall"]:
        assert 0.0 <= row["recall@20"] <= 1.0
    pop = next(r for r in summary["recall"] if r["model"] == "most_popular")
    cf = next(r for r in summary["recall"] if r["model"] == "itemcf")
    assert cf["recall@20"] > pop["recall@20"], (
        "ItemCF should beat popularity on the synthetic tastes"
    )
    for row in summary["ranking"]:
        assert 0.5 < row["auc"] <= 1.0

    html = (tmp_path / "report.html").read_text()
    assert "recforge quickstart" in html and "itemcf" in html and "<svg" in html
    assert (tmp_path / "report.md").exists()
    from recforge.report import read_report

    titles = [s.title for s in read_report(tmp_path)["sections"]]
    for start in (
        "Served funnel replay",
        "Item popularity long tail",
        "Recall@K, K = 5..100",
        "Recall channels",
        "Calibration",
        "ROC curve",
        "Training loss",
    ):
        assert any(t.startswith(start) for t in titles), start
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["data"]["size"] == "tiny"

    itemcf = models.load(tmp_path / "models" / "itemcf")
    ids, scores = itemcf.recommend([itemcf.user_vocab_.raw_ids[0]], k=5)
    assert ids.shape == (1, 5) and np.isfinite(scores).all()
    assert any("done in" in line for line in lines)
    # it ends with a served bundle, asked through REST and gRPC
    from recforge.serving import Recommender, verify_bundle

    manifest = verify_bundle(tmp_path / "bundle")
    assert manifest["metrics"]["n_users"] > 0 and "funnel/ndcg@10" in manifest["metrics"]
    assert Recommender.load(tmp_path / "bundle").recommend("nobody", k=3).cold
    assert any(line.startswith("REST  POST /v1/recommend") for line in lines)
    assert any("(same as REST)" in line for line in lines)
    assert any("curl -s -X POST" in line for line in lines)


def test_on_the_quickstart_data_the_ranking_stage_beats_the_best_channel(tmp_path, monkeypatch):
    """The quickstart's own data and funnel (one ranker, no server): re-ranking the recall
    candidates with a ranker trained on the funnel's lists, fed the request context and
    the recall features, beats the best single channel at the same k on the test split."""
    monkeypatch.setattr(qs, "RANKERS", {"deepfm": qs.RANKERS["deepfm"]})
    summary = qs.run(tmp_path, size="small", echo=lambda _: None, serve=False)
    m = summary["bundle"]
    best = m["best_channel"]
    assert m["n_users"] >= 500 and m["context_fields"] == ["daypart", "device"]
    assert m["funnel/ndcg@10"] > m[f"channel/{best}/ndcg@10"] + 0.005, m
    assert m["funnel/ndcg@10"] > m["recall_merged/ndcg@10"] + 0.01, m
    assert m["funnel/ctr@10"] > m[f"channel/{best}/ctr@10"], m  # the business view agrees
