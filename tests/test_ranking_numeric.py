"""``numeric="field"|"dense"``: numeric columns embedded as fields, or fed straight into the
deep part and the first-order term with the interaction layers over the other fields."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recforge import models
from recforge.data.features import FeatureEncoder
from recforge.exceptions import ConfigError
from recforge.models.ranking.torch_base import NUMERIC_MODES
from recforge.nn.embedding import FeatureEmbedding
from recforge.nn.inputs import to_tensors
from tests.conftest import make_tiny_ctr

torch.set_num_threads(1)

DENSE_MODELS = [
    name
    for name in models.available()
    if getattr(models.get_class(name), "numeric_modes", ()) == NUMERIC_MODES
]


# AutoInt without an MLP or a linear term would read no numeric column under "dense"
NEEDS = {"autoint": {"linear": True}}


@pytest.fixture(scope="module")
def frame():
    return make_tiny_ctr(400, seed=5)


def _batch(frame):
    enc = FeatureEncoder().fit(frame, "label")
    return enc, to_tensors(enc.transform(frame))


def test_dense_embedding_leaves_numeric_fields_out_of_the_interactions(frame):
    enc, x = _batch(frame)
    torch.manual_seed(0)
    emb = FeatureEmbedding(enc.fields_, 4, linear=True, numeric="dense")
    field = FeatureEmbedding(enc.fields_, 4, linear=True, numeric="field")
    assert field.n_fields == emb.n_fields + enc.n_numeric and emb.n_dense == enc.n_numeric
    assert "num" in field.field_names and "num" not in emb.field_names
    e, first = emb.forward_with_linear(x)
    assert e.shape == (len(frame), emb.n_fields, 4)
    deep = emb.deep_input(e, x)
    assert deep.shape == (len(frame), emb.deep_width) == (len(frame), emb.n_fields * 4 + 1)
    np.testing.assert_allclose(  # the values times their learned scale, after the embeddings
        deep[:, -1].detach(), (x["numeric"][:, 0] * emb.dense_scale[0]).detach(), rtol=1e-6
    )
    # a numeric value moves the first-order term by its one weight, the embeddings not at all
    x2 = {**x, "numeric": x["numeric"] + 1.0}
    e2, first2 = emb.forward_with_linear(x2)
    torch.testing.assert_close(e2, e)
    torch.testing.assert_close(first2 - first, emb.numeric_weight[:, 0].sum().expand_as(first))


def test_unknown_numeric_mode_names_the_allowed_values(frame):
    with pytest.raises(ConfigError, match=r"numeric='embedded'.*'field', 'dense'"):
        models.get("deepfm", numeric="embedded", epochs=1).fit(frame)
    with pytest.raises(ConfigError, match="numeric='x'"):
        FeatureEmbedding(FeatureEncoder().fit(frame, "label").fields_, 4, numeric="x")


@pytest.mark.parametrize("name", ["ffm", "fnn", "din", "mmoe"])
def test_models_without_a_dense_path_refuse_it(name, frame):
    with pytest.raises(ConfigError, match=r"numeric='dense'.*\('field',\)"):
        models.get(name, numeric="dense").fit(frame)


def test_autoint_refuses_dense_numerics_nothing_reads(frame):
    params = {**models.get_class("autoint").smoke_params, "numeric": "dense"}
    with pytest.raises(ConfigError, match=r"\['num'\].*linear=True"):
        models.get("autoint", **params).fit(frame)
    models.get("autoint", **params, hidden=(4,)).fit(frame)  # AutoInt+ reads them


def test_the_zoo_supports_dense():
    expected = {"fm", "afm", "nfm", "deepfm", "xdeepfm", "dcn", "dcnv2", "autoint", "ipnn"}
    assert expected | {"opnn", "wide_deep", "lr"} <= set(DENSE_MODELS)


@pytest.mark.parametrize("name", DENSE_MODELS)
def test_dense_models_learn_and_round_trip(name, frame, tmp_path):
    train, test = frame.iloc[:300], frame.iloc[300:]
    params = {**models.get_class(name).smoke_params, "epochs": 4, "lr": 1e-2}
    params.update(NEEDS.get(name, {}))
    model = models.get(name, **params, numeric="dense").fit(train)
    assert model.numeric_mode() == "dense"
    p = model.predict_proba(test)
    assert np.isfinite(p).all() and p.std() > 0
    state = json.loads((model.save(tmp_path / name) / "state.json").read_text())
    assert state["numeric"] == "dense"
    np.testing.assert_allclose(models.load(tmp_path / name).predict_proba(test), p, atol=1e-6)


def test_a_state_saved_before_the_option_loads_as_field(frame):
    params = models.get_class("deepfm").smoke_params
    model = models.get("deepfm", **params, numeric="field").fit(frame)
    arrays, state = model._save_state()
    del state["numeric"]  # what artifacts written before the option hold
    loaded = models.get("deepfm", **params)  # numeric=None, the default, whatever it is
    loaded._load_state(arrays, json.loads(json.dumps(state)))
    assert loaded.numeric_mode() == "field"
    np.testing.assert_allclose(loaded.predict_proba(frame), model.predict_proba(frame), atol=1e-6)


@pytest.mark.parametrize("name", ["deepfm", "xdeepfm", "autoint"])
def test_dense_models_export_to_onnx(name, frame, tmp_path):
    pytest.importorskip("onnxruntime")
    from recforge.export import OnnxRanker, export_onnx

    params = {**models.get_class(name).smoke_params, **NEEDS.get(name, {})}
    model = models.get(name, **params, numeric="dense").fit(frame)
    onnx = OnnxRanker(export_onnx(model, tmp_path / "m.onnx"), num_threads=1)
    x = model.encode(model.encoder_, frame)
    np.testing.assert_allclose(
        onnx.predict_proba_encoded(x), model.predict_proba(frame), rtol=0, atol=1e-5
    )
