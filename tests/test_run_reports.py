"""Every run leaves a report: train (retrieval and ranker), evaluate, report compare.

The sections a reader looks for are checked by title; the numbers in them come from the
same library functions the metrics do (report_parts), so here we check that they are
there, consistent and self-contained (no network reference).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from recforge import report_parts as rp
from recforge.cli.main import main
from recforge.data.synth import make_synthetic
from recforge.jobs import TrainJob, run_train
from recforge.report import Curve, Table, read_report

MICRO = {"n_users": 60, "n_items": 50, "n_interactions": 1500}


def titles(run_dir) -> list[str]:
    return [s.title for s in read_report(run_dir)["sections"]]


def job(tmp_path, name, model, params, **extra):
    return TrainJob.from_dict(
        {
            "data": {"source": "synth", "size": "tiny", "synth": MICRO},
            "split": {"method": "user_temporal", "test_ratio": 0.2, **extra.pop("split", {})},
            "model": {"name": model, "params": params},
            "output": str(tmp_path / name),
            **extra,
        }
    )


def self_contained(html: str) -> None:
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "the report references the network"


def test_train_report_of_a_retrieval_model(tmp_path):
    run_train(job(tmp_path, "a", "itemcf", {"k": 20}))
    t = titles(tmp_path / "a")
    for title in ("Test metrics", "Data", "Item popularity long tail", "Split and long tail"):
        assert title in t
    assert any(x.startswith("Recall@K, K = 5..100") for x in t)
    assert any(x.startswith("NDCG@K") for x in t) and any(x.startswith("HR@K") for x in t)
    rep = read_report(tmp_path / "a")
    split_note = next(s for s in rep["sections"] if s.title == "Split and long tail").body
    assert "user_temporal" in split_note and "flatters" in split_note  # the leakage note
    for key in ("data hash", "versions", "hardware", "wall time", "config"):
        assert key in rep["meta"]
    recall = next(s for s in rep["sections"] if s.title.startswith("Recall@K"))
    ks, values = recall.series["itemcf"]
    assert list(ks) == [5, 10, 20, 50, 100] and all(np.diff(values) >= 0)  # recall grows with K
    business = next(s for s in rep["sections"] if s.title.startswith("Business view at k = 10"))
    assert 0 < business.rows["itemcf"]["ctr@10"] < 1 and business.rows["itemcf"]["arpu@10"] > 0
    assert "CTR by list position (held-out clicks)" in t
    self_contained((tmp_path / "a" / "report.html").read_text())


def test_train_report_of_a_ranker_has_calibration_and_lr(tmp_path):
    params = {
        "epochs": 2,
        "embedding_dim": 4,
        "hidden": [8],
        "schedule": "warmup_linear",
        "warmup_steps": 2,
    }
    run_train(job(tmp_path, "r", "deepfm", params, split={"valid_ratio": 0.1}))
    rep = read_report(tmp_path / "r")
    t = [s.title for s in rep["sections"]]
    assert "ROC curve" in t and "Precision-recall curve" in t
    cal = next(s for s in rep["sections"] if s.title.startswith("Calibration"))
    ((pred, observed),) = cal.series.values()
    assert len(pred) == 10 and all(0 <= v <= 1 for v in observed)
    assert "Training loss" in t and "Learning rate (end of epoch)" in t


def test_calibration_buckets_are_exact():
    y = np.array([0, 0, 1, 1, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    ((x, obs),) = rp.calibration_curve({"m": (y, p)}, buckets=4).series.values()
    assert np.allclose(x, [0.15, 0.35, 0.55, 0.75]) and np.allclose(obs, [0, 1, 0.5, 1])


def test_data_sections_count_and_long_tail():
    inter = make_synthetic(n_users=40, n_items=30, n_interactions=800, seed=0)
    from recforge.data.splits import user_temporal_split

    train, test = user_temporal_split(inter, test_ratio=0.2)
    table, tail, note = rp.data_sections(inter, train, test, "temporal, test_ratio 0.2")
    assert isinstance(table, Table) and table.rows["all"]["interactions"] == len(inter)
    assert table.rows["train"]["interactions"] + table.rows["test"]["interactions"] == len(inter)
    assert isinstance(tail, Curve)
    ((x, y),) = tail.series.values()
    assert y[-1] == pytest.approx(1.0) and np.all(np.diff(y) >= 0) and np.all(y >= x - 1e-12)
    assert "no leak" in note.body
    assert rp.data_hash(inter) == rp.data_hash(
        make_synthetic(n_users=40, n_items=30, n_interactions=800, seed=0)
    )


def test_evaluate_writes_a_report_and_compare_overlays_runs(tmp_path):
    run_train(job(tmp_path, "a", "itemcf", {"k": 20}))
    run_train(job(tmp_path, "b", "most_popular", {}))
    runner = CliRunner()
    r = runner.invoke(main, ["evaluate", "--model", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "a" / "evaluate" / "report.html").exists() and "report:" in r.output
    assert "Test metrics" in titles(tmp_path / "a" / "evaluate")

    out = tmp_path / "cmp"
    r = runner.invoke(
        main, ["report", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    rep = read_report(out)
    assert set(rep["sections"][0].rows) == {"a", "b"}  # the runs table
    recall = next(s for s in rep["sections"] if s.title.startswith("Recall@K"))
    assert set(recall.series) == {"a", "b"}  # curves overlaid, one line per run
    metrics = next(s for s in rep["sections"] if s.title == "Test metrics")
    assert set(metrics.rows) == {"a", "b"}
    html = (out / "report.html").read_text()
    assert html.count("<svg") >= 4
    self_contained(html)
    saved = json.loads((out / "report.json").read_text())
    assert saved["title"].startswith("recforge report compare")

    r = runner.invoke(main, ["report", "compare", str(tmp_path / "a")])
    assert r.exit_code == 2 and "at least two" in r.output
    (tmp_path / "empty").mkdir()
    r = runner.invoke(main, ["report", "compare", str(tmp_path / "a"), str(tmp_path / "empty")])
    assert r.exit_code == 2 and "report.json" in r.output


def test_bundle_build_writes_its_report_beside_the_bundle(tmp_path):
    config = tmp_path / "bundle.yaml"
    config.write_text(
        f"""
data: {{source: synth, size: tiny, seed: 0, synth: {json.dumps(MICRO)}}}
split: {{method: temporal, test_ratio: 0.2}}
recall:
  channels:
    - {{name: itemcf, model: itemcf, params: {{k: 20}}, quota: 30}}
    - {{name: pop, model: most_popular, quota: 20}}
  fallback: most_popular
  k: 40
ranker: {{name: lr, params: {{epochs: 1}}}}
evaluate: {{k: 10, max_users: 50}}
output: {tmp_path / "bundle"}
"""
    )
    r = CliRunner().invoke(main, ["bundle", "build", "--config", str(config)])
    assert r.exit_code == 0, r.output
    report_dir = tmp_path / "bundle-report"
    assert f"report: {report_dir / 'report.html'}" in r.output
    t = titles(report_dir)
    assert t[0].startswith("Served funnel replay") and "What the ranking stage earns" in t
    assert any(x.startswith("Business view at k = 10") for x in t)
    assert any(x.startswith("Recall channels") for x in t) and "Data" in t
    from recforge.serving import verify_bundle

    verify_bundle(tmp_path / "bundle")  # the bundle itself holds only its listed files
