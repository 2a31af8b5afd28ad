"""Data-parallel training (torch.distributed + DistributedDataParallel, gloo on CPU): ranks
see disjoint batches, two processes reach the one-process validation AUC, rank 0 alone
writes, and the saved model loads and scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from recforge import models
from recforge.models.ranking.torch_base import _Batches
from recforge.train.distributed import shard_batches

ROOT = Path(__file__).resolve().parents[1]


def test_ranks_get_disjoint_batches_of_equal_count():
    x = {
        "categorical": torch.arange(1000).reshape(-1, 1),
        "numeric": torch.zeros(1000, 0),
        "multi": {},
    }
    y = torch.arange(1000, dtype=torch.float32)
    seen = []
    for rank in range(3):
        b = _Batches(x, y, batch_size=64, seed=7)(epoch=2)
        rows = [int(v) for _, yb in shard_batches(b, rank, 3) for v in yb]
        seen.append(rows)
        assert (
            len(shard_batches(_Batches(x, y, 64, 7)(2), rank, 3)) == len(_Batches(x, y, 64, 7)) // 3
        )
    assert len({len(s) for s in seen}) == 1  # equal steps on every rank
    assert not set(seen[0]) & set(seen[1]) and not set(seen[1]) & set(seen[2])
    whole = [int(v) for _, yb in _Batches(x, y, 64, 7)(2) for v in yb]
    assert set().union(*seen) <= set(whole)
    # a plain sized iterable is sharded the same way
    plain = list(range(10))
    assert (
        list(shard_batches(plain, 1, 3)) == [1, 4, 7] and list(shard_batches(plain, 0, 1)) == plain
    )


def _job(tmp: Path, out: str, sparse: bool = False) -> Path:
    job = {
        "data": {"source": "synth", "size": "tiny", "seed": 0},
        "split": {"method": "temporal", "test_ratio": 0.2, "valid_ratio": 0.1},
        "model": {
            "name": "deepfm",
            "params": {
                "epochs": 4, "embedding_dim": 8, "hidden": [32], "batch_size": 128,
                "lr": 0.003, "num_threads": 1, "patience": 2, "progress": False, "sparse": sparse,
            },
        },
        "output": str(tmp / out),
    }  # fmt: skip
    path = tmp / f"{out}.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _train(config: Path, nproc: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "recforge",
        "train",
        "--config",
        str(config),
        "--nproc",
        str(nproc),
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.xdist_group("ddp")
def test_two_processes_match_one(tmp_path):
    one = _train(_job(tmp_path, "one"), 1)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _train(_job(tmp_path, "two"), 2)
    assert two.returncode == 0, two.stderr[-3000:]
    sparse = _train(_job(tmp_path, "sparse", sparse=True), 2)  # sparse gradients: gloo
    assert sparse.returncode == 0, sparse.stderr[-3000:]
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m2["world_size"] == 2 and "world_size" not in m1
    # the same data, half the steps per rank, averaged gradients: AUC within 0.03
    assert abs(m1["auc"] - m2["auc"]) < 0.03, (m1["auc"], m2["auc"])
    m3 = json.loads((tmp_path / "sparse" / "metrics.json").read_text())
    assert abs(m1["auc"] - m3["auc"]) < 0.03, (m1["auc"], m3["auc"])
    model = models.load(tmp_path / "two")
    assert model.train_history_.world_size == 2
    assert len(model.train_history_.valid) >= 1  # validated every epoch, same on all ranks
    from recforge.data.synth import SIZES, make_ctr_frame, make_synthetic

    frame = make_ctr_frame(make_synthetic(**SIZES["tiny"], seed=0), n_negatives=1).head(200)
    p = model.predict_proba(frame)
    assert p.shape == (200,) and np.isfinite(p).all()
    assert sorted(x.name for x in (tmp_path / "two").iterdir()) == sorted(
        x.name for x in (tmp_path / "one").iterdir()
    )  # rank 1 wrote nothing of its own


@pytest.mark.xdist_group("ddp")
def test_a_resumed_two_process_run_equals_a_straight_one(tmp_path):
    """Killed after 2 epochs (a run asked for 2, with a checkpoint) and resumed to 4 under the
    same 2 ranks: the same model as 4 epochs in one go."""

    def job(out: str, epochs: int, ckpt: Path | None) -> Path:
        path = _job(tmp_path, out)
        cfg = yaml.safe_load(path.read_text())
        cfg["model"]["params"].update(epochs=epochs, patience=10)
        if ckpt is not None:
            cfg["model"]["params"]["checkpoint_dir"] = str(ckpt)
        path.write_text(yaml.safe_dump(cfg))
        return path

    straight = _train(job("straight", 4, None), 2)
    assert straight.returncode == 0, straight.stderr[-3000:]
    ckpt = tmp_path / "ck"
    first = _train(job("first", 2, ckpt), 2)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = _train(job("resumed", 4, ckpt), 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = models.load(tmp_path / "straight")
    b = models.load(tmp_path / "resumed")
    assert b.train_history_.resumed_from == 2 and b.train_history_.world_size == 2
    np.testing.assert_allclose(b.train_history_.train_loss, a.train_history_.train_loss, rtol=1e-6)
    from recforge.data.synth import SIZES, make_ctr_frame, make_synthetic

    frame = make_ctr_frame(make_synthetic(**SIZES["tiny"], seed=0), n_negatives=1).head(300)
    np.testing.assert_allclose(b.predict_proba(frame), a.predict_proba(frame), rtol=1e-5)
