"""Train jobs: typed sections that reject bad keys and values, the data each kind of model
trains on (positives for retrieval, labelled impressions for rankers) and the saved job."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from recforge import models
from recforge.data.interactions import Interactions
from recforge.data.synth import SIZES, make_synthetic
from recforge.exceptions import ConfigError
from recforge.jobs import (
    DataConfig,
    SplitConfig,
    TrainJob,
    check_model_params,
    load_data,
    positives,
    ranking_frame,
    run_train,
    split_data,
)
from recforge.models.params import annotation_matches as _matches
from recforge.models.params import type_name as _type_name
from tests.conftest import make_tiny_interactions

MICRO = {"n_users": 60, "n_items": 50, "n_interactions": 600, "n_categories": 4}


# ---------------------------------------------------------------------------- type checks
@pytest.mark.parametrize(
    "value,hint,ok",
    [
        (3, int, True),
        (True, int, False),  # YAML `yes` is not a count
        (3.0, int, False),
        ("3", int, False),
        (3, float, True),
        (0.5, float, True),
        (False, float, False),
        (None, float | None, True),
        ("x", str | None, True),
        (1, str | None, False),
        ([8, 4], Sequence[int], True),
        ((8, 4), Sequence[int], True),
        ("84", Sequence[int], False),
        ([8, "4"], Sequence[int], False),
        ([["a", "b"]], Sequence[Sequence[str]], True),
        ({"user": "u"}, dict[str, str], True),
        ({"user": 1}, dict[str, str], False),
        (["a"], tuple[str, ...] | list[str], True),
        (np.int64(3), int, True),
    ],
)
def test_matches(value, hint, ok):
    assert _matches(value, hint) is ok


def test_type_names_read_as_words():
    assert _type_name(int) == "an integer"
    assert _type_name(Sequence[int]) == "a list of integers"
    assert _type_name(float | None) == "a number or null"


def test_model_params_checked_against_annotations():
    check_model_params("itemcf", {"k": 50, "shrink": 10, "similarity": "jaccard"})
    check_model_params("deepfm", {"hidden": [64, 32], "lr": 0.01, "num_threads": None})
    with pytest.raises(
        ConfigError, match=r"model.params.k: 'itemcf' expects an integer, got str 'abc'"
    ):
        check_model_params("itemcf", {"k": "abc"})
    with pytest.raises(
        ConfigError, match=r"has no parameter 'factros' \(did you mean 'factors'\?\)"
    ):
        check_model_params("als", {"factros": 8})
    with pytest.raises(ConfigError, match=r"unknown model 'deepfn' \(did you mean 'deepfm'\?\)"):
        check_model_params("deepfn", {})


def test_every_models_smoke_params_pass_the_check():
    """The type check must never reject what a model's own tests use."""
    for name in models.available():
        check_model_params(name, models.get_class(name).smoke_params)


# ---------------------------------------------------------------------------- job sections
def test_job_defaults_and_normalisation():
    job = TrainJob.from_dict({"model": {"name": "itemcf", "params": None}, "evaluate": {"k": 5}})
    assert job.model.params == {} and job.evaluate.k == [5]
    assert job.data.source == "synth" and job.split.method == "auto"


def test_auto_split_is_global_temporal_with_timestamps_else_random():
    """The default split used to be per-user temporal, whose train holds other users' future
    interactions; auto is the global time cut when the log has timestamps."""
    from recforge.jobs import SplitConfig, split_data

    log = make_synthetic(**{**SIZES["tiny"], **MICRO})
    train, _, test = split_data(log, SplitConfig())
    assert train.frame["timestamp"].max() < test.frame["timestamp"].min()
    no_time = Interactions(log.frame.drop(columns=["timestamp"]))
    train, _, test = split_data(no_time, SplitConfig(seed=4))
    expected = split_data(no_time, SplitConfig(method="random", seed=4))
    assert train.frame.equals(expected[0].frame) and test.frame.equals(expected[2].frame)


