"""The Trainer: optimizers, schedules, clipping, NaN guard, early stopping with restore,
checkpoint/resume, L2, determinism; and TorchRanker's use of it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from recforge import models
from recforge.config import from_dict
from recforge.exceptions import ConfigError, TrainingError
from recforge.train import TrainConfig, Trainer
from recforge.train.trainer import CHECKPOINT
from tests.conftest import make_tiny_ctr

torch.set_num_threads(1)

X = torch.randn(256, 6, generator=torch.Generator().manual_seed(0))
Y = (X @ torch.arange(1.0, 7.0) > 0).float()


def make_module(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))


def loss_fn(m: nn.Module, b) -> torch.Tensor:
    x, y = b
    return nn.functional.binary_cross_entropy_with_logits(m(x).squeeze(-1), y)


class Batches:
    def __init__(self, bs: int = 32) -> None:
        self.bs = bs

    def __call__(self, epoch: int):
        g = torch.Generator().manual_seed(epoch)
        perm = torch.randperm(len(X), generator=g)
        return [
            (X[perm[i : i + self.bs]], Y[perm[i : i + self.bs]]) for i in range(0, len(X), self.bs)
        ]


def fit(module=None, **cfg):
    module = module or make_module()
    hist = Trainer(TrainConfig(**cfg)).fit(module, loss_fn, Batches())
    return module, hist


def test_config_rejects_unknown_keys_and_bad_values():
    cfg = from_dict(TrainConfig, {"epochs": 3, "optimizer": "adamw"})
    assert cfg.epochs == 3 and cfg.optimizer == "adamw"
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        from_dict(TrainConfig, {"epoch": 3})
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(ConfigError, match="schedule"):
        TrainConfig(schedule="nope")


@pytest.mark.parametrize("opt", ["sgd", "adagrad", "adam", "adamw"])
def test_every_optimizer_lowers_the_loss(opt):
    _, hist = fit(epochs=4, optimizer=opt, lr=0.05, momentum=0.9 if opt == "sgd" else 0.0)
    assert hist.train_loss[-1] < hist.train_loss[0]


def test_same_seed_same_weights_other_seed_differs():
    a, _ = fit(make_module(0), epochs=2, seed=1)
    b, _ = fit(make_module(0), epochs=2, seed=1)
    c, _ = fit(make_module(0), epochs=2, seed=2)  # other dropout masks
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_schedules():
    t = Trainer(TrainConfig(schedule="warmup_linear", warmup_steps=10, epochs=1))
    assert t._lr_factor(0, 0.0, 110) == pytest.approx(0.1)
    assert t._lr_factor(9, 0.0, 110) == pytest.approx(1.0)
    assert t._lr_factor(60, 0.5, 110) == pytest.approx(0.5)
    assert t._lr_factor(109, 0.99, 110) == pytest.approx(0.01)
    t = Trainer(TrainConfig(schedule="warmup_cosine", warmup_steps=0))
    assert t._lr_factor(50, 0.5, 100) == pytest.approx(0.5)
    assert t._lr_factor(100, 1.0, 100) == pytest.approx(0.0)
    t = Trainer(TrainConfig(schedule="step", step_size=2, gamma=0.1))
    assert [t._lr_factor(0, e, None) for e in (0, 1.5, 2, 4.2)] == pytest.approx([1, 1, 0.1, 0.01])
    t = Trainer(TrainConfig(schedule="exponential", gamma=0.5))
    assert t._lr_factor(0, 3.0, None) == pytest.approx(0.125)
    t = Trainer(TrainConfig(schedule="cyclic", step_size=2, gamma=0.2))
    assert [t._lr_factor(0, e, None) for e in (0, 1, 2, 3, 4)] == pytest.approx(
        [1, 0.6, 0.2, 0.6, 1]
    )
    # the factor is applied to the optimizer: lr at the end of each epoch
    _, hist = fit(epochs=3, lr=0.1, schedule="exponential", gamma=0.5)
    assert hist.lr == pytest.approx([0.1, 0.05, 0.025])


def test_clipping_bounds_the_update():
    m = make_module()
    before = [p.detach().clone() for p in m.parameters()]

    def huge(module, b):
        return 1e6 * loss_fn(module, b)

    Trainer(TrainConfig(epochs=1, optimizer="sgd", lr=1.0, clip_norm=0.01)).fit(
        m, huge, lambda e: Batches()(e)[:1]
    )
    delta = torch.sqrt(sum(((p - q) ** 2).sum() for p, q in zip(m.parameters(), before)))
    assert delta.item() == pytest.approx(0.01, rel=1e-3)


def test_nan_loss_is_a_clear_error():
    def bad(module, b):
        return loss_fn(module, b) * float("nan")

    with pytest.raises(TrainingError, match=r"epoch 1, step 1.*lower the learning rate"):
        Trainer(TrainConfig(epochs=1)).fit(make_module(), bad, Batches())


def test_adamw_decay_is_decoupled():
    def zero(module, b):  # no gradient signal: only weight decay moves the weights
        return sum((0.0 * p).sum() for p in module.parameters())

    m = make_module()
    w0 = m[0].weight.detach().clone()
    Trainer(TrainConfig(epochs=1, optimizer="adamw", lr=0.1, weight_decay=0.5)).fit(
        m, zero, lambda e: Batches()(e)[:1]
    )
    torch.testing.assert_close(m[0].weight, w0 * (1 - 0.1 * 0.5))  # w <- w - lr * wd * w
    m = make_module()
    Trainer(TrainConfig(epochs=1, optimizer="adam", lr=0.1, weight_decay=0.5)).fit(
        m, zero, lambda e: Batches()(e)[:1]
    )
    # coupled: the decay goes through Adam's normalisation, so every weight moves by ~lr
    torch.testing.assert_close(
        (m[0].weight - w0).abs(), torch.full_like(w0, 0.1), rtol=1e-3, atol=1e-4
    )


class WithPenalty(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.full((3,), 2.0))

    def forward(self, x):
        return x.sum(1) * 0.0 + self.w.sum() * 0.0

    def l2_penalty(self):
        return self.w.pow(2).sum()


def test_l2_is_added_to_the_loss():
    m = WithPenalty()
    hist = Trainer(TrainConfig(epochs=1, optimizer="sgd", lr=0.1, l2=0.5)).fit(
        m, lambda mod, b: mod(b[0]).mean(), lambda e: Batches()(e)[:1]
    )
    assert hist.train_loss[0] == pytest.approx(0.5 * 12.0)
    torch.testing.assert_close(m.w.detach(), torch.full((3,), 2.0 - 0.1 * 0.5 * 2 * 2.0))


def test_early_stopping_restores_the_best_weights():
    scores = iter([0.6, 0.8, 0.7, 0.75, 0.9, 0.95])
    snapshots = []

    def valid_fn(m):
        snapshots.append(m[0].weight.detach().clone())
        return {"auc": next(scores)}

    m = make_module()
    hist = Trainer(TrainConfig(epochs=6, patience=2, lr=0.05)).fit(m, loss_fn, Batches(), valid_fn)
    assert hist.stopped_early and hist.best_epoch == 1 and hist.best_value == 0.8
    assert len(hist.valid) == 4  # epochs 3 and 4 did not improve
    torch.testing.assert_close(m[0].weight, snapshots[1])
    assert not m.training
    with pytest.raises(ConfigError, match="monitor"):
        Trainer(TrainConfig(epochs=2, patience=1, monitor="ndcg")).fit(
            make_module(), loss_fn, Batches(), lambda m: {"auc": 0.5}
        )


def test_resume_after_a_kill_equals_a_straight_run(tmp_path):
    straight, h_straight = fit(make_module(), epochs=4, seed=3, lr=0.05)
    ckpt = tmp_path / "ck"
    fit(make_module(), epochs=2, seed=3, lr=0.05, checkpoint_dir=str(ckpt))  # "killed" after 2
    assert (ckpt / CHECKPOINT).exists()
    resumed, h = fit(make_module(99), epochs=4, seed=3, lr=0.05, checkpoint_dir=str(ckpt))
    assert h.resumed_from == 2 and len(h.train_loss) == 4
    np.testing.assert_allclose(h.train_loss, h_straight.train_loss, rtol=1e-6)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(TrainingError, match="does not fit this model"):
        Trainer(TrainConfig(epochs=5, checkpoint_dir=str(ckpt))).fit(
            nn.Linear(6, 1), lambda m, b: m(b[0]).mean(), Batches()
        )


def test_torch_ranker_resume_and_determinism(tmp_path):
    df = make_tiny_ctr(600, seed=2)
    params = {"embedding_dim": 4, "hidden": (8,), "dropout": 0.2, "batch_size": 64, "seed": 7}
    straight = models.get("deepfm", epochs=4, **params).fit(df)
    again = models.get("deepfm", epochs=4, **params).fit(df)
    np.testing.assert_array_equal(straight.predict_proba(df), again.predict_proba(df))
    ck = str(tmp_path / "ck")
    models.get("deepfm", epochs=2, checkpoint_dir=ck, **params).fit(df)
    resumed = models.get("deepfm", epochs=4, checkpoint_dir=ck, **params).fit(df)
    assert resumed.train_history_.resumed_from == 2
    np.testing.assert_allclose(resumed.predict_proba(df), straight.predict_proba(df), rtol=1e-6)


def test_torch_ranker_early_stopping_and_sparse_optimizers():
    df = make_tiny_ctr(800, seed=4)
    train, valid = df.iloc[:600], df.iloc[600:]
    m = models.get(
        "fm",
        embedding_dim=4,
        epochs=30,
        patience=2,
        lr=0.05,
        batch_size=64,
        sparse=True,
    ).fit(train, valid=valid)
    h = m.train_history_
    assert h.stopped_early and len(h.valid) < 30
    assert h.best_epoch is not None and h.valid[h.best_epoch]["auc"] == max(
        v["auc"] for v in h.valid
    )
    assert all(math.isfinite(v["logloss"]) for v in h.valid)


@pytest.mark.parametrize("opt", ["sgd", "adagrad", "adam", "adamw"])
def test_fused_optimizers_match_the_reference_update(opt, monkeypatch):
    import recforge.train.trainer as trainer_mod

    kw = dict(epochs=2, optimizer=opt, lr=0.05, weight_decay=0.01, momentum=0.9 * (opt == "sgd"))
    fused, _ = fit(make_module(0), **kw)
    assert trainer_mod._fusable(list(fused.parameters()))
    monkeypatch.setattr(trainer_mod, "_fusable", lambda params: False)
    plain, _ = fit(make_module(0), **kw)
    for a, b in zip(fused.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
