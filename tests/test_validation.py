"""One validation everywhere: the same typed parameter check for Python, YAML and the CLI,
the same k check for a model and a pipeline, ids of the wrong type and non-numbers in a
numeric feature named for what they are."""

from __future__ import annotations

import pytest

from recforge import models
from recforge.exceptions import ConfigError, DataError, UnknownIdError
from recforge.jobs import check_model_params
from tests.conftest import make_tiny_ctr, make_tiny_interactions


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [("itemcf", {"k": "ten"}, "k"), ("als", {"factors": "64"}, "factors")],
)
def test_wrong_types_are_config_errors_naming_the_field(name, params, field):
    with pytest.raises(ConfigError, match=rf"{field} expects an integer, got str"):
        models.get(name, **params)
    with pytest.raises(ConfigError, match=rf"model.params.{field}: '{name}' expects an integer"):
        check_model_params(name, params)  # the YAML job's check, same mechanism
    model = models.get_class(name)(**params)  # built directly: caught at fit
    with pytest.raises(ConfigError, match=field):
        model.fit(make_tiny_interactions())


def test_set_params_is_checked_too():
    model = models.get("itemcf")
    with pytest.raises(ConfigError, match="shrink expects a number"):
        model.set_params(shrink="lots")
    with pytest.raises(ConfigError, match="did you mean 'shrink'"):
        model.set_params(shrnk=1.0)


def test_a_ranker_built_directly_checks_types_at_fit():
    model = models.get_class("deepfm")(epochs="2")
    with pytest.raises(ConfigError, match="epochs expects an integer"):
        model.fit(make_tiny_ctr(100))


def test_pipeline_k_zero_raises_like_a_model():
    from recforge.pipeline import RecallPipeline

    data = make_tiny_interactions()
    model = models.get("itemcf", k=10).fit(data)
    pipe = RecallPipeline.from_config(
        {"channels": [{"name": "icf", "model": "itemcf", "params": {"k": 10}, "quota": 5}]}
    ).fit(data)
    user = data.frame["user"].iloc[0]
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        model.recommend([user], k=0)
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        pipe.recommend([user], k=0)
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        pipe.candidates(user, k=0)


def test_ids_of_the_wrong_type_say_so():
    data = make_tiny_interactions()  # string user ids, integer item ids
    model = models.get("itemcf", k=10).fit(data)
    with pytest.raises(UnknownIdError, match="item ids of this model are integers"):
        model.similar_items(["17"], k=3)
    with pytest.raises(UnknownIdError, match="not in the training data"):
        model.similar_items([999_999], k=3)


def test_a_word_in_a_numeric_column_names_the_column():
    frame = make_tiny_ctr(200)
    model = models.get("lr", epochs=1, batch_size=64).fit(frame)
    bad = frame.head(5).copy()
    bad["num"] = bad["num"].astype(object)
    bad.loc[bad.index[2], "num"] = "cheap"
    with pytest.raises(DataError, match=r"numeric feature 'num' holds 'cheap' \(row 2\)"):
        model.predict_proba(bad)
    missing = frame.head(5).copy()
    missing.loc[missing.index[1], "num"] = None  # missing stays allowed
    assert len(model.predict_proba(missing)) == 5
