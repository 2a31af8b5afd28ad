"""ANN indexes at scale, and full-ranking evaluation in bounded memory.

1. **Synthetic**: 1,000,000 clustered 64-d vectors (1,000 Gaussian clusters), 1,000 queries
   from the same distribution; each index kind against the exact Flat index: recall@10,
   batch queries/s, single-query p50/p99 latency, build time (``recforge.index.ann_bench``).
2. **Model vectors**: ALS item vectors fitted on Amazon Beauty (12,101 items), queries =
   1,000 users' vectors.
3. **Full ranking at scale**: ``recforge.evaluation.full_ranking`` of an embedding model
   with random factors, 100,000 users x 50,000 items (d = 64, 20 seen items per user,
   1 test item each), run in a fresh subprocess whose peak RSS is reported.

Faiss uses ``THREADS`` OpenMP threads. Run it::

    python -m benchmarks.ann --docs docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import REPO, report
from benchmarks.recall_zoo import SECTION

log = logging.getLogger(__name__)

SUBSECTION = "### ANN indexes and full-ranking memory"
COMMAND = "python -m benchmarks.ann --docs docs/BENCHMARKS.md"
THREADS = 2
N_VECTORS, DIM, N_CLUSTERS, N_QUERIES = 1_000_000, 64, 1_000, 1_000

# Index settings for the synthetic set (chosen for build time on 2 cores and recall >= 0.95).
SYNTHETIC_CONFIGS: dict[str, dict[str, Any]] = {
    "flat": {"kind": "flat"},
    "ivf_flat": {"kind": "ivf_flat", "nlist": 1024, "nprobe": 8, "train_size": 60_000},
    "ivf_flat_np32": {"kind": "ivf_flat", "nlist": 1024, "nprobe": 32, "train_size": 60_000},
    "ivf_pq": {
        "kind": "ivf_pq",
        "nlist": 1024,
        "nprobe": 16,
        "m": 16,
        "nbits": 8,
        "train_size": 20_000,
    },
    "ivf_pq_refine": {
        "kind": "ivf_pq",
        "nlist": 1024,
        "nprobe": 16,
        "m": 16,
        "nbits": 8,
        "train_size": 20_000,
        "refine": 4,
    },
    "hnsw": {"kind": "hnsw", "hnsw_m": 16, "ef_construction": 40, "ef_search": 64},
}
MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "flat": {"kind": "flat"},
    "ivf_flat": {"kind": "ivf_flat", "nlist": 128, "nprobe": 16},
    "ivf_pq": {"kind": "ivf_pq", "nlist": 128, "nprobe": 16, "m": 16, "refine": 4},
    "hnsw": {"kind": "hnsw", "hnsw_m": 32, "ef_search": 128},
}


def clustered_vectors(
    n: int, d: int, n_clusters: int, n_queries: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (n, d), queries (n_queries, d)) float32 around ``n_clusters`` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d)).astype(np.float32)
    out = np.empty((n, d), dtype=np.float32)
    step = 200_000
    for s in range(0, n, step):  # in blocks, to keep the float64 temporaries small
        m = min(step, n - s)
        out[s : s + m] = centres[rng.integers(0, n_clusters, m)] + 0.5 * rng.normal(
            size=(m, d)
        ).astype(np.float32)
    q = centres[rng.integers(0, n_clusters, n_queries)] + 0.5 * rng.normal(
        size=(n_queries, d)
    ).astype(np.float32)
    return out, q.astype(np.float32)


def _table(df: pd.DataFrame, exact_qps: float) -> list[dict[str, Any]]:
    rows = df.to_dict(orient="records")
    for r in rows:
        r["speedup"] = r["qps"] / exact_qps
    return rows


def bench_synthetic() -> dict[str, Any]:
    from recforge.index import ann_bench

    vectors, queries = clustered_vectors(N_VECTORS, DIM, N_CLUSTERS, N_QUERIES)
    df = ann_bench(
        vectors, queries, list(SYNTHETIC_CONFIGS), k=10, configs=SYNTHETIC_CONFIGS, n_single=300
    )
    return {
        "n": N_VECTORS,
        "d": DIM,
        "queries": N_QUERIES,
        "rows": _table(df, float(df.loc[0, "qps"])),
    }


def bench_model_vectors(data_dir: Path) -> dict[str, Any]:
    from benchmarks.recall_zoo import load_beauty
    from recforge.index import ann_bench
    from recforge.models.retrieval.mf import ALS

    train, _ = load_beauty(data_dir)
    t0 = time.perf_counter()
    model = ALS(factors=64, regularization=1.0, alpha=5.0, iterations=15, num_threads=THREADS).fit(
        train
    )
    fit_s = time.perf_counter() - t0
    rows = np.random.default_rng(0).choice(model.n_users, size=N_QUERIES, replace=False)
    queries = model.user_vectors(np.sort(rows))
    df = ann_bench(
        model.item_vectors(),
        queries,
        list(MODEL_CONFIGS),
        k=10,
        configs=MODEL_CONFIGS,
        n_single=300,
    )
    return {
        "model": "als (Amazon Beauty)",
        "n": model.n_items,
        "d": int(model.item_factors_.shape[1]),
        "fit_s": fit_s,
        "queries": N_QUERIES,
        "rows": _table(df, float(df.loc[0, "qps"])),
    }


# ---------------------------------------------------------------------------- full ranking
def full_ranking_scale(
    n_users: int = 100_000, n_items: int = 50_000, dim: int = 64, seen: int = 20
) -> dict[str, Any]:
    """Full-ranking evaluation of a random-factor embedding model; returns timings and this
    process's peak RSS (run it in a fresh process for a clean figure)."""
    import scipy.sparse as sp

    from recforge.data.interactions import Interactions
    from recforge.data.vocab import IdVocab
    from recforge.evaluation import full_ranking
    from recforge.models.base import EmbeddingMixin, RetrievalModel

    class RandomFactors(EmbeddingMixin, RetrievalModel):
        """Random user/item factors: a stand-in with the exact cost profile of a real
        embedding model at this scale."""

    rng = np.random.default_rng(0)
    model = RandomFactors()
    model.user_vocab_ = IdVocab(np.arange(n_users), kind="user")
    model.item_vocab_ = IdVocab(np.arange(n_items), kind="item")
    model.user_factors_ = rng.normal(size=(n_users, dim)).astype(np.float32)
    model.item_factors_ = rng.normal(size=(n_items, dim)).astype(np.float32)
    cols = rng.integers(0, n_items, size=n_users * seen)
    rows = np.repeat(np.arange(n_users), seen)
    model.seen_ = sp.csr_matrix(
        (np.ones(len(cols), np.float32), (rows, cols)), shape=(n_users, n_items)
    )
    model.seen_.data[:] = 1.0
    test = Interactions(
        pd.DataFrame({"user": np.arange(n_users), "item": rng.integers(0, n_items, n_users)})
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    result = full_ranking(model, test, k=(10, 20), metrics=("recall", "ndcg"))
    eval_s = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "n_users": n_users,
        "n_items": n_items,
        "dim": dim,
        "eval_s": eval_s,
        "users_per_s": n_users / eval_s,
        "peak_rss_mb": peak_mb,
        "rss_before_eval_mb": rss_before,
        "recall@10": float(result["recall@10"]),
        "expected_random_recall@10": 10 / n_items,
    }


