"""Data-parallel training on PyTorch's own engine: ``torch.distributed`` +
``DistributedDataParallel``, launched by ``torchrun`` (or ``recforge train --nproc N``).

    torchrun --nproc_per_node 2 -m recforge train --config configs/deepfm.yaml

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address;
``init_from_env()`` joins the process group (gloo on CPU, NCCL when CUDA is used) and is a
no-op in a plain single process. Inside ``Trainer.fit`` (the one training loop, so every
torch model gets it):

* the module is wrapped in ``DistributedDataParallel`` (gradients are averaged across ranks
  during backward; sparse embedding gradients are all-reduced sparsely, which gloo supports
  and NCCL does not — on NCCL build embeddings dense);
* each rank trains on its own shard of every epoch's batches (batch ``i`` goes to rank
  ``i % world_size``; every rank takes the same number of steps, a tail of fewer than
  ``world_size`` batches is dropped), so ranks see disjoint samples;
* the epoch loss and the validation metrics are all-reduced (mean), so early stopping and
  best-epoch restore decide the same on every rank;
* only rank 0 writes checkpoints, shows progress and (in ``recforge train``) saves the model;
  a resumed run reads the same checkpoint on every rank.

Embedding tables too large for one process are out of scope: the seam is
``recforge.nn.embedding.FeatureEmbedding`` (one table with offsets), which TorchRec's
``EmbeddingBagCollection`` + ``DistributedModelParallel`` would replace, sharded by table or
row across ranks.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def env_world() -> tuple[int, int]:
    """(rank, world_size) from torchrun's environment; (0, 1) in a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def world() -> tuple[int, int]:
    """(rank, world_size) of the initialised process group, else of the environment."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return env_world()


def is_distributed() -> bool:
    """Whether a process group of more than one process is initialised."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    """Rank 0 (or a plain process): the one that writes files and prints."""
    return world()[0] == 0


def init_from_env(backend: str | None = None) -> bool:
    """Join torchrun's process group when ``WORLD_SIZE > 1`` (gloo on CPU, NCCL if
    ``backend`` says so or CUDA is available); returns whether training is distributed."""
    import torch
    import torch.distributed as dist

    _, size = env_world()
    if size <= 1:
        return False
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=backend)
        log.info("joined process group: rank %d of %d (%s)", dist.get_rank(), size, backend)
    return True


def launch(nproc: int, args: list[str]) -> int:
    """Run ``recforge ARGS`` under ``torchrun --standalone --nproc_per_node NPROC`` (a child
    process); returns its exit status."""
    import subprocess
    import sys

    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={int(nproc)}", "-m", "recforge", *args,
    ]  # fmt: skip
    log.info("launching %s", " ".join(cmd))
    return subprocess.call(cmd)


def barrier_and_shutdown() -> None:
    """Wait for every rank, then leave the process group (before a rank goes on alone or
    exits: a process exiting with gloo's threads still up aborts)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shutdown() -> None:
    """Leave the process group (end of a distributed job)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(values: list[float]) -> list[float]:
    """The mean of each value across ranks (identity in a single process)."""
    if not is_distributed():
        return list(values)
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / dist.get_world_size()).tolist()


def shard_batches(batches: Any, rank: int, size: int) -> Any:
    """Rank ``rank``'s share of an epoch's batches: batch ``i`` for ``i % size == rank``,
    the same count on every rank. A batch source with ``shard(rank, size)`` shards itself
    (without building the other ranks' batches)."""
    if size <= 1:
        return batches
    if hasattr(batches, "shard"):
        return batches.shard(rank, size)
    return _Sharded(batches, rank, size)


class _Sharded:
    def __init__(self, inner: Any, rank: int, size: int) -> None:
        self.inner, self.rank, self.size = inner, rank, size

    def __len__(self) -> int:
        return len(self.inner) // self.size

    def __iter__(self):  # type: ignore[no-untyped-def]
        n = len(self.inner) // self.size if hasattr(self.inner, "__len__") else None
        taken = 0
        for i, batch in enumerate(self.inner):
            if n is not None and taken >= n:
                return
            if i % self.size == self.rank:
                taken += 1
                yield batch


def wrap(module: Any, loss_fn: Any) -> Any:
    """``DistributedDataParallel`` over a module whose forward is ``loss_fn(module, batch)``,
    so that whatever the loss calls on the model (towers, encoders) takes part in the
    gradient all-reduce."""
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    class LossModule(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, batch: Any) -> Any:
            return loss_fn(self.inner, batch)

    return DistributedDataParallel(LossModule(module), find_unused_parameters=True)
