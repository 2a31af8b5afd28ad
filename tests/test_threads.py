"""Threads in one place: the default's precedence, torch set once per fit (never switched
per prediction), the shared parameters of the torch retrieval models, reproducibility."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from recforge import models, threads
from recforge.exceptions import ConfigError
from recforge.models.retrieval.torch_base import TorchRetrievalModel
from tests.conftest import make_tiny_ctr, make_tiny_interactions

TORCH_RETRIEVAL = ("lightgcn", "dssm", "youtube_dnn", "simplex", "fm_recall")
SHARED = ("embedding_dim", "epochs", "batch_size", "lr", "optimizer", "weight_decay", "seed")


@pytest.fixture(autouse=True)
def _reset(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    threads.set_default_threads(None)  # a CLI test in this process may have set one
    yield
    threads.set_default_threads(None)
    torch.set_num_threads(1)


def test_default_precedence(monkeypatch):
    monkeypatch.setattr(threads, "auto_threads", lambda: 5)
    assert threads.resolve_threads(None) == 5
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.resolve_threads(None) == 3
    threads.set_default_threads(2)  # the CLI's --threads wins over the environment
    assert threads.resolve_threads(None) == 2
    assert threads.resolve_threads(4) == 4  # an explicit setting wins over everything


def test_bad_thread_counts_name_the_setting(monkeypatch):
    for bad in (0, -1, "two", 1.5, True):
        with pytest.raises(ConfigError, match="num_threads"):
            threads.check_threads(bad)
    monkeypatch.setenv(threads.ENV, "many")
    with pytest.raises(ConfigError, match=threads.ENV):
        threads.default_threads()


def test_auto_leaves_busy_cores_alone(monkeypatch):
    monkeypatch.setattr(threads, "cpu_count", lambda: 4)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (3.5, 0, 0))
    assert threads.auto_threads() == 1
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.2, 0, 0))
    assert threads.auto_threads() == 4


@pytest.mark.parametrize("name", TORCH_RETRIEVAL)
def test_torch_retrieval_models_share_their_training_parameters(name):
    cls = models.get_class(name)
    assert issubclass(cls, TorchRetrievalModel)
    names = cls.param_names()
    for p in (*SHARED, "num_threads", "progress"):
        assert p in names
    model = models.get(name, epochs=2, num_threads=1)
    assert model.get_params()["epochs"] == 2 and model.num_threads == 1
    with pytest.raises(TypeError):
        cls(epoch=3)  # a misspelt shared keyword is still caught
    # each model keeps its own defaults for the shared parameters
    for key, value in cls.train_defaults.items():
        assert getattr(cls(), key) == value


def test_lightgcn_keeps_its_defaults():
    m = models.get("lightgcn")
    assert (m.epochs, m.batch_size, m.lr, m.embedding_dim) == (60, 2048, 5e-3, 64)


def test_every_threaded_model_has_num_threads():
    for name in (
        "deepfm",
        "lightgbm",
        "als",
        "bpr",
        "ease",
        "item2vec",
        "deepwalk",
        *TORCH_RETRIEVAL,
    ):
        assert "num_threads" in models.get_class(name).param_names(), name
        assert "workers" not in models.get_class(name).param_names(), name


def test_fit_sets_threads_and_predict_never_switches_them(monkeypatch):
    frame = make_tiny_ctr(200)
    model = models.get("deepfm", epochs=1, batch_size=64, embedding_dim=4, num_threads=1)
    model.fit(frame)
    assert torch.get_num_threads() == 1
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    for _ in range(3):  # small predictions, as a server makes them
        model.predict_proba(frame.head(20))
    assert calls == []


def test_retrieval_fit_uses_the_process_default():
    threads.set_default_threads(1)
    torch.set_num_threads(2)
    models.get("lightgcn", **models.get_class("lightgcn").smoke_params).fit(
        make_tiny_interactions()
    )
    assert torch.get_num_threads() == 1


def test_bpr_with_a_seed_repeats_exactly():
    data = make_tiny_interactions()
    a = models.get("bpr", factors=8, iterations=20, random_state=3).fit(data)
    b = models.get("bpr", factors=8, iterations=20, random_state=3).fit(data)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)


def test_several_threads_with_a_seed_warn_once(monkeypatch):
    monkeypatch.setattr(threads, "_warned", set())
    with pytest.warns(RuntimeWarning, match="not deterministic"):
        assert threads.reproducible_threads(2, 0, "bpr") == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert threads.reproducible_threads(2, 0, "bpr") == 2  # once
        assert threads.reproducible_threads(None, 0, "bpr") == 1
        assert threads.reproducible_threads(None, None, "bpr") >= 1


def test_cli_threads_option_sets_the_default(monkeypatch):
    from click.testing import CliRunner

    from recforge.cli.main import main

    res = CliRunner().invoke(main, ["--threads", "0", "models"])
    assert res.exit_code == 2 and "--threads" in res.output
    res = CliRunner().invoke(main, ["--threads", "3", "models"])
    assert res.exit_code == 0, res.output
    assert threads.default_threads() == 3


def test_bpr_asked_for_several_threads_with_a_seed_warns(monkeypatch):
    monkeypatch.setattr(threads, "_warned", set())
    with pytest.warns(RuntimeWarning, match="bpr: training with num_threads=2"):
        models.get("bpr", factors=4, iterations=2, num_threads=2, random_state=0).fit(
            make_tiny_interactions()
        )