@pytest.mark.parametrize(
    "data,match",
    [
        ({"dat": {}}, r"job: unknown key 'dat' \(did you mean 'data'\?\)"),
        ({"split": {"method": "randm"}}, r"split.method: 'randm' \(did you mean 'random'\?\)"),
        (
            {"split": {"test_ratio": 0.6, "valid_ratio": 0.5}},
            r"test_ratio \+ valid_ratio must be < 1",
        ),
        ({"split": {"seed": "1"}}, r"split.seed: expected an integer, got str"),
        ({"evaluate": {"k": [0]}}, r"evaluate.k: needs positive integers"),
        ({"evaluate": {"n_negatives": 0}}, r"evaluate.n_negatives"),
        (
            {"data": {"positive_threshold": "4"}},
            r"data.positive_threshold: expected a number or null",
        ),
        (
            {"data": {"synth": {"n_user": 5}}},
            r"data.synth: unknown key 'n_user' \(did you mean 'n_users'\?\)",
        ),
        ({"data": {"columns": {"user": 3}}}, r"data.columns"),
        ({"output": 5}, r"output: expected a string or null"),
    ],
)
def test_job_errors_name_the_field(data, match):
    with pytest.raises(ConfigError, match=match):
        TrainJob.from_dict(data)


def test_from_yaml_names_the_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("model:\n  name: itemcf\n  params: {k: abc}\n")
    with pytest.raises(ConfigError, match=r"job.yaml: model.params.k"):
        TrainJob.from_yaml(path)
    path.write_text("model: {name: itemcf\n")
    with pytest.raises(ConfigError, match=r"job.yaml, line 2, column 1: not valid YAML"):
        TrainJob.from_yaml(path)


# ---------------------------------------------------------------------------- data
def test_synth_overrides():
    inter = load_data(DataConfig(source="synth", size="tiny", seed=2, synth=MICRO))
    assert inter.n_users <= 60 and inter.n_items <= 50 and len(inter) <= 600
    ref = make_synthetic(**{**SIZES["tiny"], **MICRO, "seed": 2})
    pd.testing.assert_frame_equal(inter.frame, ref.frame)


