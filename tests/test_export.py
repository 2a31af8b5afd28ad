"""ONNX export of the torch rankers: onnxruntime scores as torch does (dynamic batch,
multi-task columns, history inputs), and ``recforge export --onnx``."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from recforge import models
from recforge.exceptions import ConfigError
from tests.conftest import make_tiny_ctr

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from recforge.export import OnnxRanker, export_onnx  # noqa: E402


@pytest.fixture(scope="module")
def frame():
    return make_tiny_ctr(300, seed=2, history=True)


def fitted(name, frame, label="label"):
    return models.get(name, **models.get_class(name).smoke_params).fit(frame, label=label)


@pytest.mark.parametrize(
    "name", ["deepfm", "xdeepfm", "afm", "autoint", "bst", "din", "dien", "dsin"]
)
def test_onnx_scores_like_torch(name, frame, tmp_path):
    model = fitted(name, frame)
    path = export_onnx(model, tmp_path / f"{name}.onnx")
    onnx_model = OnnxRanker(path, num_threads=1)
    for rows in (frame, frame.iloc[:1], frame.iloc[:200]):  # dynamic batch, one row included
        x = model.encode(model.encoder_, rows)
        got = onnx_model.predict_proba_encoded(x)
        assert got.shape == (len(rows),)
        np.testing.assert_allclose(got, model.predict_proba(rows), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("dcnv2", {"numeric": "dense", "linear": True}),
        ("dcn", {"numeric": "dense", "linear": True}),
        ("autoint", {"numeric": "dense", "linear": True, "hidden": (8,)}),
        ("ipnn", {"numeric": "dense"}),
    ],
)
def test_onnx_scores_like_torch_with_zero_padded_deep_inputs(name, params, frame, tmp_path):
    """numeric='dense' makes the deep input's width unaligned: the export records the
    zero-padded concatenation and weights (recforge.nn.align) and scores as torch does."""
    model = models.get(name, **{**models.get_class(name).smoke_params, **params})
    model.fit(frame, label="label")
    width = model.module_.embedding.deep_width
    assert width % 16, "the case must exercise the padding"
    onnx_model = OnnxRanker(export_onnx(model, tmp_path / f"{name}.onnx"), num_threads=1)
    for rows in (frame, frame.iloc[:1]):
        got = onnx_model.predict_proba_encoded(model.encode(model.encoder_, rows))
        np.testing.assert_allclose(got, model.predict_proba(rows), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("kind", "bidirectional", "layers"),
    [("gru", False, 1), ("lstm", True, 1), ("gru", True, 2), ("lstm", False, 2)],
)
def test_export_path_of_the_recurrent_layers_matches_packing(kind, bidirectional, layers):
    """The unpacked, masked path that runs while exporting gives the packed path's outputs
    and states (rows of every length, 0 included); AUGRU's likewise."""
    import torch

    from recforge.nn.recurrent import AUGRU, PackedRNN

    torch.manual_seed(0)
    rnn = PackedRNN(5, 4, kind=kind, bidirectional=bidirectional, n_layers=layers).eval()
    x, lengths = torch.randn(6, 7, 5), torch.tensor([7, 3, 0, 1, 5, 2])
    with torch.no_grad():
        out, last = rnn(x, lengths)
        out_m, last_m = rnn._masked(x, lengths)
    torch.testing.assert_close(out_m, out, rtol=0, atol=1e-6)
    torch.testing.assert_close(last_m, last, rtol=0, atol=1e-6)
    augru, scores = AUGRU(5, 4).eval(), torch.rand(6, 7)
    with torch.no_grad():
        want = augru(x, scores, lengths)
        traced = torch.jit.trace(augru, (x, scores, lengths))  # the export path, recorded
        torch.testing.assert_close(traced(x, scores, lengths), want, rtol=0, atol=1e-6)


def test_onnx_multi_task_columns(tmp_path):
    from tests.test_multitask import conversion_frame

    train = conversion_frame(300, 0)
    model = fitted("esmm", train, ["click", "conversion"])
    got = OnnxRanker(export_onnx(model, tmp_path / "esmm.onnx")).predict_proba_encoded(
        model.encoder_.transform(train)
    )
    assert got.shape == (300, 2)
    np.testing.assert_allclose(got, model.predict_proba(train), rtol=0, atol=1e-5)


def test_non_torch_rankers_are_refused(frame, tmp_path):
    model = fitted("lightgbm", frame.drop(columns=["hist_item", "hist_cat", "hist_session"]))
    with pytest.raises(ConfigError, match="torch rankers"):
        export_onnx(model, tmp_path / "x.onnx")


def test_cli_export(frame, tmp_path):
    from recforge.cli.main import main

    model_dir = fitted("deepfm", frame).save(tmp_path / "deepfm")
    out = tmp_path / "deepfm.onnx"
    result = CliRunner().invoke(main, ["export", "--onnx", str(model_dir), str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "within 1e-05" in result.output
    again = CliRunner().invoke(main, ["export", "--onnx", str(model_dir), str(out)])
    assert again.exit_code == 2 and "--force" in again.output