def bench_full_ranking() -> dict[str, Any]:
    """``full_ranking_scale`` in a fresh Python process (so peak RSS is its own)."""
    code = "import json, benchmarks.ann as a; print(json.dumps(a.full_ranking_scale()))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=REPO
    )
    if proc.returncode != 0:
        raise RuntimeError(f"full_ranking_scale failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- run
def run(
    data_dir: str | Path,
    out: str | Path | None = None,
    *,
    parts: tuple[str, ...] = ("synthetic", "model", "full_ranking"),
) -> dict[str, Any]:
    """Run the ANN benchmark; returns ``{"synthetic": ..., "model": ..., "full_ranking": ..., "markdown": str}``."""
    import faiss

    faiss.omp_set_num_threads(THREADS)
    result: dict[str, Any] = {
        "bench": "ann",
        "date": _dt.date.today().isoformat(),
        "environment": _environment(),
    }
    if "synthetic" in parts:
        result["synthetic"] = bench_synthetic()
    if "model" in parts:
        result["model"] = bench_model_vectors(Path(data_dir))
    if "full_ranking" in parts:
        result["full_ranking"] = bench_full_ranking()
    result["markdown"] = to_markdown(result)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "ann.json").write_text(
            json.dumps({k: v for k, v in result.items() if k != "markdown"}, indent=2, default=str)
        )
        (out / "ann.md").write_text(result["markdown"])
    return result


def _environment() -> dict[str, str]:
    import faiss

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "threads": str(THREADS),
    }


def _index_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| Index | Params | Recall@10 vs exact | Queries/s (batch) | Speed-up vs exact | p50 (ms) | p99 (ms) | Build (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['index']} | {r['params'] or '-'} | {r['recall@10']:.4f} | {r['qps']:,.0f} | "
            f"{r['speedup']:.1f}x | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['build_s']:.1f} |"
        )
    return lines


def to_markdown(result: dict[str, Any]) -> str:
    env = ", ".join(f"{k} {v}" for k, v in result["environment"].items())
    lines = [SUBSECTION, "", f"Run on {result['date']} ({env}) with:", "", f"    {COMMAND}", ""]
    if "synthetic" in result:
        s = result["synthetic"]
        lines += [
            f"**Synthetic**: {s['n']:,} clustered {s['d']}-d vectors ({N_CLUSTERS} clusters), "
            f"{s['queries']:,} queries, inner product; single-query latency over 300 queries.",
            "",
            *_index_table(s["rows"]),
            "",
        ]
    if "model" in result:
        m = result["model"]
        lines += [
            f"**Model vectors**: {m['model']}, {m['n']:,} items x {m['d']} (fit {m['fit_s']:.1f}s), "
            f"{m['queries']:,} user vectors as queries.",
            "",
            *_index_table(m["rows"]),
            "",
        ]
    if "full_ranking" in result:
        f = result["full_ranking"]
        lines += [
            f"**Full ranking at scale**: `recforge.evaluation.full_ranking` on a random-factor "
            f"embedding model, {f['n_users']:,} users x {f['n_items']:,} items, d = {f['dim']}, "
            f"k = (10, 20), in a fresh process: {f['eval_s']:.1f}s ({f['users_per_s']:,.0f} users/s), "
            f"peak RSS {f['peak_rss_mb']:,.0f} MB (of which {f['rss_before_eval_mb']:,.0f} MB before "
            f"evaluation: interpreter, factors, seen matrix); recall@10 {f['recall@10']:.5f} "
            f"(random: {f['expected_random_recall@10']:.5f}).",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder holding amazon-beauty/")
    parser.add_argument("--out", default=None, help="folder for ann.json / ann.md")
    parser.add_argument(
        "--docs", default=None, help="markdown file to update, e.g. docs/BENCHMARKS.md"
    )
    parser.add_argument("--parts", default="synthetic,model,full_ranking")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from benchmarks import resolve_data_dir

    result = run(resolve_data_dir(args.data_dir), out=args.out, parts=tuple(args.parts.split(",")))
    report(result, args.docs, SECTION)


if __name__ == "__main__":
    main()
