"""The example jobs under configs/: every one parses and names a registered model with valid
parameters, every registered model has one, and every registered model trains from a YAML job
through ``recforge train --config`` (tiny data, the model's smoke parameters)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from recforge import models
from recforge.cli.main import main
from recforge.jobs import TrainJob, check_model_params

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
ALL_MODELS = sorted(models.available())

# A synthetic log far smaller than the "tiny" preset: every model trains in about a second.
MICRO_SYNTH = {
    "n_users": 60,
    "n_items": 50,
    "n_interactions": 600,
    "n_categories": 4,
    "n_brands": 8,
    "n_tags": 10,
    "n_cities": 4,
}
# Faster still than smoke_params, where the model has the parameter.
FAST = {"epochs": 1, "iterations": 2, "batch_size": 256, "num_threads": 1, "fm_epochs": 1}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _plain(value):
    """Tuples (smoke_params use them) as lists, so that yaml.safe_dump can write them."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def test_configs_exist():
    assert CONFIGS, "configs/*.yaml is empty"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_names_a_registered_model(path):
    job = TrainJob.from_yaml(path)  # checks keys, types, model name and params
    assert job.model.name in ALL_MODELS
    check_model_params(job.model.name, job.model.params)
    model = models.get(job.model.name, **job.model.params)  # the constructor accepts them
    assert model.get_params().items() >= job.model.params.items() or job.model.params == {}
    assert job.output, f"{path.name}: give the job an output directory"


def test_every_registered_model_has_an_example_config():
    named = {TrainJob.from_yaml(p).model.name for p in CONFIGS}
    missing = sorted(set(ALL_MODELS) - named)
    assert not missing, f"no configs/*.yaml for: {missing}"


def test_ml100k_itemcf_config_is_the_cornac_protocol():
    job = TrainJob.from_yaml(Path(CONFIGS[0]).parent / "ml100k_itemcf.yaml")
    assert job.data.source == "ml-100k" and job.data.positive_threshold == 4
    assert (job.split.method, job.split.test_ratio, job.split.seed) == ("random", 0.2, 123)
    assert job.model.name == "itemcf"


@pytest.mark.parametrize("name", ALL_MODELS)
def test_train_from_yaml(name, tmp_path):
    cls = models.get_class(name)
    params = dict(cls.smoke_params)
    params.update({k: v for k, v in FAST.items() if k in cls.param_names()})
    job = {
        "data": {"source": "synth", "size": "tiny", "seed": 1, "synth": MICRO_SYNTH},
        "split": {"method": "user_temporal", "test_ratio": 0.2},
        "model": {"name": name, "params": _plain(params)},
        "evaluate": {"k": [5], "n_negatives": 2},
        "output": str(tmp_path / "model"),
    }
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(job))

    result = CliRunner().invoke(main, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"saved {name} to {tmp_path / 'model'}" in result.output
    metric = "recall@5" if cls.kind == "retrieval" else "auc"
    line = next(ln for ln in result.output.splitlines() if ln.startswith(metric))
    value = float(line.split()[1])
    assert 0.0 <= value <= 1.0
    loaded = models.load(tmp_path / "model")
    assert loaded.name == name and loaded.metrics_[metric] == pytest.approx(value, abs=1e-4)
    saved = TrainJob.from_dict(
        yaml.safe_load((tmp_path / "model" / "job.json").read_text()), where="job.json"
    )
    assert saved.model.name == name and saved.data.synth == MICRO_SYNTH
