"""Micro-benchmarks behind the ranking-speed changes (docs/BENCHMARKS.md, "Ranking speed").

* ``gather``: one 4096 x 26 batch of the Criteo-shaped benchmark's indices into a
  324,501 x 17 table, forward and backward: ``F.embedding`` (sorting backward) against
  ``index_select`` (one ``index_add_``), what ``FeatureEmbedding._gather`` reads with.
* ``mlp``: one forward + backward of MLP 432-400-400-400-1 at B=4096: autograd's graph
  of ``nn.Sequential`` against ``_ReluStack`` (``MLP``'s training node).
* ``heap``: DeepFM fits (300,000 rows, 1 epoch) interleaved in this process (order
  ABBAAB) with glibc's trim threshold at 128 KiB and at 1 GiB (``mallopt``; the mmap
  threshold at its 32 MiB ceiling for both): fit seconds, CPU seconds and minor page
  faults of each. Whether keeping freed memory in the heap speeds training up (it cuts the
  page faults ~12x; docs/BENCHMARKS.md, "Ranking speed": the times were not).

Medians over the repeats, milliseconds unless stated. Run::

    chrt -f 10 python -m benchmarks.ctr_micro --parts gather,mlp,heap
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def _median_ms(fn: Any, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(float(np.median(times)) * 1000, 2)


def bench_gather(reps: int = 20) -> dict[str, float]:
    from benchmarks.ctr_speed import criteo_like, vocab_sizes

    sizes = vocab_sizes()
    offsets = np.cumsum([0, *sizes[:-1]])
    frame = criteo_like(4096, seed=3)
    idx = torch.from_numpy(
        np.stack([frame[f"C{j + 1}"].to_numpy() + offsets[j] for j in range(len(sizes))], 1)
    )
    weight = torch.nn.Parameter(torch.randn(sum(sizes) + len(sizes), 17))
    grad = torch.randn(*idx.shape, 17)

    def step(read: Any) -> Any:
        def run() -> None:
            weight.grad = None
            read().backward(grad)

        return run

    return {
        "F.embedding": _median_ms(step(lambda: F.embedding(idx, weight)), reps),
        "index_select": _median_ms(
            step(lambda: weight.index_select(0, idx.reshape(-1)).view(*idx.shape, 17)), reps
        ),
    }


def bench_mlp(reps: int = 20) -> dict[str, float]:
    from recforge.nn.mlp import MLP

    torch.manual_seed(0)
    mlp = MLP(432, (400, 400, 400), out_dim=1)
    x = torch.randn(4096, 432, requires_grad=True)
    return {
        "autograd (nn.Sequential)": _median_ms(lambda: mlp.net(x).sum().backward(), reps),
        "_ReluStack": _median_ms(lambda: mlp(x).sum().backward(), reps),
    }


def bench_heap(rounds: int = 3, rows: int = 300_000) -> dict[str, Any]:
    import ctypes

    from benchmarks.ctr_pairs import PAIRS
    from benchmarks.ctr_speed import criteo_like, warm_up_torch
    from recforge import models

    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameter numbers
    libc = ctypes.CDLL("libc.so.6")
    warm_up_torch()
    train = criteo_like(rows, seed=1)
    libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)  # the same for both arms
    out: dict[str, list[tuple[float, float, int]]] = {"trim 128 KiB": [], "trim 1 GiB": []}
    for r in range(rounds * 2):
        arm = list(out)[(r + r // 2) % 2]  # low, high, high, low, low, high, ...
        libc.mallopt(m_trim_threshold, 128 * 1024 if arm == "trim 128 KiB" else 1 << 30)
        libc.malloc_trim(0)
        model = models.get(
            "deepfm",
            **PAIRS["deepfm"].params,
            embedding_dim=16,
            epochs=1,
            batch_size=4096,
            lr=1e-3,
            seed=0,
            num_threads=torch.get_num_threads(),
            progress=False,
        )
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0, c0 = time.perf_counter(), time.process_time()
        model.fit(train, label="label")
        out[arm].append(
            (
                round(time.perf_counter() - t0, 2),
                round(time.process_time() - c0, 2),
                resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
            )
        )
    return {
        arm: {
            "fits (s, CPU-s, minor faults)": v,
            "median_fit_s": float(np.median([x[0] for x in v])),
            "median_cpu_s": float(np.median([x[1] for x in v])),
        }
        for arm, v in out.items()
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="gather,mlp,heap")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--heap-rounds", type=int, default=3, help="fits per arm")
    p.add_argument("--heap-rows", type=int, default=300_000)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    result: dict[str, Any] = {"threads": a.threads, "load": round(os.getloadavg()[0], 1)}
    for part in a.parts.split(","):
        if part == "gather":
            result["gather_ms"] = bench_gather()
        elif part == "mlp":
            result["mlp_step_ms"] = bench_mlp()
        elif part == "heap":
            result["heap"] = bench_heap(a.heap_rounds, a.heap_rows)
        else:
            raise SystemExit(f"--parts: unknown part {part!r}; choose gather, mlp, heap.")
    result["load_end"] = round(os.getloadavg()[0], 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
