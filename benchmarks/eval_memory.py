"""Full-ranking evaluation memory: 100k users x 1M items in bounded peak RSS.

A random-factor embedding model (d = 64; 20 seen items per user; one test item per user)
has the exact cost profile of a real one at this size: ``full_ranking`` scores users in
blocks sized by ``recforge.topk.SCORE_MEMORY_BUDGET`` and selects each block's top k. It
runs in a fresh process whose own peak RSS (``VmHWM``, which ``execve`` resets) is
reported beside the RSS before evaluation (interpreter, factors, seen matrix).

    nice -n 10 python -m benchmarks.eval_memory --docs docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import REPO, peak_rss_kib

log = logging.getLogger(__name__)

SECTION = "## Evaluation at scale"
N_USERS, N_ITEMS, DIM, SEEN = 100_000, 1_000_000, 64, 20


def random_factor_model(n_users: int, n_items: int, dim: int, seen: int, seed: int = 0) -> Any:
    """A fitted-looking embedding model with random factors and ``seen`` random train
    items per user (a stand-in with a real model's scoring cost)."""
    import scipy.sparse as sp

    from recforge.data.vocab import IdVocab
    from recforge.models.base import EmbeddingMixin, RetrievalModel

    class RandomFactors(EmbeddingMixin, RetrievalModel):
        """Random user/item factors."""

    rng = np.random.default_rng(seed)
    model = RandomFactors()
    model.user_vocab_ = IdVocab(np.arange(n_users), kind="user")
    model.item_vocab_ = IdVocab(np.arange(n_items), kind="item")
    model.user_factors_ = rng.standard_normal((n_users, dim), dtype=np.float32)
    model.item_factors_ = rng.standard_normal((n_items, dim), dtype=np.float32)
    rows = np.repeat(np.arange(n_users), seen)
    cols = rng.integers(0, n_items, size=n_users * seen)
    model.seen_ = sp.csr_matrix(
        (np.ones(len(cols), np.float32), (rows, cols)), shape=(n_users, n_items)
    )
    model.seen_.data[:] = 1.0
    return model


def measure(n_users: int = N_USERS, n_items: int = N_ITEMS, dim: int = DIM) -> dict[str, Any]:
    """Evaluate the random model here; returns timings and this process's peak RSS (run it
    in a fresh process, as ``run`` does, for a figure of its own)."""
    from recforge.data.interactions import Interactions
    from recforge.evaluation import full_ranking
    from recforge.topk import SCORE_MEMORY_BUDGET, rows_per_batch

    model = random_factor_model(n_users, n_items, dim, SEEN)
    rng = np.random.default_rng(1)
    test = Interactions(
        pd.DataFrame({"user": np.arange(n_users), "item": rng.integers(0, n_items, n_users)})
    )
    rss_before = peak_rss_kib() / 1024
    t0 = time.perf_counter()
    result = full_ranking(model, test, k=(10, 20), metrics=("recall", "ndcg"))
    eval_s = time.perf_counter() - t0
    return {
        "n_users": n_users,
        "n_items": n_items,
        "dim": dim,
        "budget_mb": SCORE_MEMORY_BUDGET >> 20,
        "users_per_batch": rows_per_batch(n_items, 1024),
        "eval_s": round(eval_s, 1),
        "users_per_s": round(n_users / eval_s, 1),
        "peak_rss_mb": round(peak_rss_kib() / 1024, 1),
        "rss_before_eval_mb": round(rss_before, 1),
        "recall@10": float(result["recall@10"]),
        "expected_random_recall@10": 10 / n_items,
    }


def run(
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    *,
    n_users: int = N_USERS,
    n_items: int = N_ITEMS,
) -> dict[str, Any]:
    """``measure`` in a fresh Python process; ``data_dir`` is unused (synthetic model).
    Returns the measurement with the machine, load averages and a ``markdown`` summary."""
    code = (
        "import json, benchmarks.eval_memory as b; "
        f"print(json.dumps(b.measure({int(n_users)}, {int(n_items)})))"
    )
    load_start = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=REPO
    )
    if proc.returncode != 0:
        raise RuntimeError(f"eval_memory child failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(
        date=_dt.date.today().isoformat(),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
        load_average_start=round(load_start, 1),
        load_average_end=round(os.getloadavg()[0], 1),
        command="nice -n 10 python -m benchmarks.eval_memory " + " ".join(sys.argv[1:]),
    )
    result["markdown"] = to_markdown(result)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "eval_memory.json").write_text(json.dumps(result, indent=2))
    return result


def to_markdown(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            "### Full-ranking evaluation memory",
            "",
            f"`recforge.evaluation.full_ranking` on a random-factor embedding model, "
            f"{r['n_users']:,} users x {r['n_items']:,} items, d = {r['dim']}, k = (10, 20), "
            f"in a fresh process: **peak RSS {r['peak_rss_mb']:,.0f} MiB** (of which "
            f"{r['rss_before_eval_mb']:,.0f} MiB before evaluation: interpreter, factors, seen "
            f"matrix), {r['eval_s']:,.0f} s ({r['users_per_s']:,.0f} users/s); score budget "
            f"{r['budget_mb']} MiB = {r['users_per_batch']} users per block. recall@10 "
            f"{r['recall@10']:.6f} (random: {r['expected_random_recall@10']:.6f}).",
            "",
            f"Run on {r['date']} ({r['machine']}, 1-min load average {r['load_average_start']} "
            f"at the start, {r['load_average_end']} at the end) with:",
            "",
            f"    {r['command']}",
            "",
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=N_USERS)
    p.add_argument("--items", type=int, default=N_ITEMS)
    p.add_argument("--out", default=None)
    p.add_argument("--docs", default=None, help="update this markdown file's section")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    r = run(out=a.out, n_users=a.users, n_items=a.items)
    print(r["markdown"])
    if a.docs:
        from benchmarks.recall_zoo import update_docs

        update_docs(r["markdown"], a.docs, SECTION)


if __name__ == "__main__":
    main()
