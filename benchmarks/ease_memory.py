"""EASE fit memory and time, before and after the in-place float32 fit: each in a fresh
child process (its own VmHWM), on the same matrix.

"before" is the fit of commit 8509a09 (float64 Gram ``(X^T X).toarray()``, a copy,
``scipy.linalg.inv``, ``-P / diag(P)`` as a new array, a float32 copy of B), re-enacted
here line for line; "after" is ``recforge.models.retrieval.ease.EASE``. The matrix is the
training part of a dataset (``amazon-beauty``: leave-one-out train, 12,101 items), or the
synthetic 40k-item set of ``benchmarks.recall_scale`` (``--dataset synthetic``).

    nice -n 10 python -m benchmarks.ease_memory --dataset amazon-beauty
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import scipy.linalg

from benchmarks import REPO, peak_rss_kib


def _before(x) -> np.ndarray:
    """The fit of 8509a09, step by step."""
    x = x.astype(np.float64)
    gram = (x.T @ x).toarray()  # (I, I) float64
    g = np.array(gram, dtype=np.float64, copy=True)
    g[np.diag_indices_from(g)] += 500.0
    p = scipy.linalg.inv(g, overwrite_a=True, check_finite=False)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b.astype(np.float32)


def _train(dataset: str):
    from recforge.data.readers.datasets import load_dataset
    from recforge.data.splits import leave_one_out

    if dataset == "synthetic":
        from benchmarks.recall_scale import SYNTH
        from recforge.data.splits import random_split
        from recforge.data.synth import make_synthetic

        return random_split(make_synthetic(**SYNTH), 0.2, seed=0)[0]
    train, _ = leave_one_out(load_dataset(dataset), valid=False)
    return train


def child(which: str, dataset: str) -> dict:
    from threadpoolctl import threadpool_limits

    from recforge import models

    train = _train(dataset)
    model = models.get("ease", l2=500.0, num_threads=2)
    base = peak_rss_kib()
    t = time.perf_counter()
    if which == "before":
        from recforge.data.vocab import IdVocab

        users = IdVocab(train.frame["user"].unique(), "user")
        items = IdVocab(train.frame["item"].unique())
        x = train.to_csr(users, items)
        with threadpool_limits(2, "blas"):
            _before(x)
        n_items = len(items)
    else:
        model.fit(train)
        n_items = model.n_items
    return {
        "fit": which,
        "items": n_items,
        "fit_s": time.perf_counter() - t,
        "peak_rss_mib": peak_rss_kib() / 1024,
        "rss_before_fit_mib": base / 1024,
    }


def run(data_dir=None, out=None, *, dataset: str = "amazon-beauty") -> dict:
    """Both fits, each in a child process; returns {"rows": [...], "markdown": str}."""
    rows = []
    for which in ("after", "before"):
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.ease_memory",
                "--child",
                which,
                "--dataset",
                dataset,
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        row = json.loads(lines[-1]) if lines else {"fit": which, "error": res.stderr.strip()[-300:]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    md = [
        "| Fit | Items | Fit (s) | Peak RSS (MiB) | RSS before fit (MiB) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            md.append(f"| {r['fit']} | failed: {r['error']} | | | |")
        else:
            md.append(
                f"| {r['fit']} | {r['items']:,} | {r['fit_s']:.0f} | {r['peak_rss_mib']:,.0f} | "
                f"{r['rss_before_fit_mib']:,.0f} |"
            )
    return {"rows": rows, "markdown": "\n".join(md)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--child", default=None)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.dataset)))
        return
    print(run(dataset=args.dataset)["markdown"])


if __name__ == "__main__":
    main()
