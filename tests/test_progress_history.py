"""Progress bars (shown on a terminal, quiet elsewhere) and the training history saved with
every torch model, which the reports draw."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recforge import models
from recforge.progress import show_progress
from recforge.report import svg_curve, training_curves
from tests.conftest import make_tiny_ctr, make_tiny_interactions


def test_show_progress_only_where_someone_watches(monkeypatch):
    monkeypatch.delenv("RECFORGE_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert show_progress(True) and not show_progress(False)
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert show_progress(None)
    monkeypatch.setenv("CI", "true")
    assert not show_progress(None)
    monkeypatch.setenv("RECFORGE_PROGRESS", "1")
    assert show_progress(None)


def test_progress_bar_shows_epoch_loss_and_validation(capsys):
    frame = make_tiny_ctr(300)
    models.get("lr", epochs=2, batch_size=64, progress=True).fit(
        frame.iloc[:200], valid=frame.iloc[200:]
    )
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "loss" in err and "auc" in err


def test_no_progress_bar_when_not_a_terminal(capsys):
    models.get("lr", epochs=1, batch_size=64).fit(make_tiny_ctr(200))  # progress=None
    assert "epoch" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "data"),
    [("deepfm", "ctr"), ("lightgcn", "log")],
)
def test_training_history_is_saved_with_the_model(tmp_path, name, data):
    cls = models.get_class(name)
    model = models.get(name, **{**cls.smoke_params, "epochs": 3})
    if data == "ctr":
        frame = make_tiny_ctr(300)
        model.fit(frame.iloc[:200], valid=frame.iloc[200:])
    else:
        model.fit(make_tiny_interactions())
    hist = model.train_history_
    assert len(hist.train_loss) == 3 and len(hist.lr) == 3
    model.save(tmp_path / name)
    state = json.loads((tmp_path / name / "state.json").read_text())
    assert state["train_history"]["train_loss"] == hist.train_loss
    loaded = models.load(tmp_path / name)
    assert loaded.train_history_.train_loss == hist.train_loss
    assert loaded.train_history_.valid == hist.valid
    curves = training_curves({name: loaded.train_history_})
    assert curves[0].title == "Training loss"
    assert svg_curve(curves[0]).startswith("<svg")
    if data == "ctr":
        assert any(c.title == "Validation auc" for c in curves)


@pytest.mark.parametrize("name", ["lightgcn", "dssm", "youtube_dnn", "simplex", "fm_recall"])
def test_torch_retrieval_reports_validation_per_epoch(name):
    from recforge.data.splits import random_split

    train, valid = random_split(make_tiny_interactions(), test_ratio=0.2, seed=0)
    cls = models.get_class(name)
    model = models.get(name, **{**cls.smoke_params, "epochs": 2}).fit(train, valid=valid)
    hist = model.train_history_
    assert len(hist.valid) == 2
    assert 0.0 <= hist.valid[-1]["recall@10"] <= 1.0 and "ndcg@10" in hist.valid[-1]
    # the final vectors are the ones the last epoch's validation ranked with
    again = models.get(name, **{**cls.smoke_params, "epochs": 2}).fit(train)
    np.testing.assert_allclose(again.item_factors_, model.item_factors_, rtol=1e-5, atol=1e-6)


def test_a_job_with_a_validation_split_records_retrieval_validation(tmp_path):
    from recforge.jobs import TrainJob, run_train

    job = TrainJob.from_dict(
        {
            "data": {
                "source": "synth",
                "size": "tiny",
                "synth": {"n_users": 60, "n_items": 50, "n_interactions": 600, "n_categories": 4},
            },
            "split": {"method": "user_temporal", "test_ratio": 0.2, "valid_ratio": 0.1},
            "model": {"name": "lightgcn", "params": {**models.get_class("lightgcn").smoke_params}},
            "evaluate": {"k": [5]},
            "output": str(tmp_path / "out"),
        }
    )
    run_train(job)
    state = json.loads((tmp_path / "out" / "state.json").read_text())
    assert len(state["train_history"]["valid"]) == job.model.params["epochs"]
    assert "Validation recall@10" in (tmp_path / "out" / "report.md").read_text()