def test_file_source_with_column_mapping(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("uid,iid,stars\na,1,5\nb,1,3\na,2,4\n")
    cfg = DataConfig(
        source="file", path=str(path), columns={"user": "uid", "item": "iid", "rating": "stars"}
    )
    inter = load_data(cfg)
    assert len(inter) == 3 and set(inter.frame.columns) >= {"user", "item", "rating"}
    assert len(positives(inter, 4)) == 2


def test_positives():
    click_log = make_synthetic(**{**SIZES["tiny"], **MICRO})  # label all 1, rating 1-5
    assert click_log.frame["label"].eq(1).all()
    # no threshold: every click counts, the rating column does not silently filter
    assert len(positives(click_log, None)) == len(click_log)
    assert len(positives(click_log, 4)) == int((click_log.frame["rating"] >= 4).sum())
    labelled = Interactions(
        pd.DataFrame({"user": [1, 1, 2], "item": [1, 2, 1], "label": [1, 0, 1]})
    )
    assert positives(labelled, None).frame["item"].tolist() == [1, 1]
    implicit = Interactions(pd.DataFrame({"user": [1, 2], "item": [1, 1]}))
    assert len(positives(implicit, 4)) == 2


def test_ranking_frame_on_a_click_only_log_samples_negatives():
    click_log = make_synthetic(**{**SIZES["tiny"], **MICRO})
    frame = ranking_frame(click_log, None, n_negatives=3, seed=0)
    assert len(frame) == 4 * len(click_log)
    assert frame["label"].mean() == pytest.approx(0.25)
    assert {"category", "age", "device"} <= set(frame.columns)  # item, user, context features


def test_ranking_frame_negatives_are_never_a_click_of_any_split():
    """Test negatives used to be sampled against the test split alone, so an item the user
    clicked in train could be labelled 0 in test. Sampled against the whole log, never."""
    from recforge.data import splits

    log = make_synthetic(**{**SIZES["tiny"], **MICRO, "n_interactions": 400})
    train, test = splits.random_split(log, 0.3, seed=1)
    clicked = set(zip(log.frame["user"], log.frame["item"]))

    def negative_clicks(frame):
        neg = frame[frame["label"] == 0]
        return sum((u, i) in clicked for u, i in zip(neg["user"], neg["item"]))

    assert negative_clicks(ranking_frame(test, None, n_negatives=2, seed=3)) > 0  # the old way
    frame = ranking_frame(test, None, n_negatives=2, seed=3, known=log)
    assert negative_clicks(frame) == 0
    assert len(frame) == 3 * len(test) and frame["label"].sum() == len(test)


def test_ranking_frame_uses_labels_or_the_rating_threshold():
    inter = make_tiny_interactions()
    frame = ranking_frame(inter, 4, n_negatives=2)
    assert len(frame) == len(inter)  # no sampling: the ratings are the labels
    np.testing.assert_array_equal(frame["label"], (inter.frame["rating"] >= 4).astype(int))
    assert "rating" not in frame and "category" in frame and "gender" in frame
    f = inter.frame.assign(label=(inter.frame["rating"] >= 3).astype(int))
    both = Interactions(f, inter.user_features, inter.item_features)
    np.testing.assert_array_equal(ranking_frame(both, 4, 2)["label"], f["label"])


def test_split_data_sizes():
    inter = make_tiny_interactions()
    train, valid, test = split_data(
        inter, SplitConfig(method="random", test_ratio=0.2, valid_ratio=0.1, seed=1)
    )
    assert len(train) + len(valid) + len(test) == len(inter)
    assert abs(len(test) / len(inter) - 0.2) < 0.02
    train, valid, test = split_data(inter, SplitConfig(method="leave_one_out"))
    assert valid is None and len(test) == inter.n_users


# ---------------------------------------------------------------------------- run
def test_run_train_saves_model_metrics_and_job(tmp_path):
    job = TrainJob.from_dict(
        {
            "data": {"source": "synth", "size": "tiny", "synth": MICRO},
            "split": {"method": "user_temporal", "test_ratio": 0.2},
            "model": {"name": "itemcf", "params": {"k": 20}},
            "evaluate": {"k": [5, 10]},
            "output": str(tmp_path / "m"),
        }
    )
    result = run_train(job)
    assert result["kind"] == "retrieval" and result["skipped_rows"] == 0
    assert {"recall@5", "ndcg@10", "fit_seconds"} <= set(result["metrics"])
    model = models.load(tmp_path / "m")
    assert model.get_params()["k"] == 20
    assert model.metrics_["recall@10"] == pytest.approx(result["metrics"]["recall@10"])
    again = TrainJob.from_dict(json.loads((tmp_path / "m" / "job.json").read_text()))
    assert again == job
    # the job's metrics are the model's: refitting on the same split reproduces them
    train, _, test = split_data(load_data(job.data), job.split)
    from recforge.evaluation import full_ranking

    fresh = models.get("itemcf", k=20).fit(positives(train, None))
    assert full_ranking(fresh, positives(test, None), k=(10,))["recall@10"] == pytest.approx(
        result["metrics"]["recall@10"]
    )


def test_run_train_ranker_on_click_log(tmp_path):
    job = TrainJob.from_dict(
        {
            "data": {"source": "synth", "size": "tiny", "synth": MICRO},
            "split": {"method": "user_temporal", "test_ratio": 0.2, "valid_ratio": 0.1},
            "model": {"name": "lightgbm", "params": {"n_estimators": 20, "num_leaves": 7}},
            "evaluate": {"n_negatives": 2},
            "output": str(tmp_path / "r"),
        }
    )
    result = run_train(job)
    assert result["kind"] == "ranker"
    assert 0.0 < result["metrics"]["auc"] < 1.0 and result["metrics"]["logloss"] > 0
