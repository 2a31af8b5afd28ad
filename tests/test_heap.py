"""recforge.heap: the malloc thresholds while a fit runs, and back after it."""

from __future__ import annotations

import torch

from recforge import heap
from recforge.train.config import TrainConfig
from recforge.train.trainer import Trainer


class _FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("trim", pad))
        return 1


def test_thresholds_are_set_once_for_nested_fits_and_restored(monkeypatch):
    libc = _FakeLibc()
    monkeypatch.setattr(heap, "_glibc", lambda: libc)
    with heap.retained_heap():
        with heap.retained_heap():  # a pretraining inside a fit: nothing more
            pass
        assert libc.calls == [
            ("mallopt", heap.M_MMAP_THRESHOLD, heap.MMAP_THRESHOLD),
            ("mallopt", heap.M_TRIM_THRESHOLD, heap.TRIM_WHILE_TRAINING),
        ]
    assert libc.calls[2:] == [("mallopt", heap.M_TRIM_THRESHOLD, heap.TRIM_AFTER), ("trim", 0)]


def test_a_fit_runs_inside_it_and_users_settings_win(monkeypatch):
    libc = _FakeLibc()
    monkeypatch.setattr(heap, "_glibc", lambda: libc)
    module = torch.nn.Linear(3, 1)
    batches = lambda epoch: [(torch.randn(4, 3), torch.randn(4, 1))]  # noqa: E731
    loss = lambda m, b: ((m(b[0]) - b[1]) ** 2).mean()  # noqa: E731
    Trainer(TrainConfig(epochs=1, progress=False)).fit(module, loss, batches)
    assert [c[0] for c in libc.calls] == ["mallopt", "mallopt", "mallopt", "trim"]
    monkeypatch.undo()
    for env in ("RECFORGE_KEEP_HEAP", "MALLOC_TRIM_THRESHOLD_"):
        with monkeypatch.context() as m:
            m.setenv(env, "0")
            assert heap._glibc() is None
