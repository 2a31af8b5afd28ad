"""How the CF models' defaults were chosen: a few candidate settings per model, each scored
on validation splits of four datasets of different sizes (never their test splits).

Datasets and validation splits (train part of the benchmark split, split again):

* ``ml-100k``: ratings >= 4; the benchmark's random 80/20 (seed 123), its train part split
  80/20 again (seed 124), as in ``benchmarks.cf_ml100k``.
* ``ml-latest-small``: ratings >= 4; random 80/20 (seed 0), train split again (seed 1).
* ``beauty``: Amazon Beauty, leave-one-out: the second-to-last item of each user is the
  validation target, the items before it train.
* ``synthetic``: ``benchmarks.recall_scale.SYNTH`` (30k users x 40k items x 800k rows),
  random 80/20 (seed 0), train split again (seed 1): ``recall_scale --split valid``.

Each candidate is fitted on the validation-train part and scored with full ranking (train
items excluded), Recall@20. A candidate's score on a dataset is its Recall@20 over the best
candidate's there; the default is the candidate with the highest mean of these ratios (or
a cheaper one within 1% of it), so that one large dataset does not decide alone. ``"default"`` is the model's defaults at the
time of the run (what the table calls "after" once the choice has been applied).

    nice -n 10 python -m benchmarks.recall_defaults --models als,bpr --docs docs/BENCHMARKS.md

With ``RECFORGE_BENCH_LOG=FILE`` the torch models' per-epoch lines go to FILE as each epoch
ends (``recall_scale.log_epochs_to_env_file``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SUBSECTION = "### Defaults across dataset sizes"
THREADS = int(os.environ.get("RECFORGE_BENCH_THREADS", "2"))  # per model

# YouTube-DNN's sparse-log settings as first chosen on the 40k log (init std 0.3; the
# default is now 0.1: candidate "sparse, init0.1"), sparse_lr forced, at any density
_YT_SPARSE: dict[str, Any] = {
    "normalize": True,
    "temperature": 0.2,
    "n_negatives": 1024,
    "init_std": 0.3,
    "lr": 1.75e-3,
    "sparse_lr": None,
}

# SimpleX's settings before its sparse-log defaults (simplex.DENSE_SETTINGS), forced at
# any density: the base of its candidates, so that they mean what they meant when run
_SX_DENSE: dict[str, Any] = {"loss": "ccl", "n_negatives": 300, "gate": 0.5, "init_std": 0.1}

# candidates per model: name -> params (merged over the model's defaults)
CANDIDATES: dict[str, dict[str, dict[str, Any]]] = {
    "als": {
        "default": {},
        "old f64 r0.01 a1": {"factors": 64, "regularization": 0.01, "alpha": 1.0},
        "f128 r0.01 a1": {"factors": 128, "regularization": 0.01, "alpha": 1.0},
        "f128 r0.1 a5": {"factors": 128, "regularization": 0.1, "alpha": 5.0},
        "f128 r1 a10": {"factors": 128, "regularization": 1.0, "alpha": 10.0},
        "f128 r0.1 a20": {"factors": 128, "regularization": 0.1, "alpha": 20.0},
        "f64 r0.1 a20": {"factors": 64, "regularization": 0.1, "alpha": 20.0},
    },
    "bpr": {
        "default": {},
        "old f64 lr0.01 r0.01 i100": {
            "factors": 64,
            "learning_rate": 0.01,
            "regularization": 0.01,
            "iterations": 100,
        },
        "f128 lr0.05 r0.001 i100": {
            "factors": 128,
            "learning_rate": 0.05,
            "regularization": 0.001,
        },
        "f128 lr0.02 r0.001 i200": {
            "factors": 128,
            "learning_rate": 0.02,
            "regularization": 0.001,
            "iterations": 200,
        },
        "f128 lr0.1 r0.001 i100": {
            "factors": 128,
            "learning_rate": 0.1,
            "regularization": 0.001,
        },
    },
    "item2vec": {
        "default": {},
        "old w5 n5 e10 s1e-3": {"window": 5, "negative": 5, "epochs": 10, "sample": 1e-3},
        "w20 n10 e20 s1e-4": {"window": 20, "negative": 10, "epochs": 20, "sample": 1e-4},
        "w20 n10 e20 s0": {"window": 20, "negative": 10, "epochs": 20, "sample": 0.0},
        "w50 n10 e20 s1e-4 d128": {
            "window": 50,
            "negative": 10,
            "epochs": 20,
            "sample": 1e-4,
            "vector_size": 128,
        },
    },
    "lightgcn": {
        "default": {},
        "old b2048 e60 no early stop": {"max_batch_size": 2048, "patience": 0},
    },
    "simplex": {
        "default": {},
        "old b512 lr5e-3 e10 no early stop": {
            **_SX_DENSE,
            "max_batch_size": 512,
            "patience": 0,
            "lr": 5e-3,
            "epochs": 10,
        },
        # the defaults before the sparse settings (CCL at any density)
        "ccl 300neg gate0.5 init0.1": dict(_SX_DENSE),
        "softmax T0.2 1024neg": {**_SX_DENSE, "loss": "softmax", "n_negatives": 1024},
        "softmax T0.2 300neg": {**_SX_DENSE, "loss": "softmax", "n_negatives": 300},
        # S14Y's probes (docs/BENCHMARKS.md, "Recall at 40k items"), over the same base
        "init0.03": {**_SX_DENSE, "init_std": 0.03},
        "gate0.1": {**_SX_DENSE, "gate": 0.1},
        "e30": {**_SX_DENSE, "epochs": 30},
        **{
            name: {**_SX_DENSE, "loss": "softmax", "n_negatives": 1024, **extra}
            for name, extra in {
                "softmax T0.2 1024neg init0.03": {"init_std": 0.03},
                "softmax T0.2 1024neg e30": {"epochs": 30},
                "softmax T0.2 1024neg gate0.3": {"gate": 0.3},
                "softmax T0.2 1024neg gate0.3 init0.03": {"gate": 0.3, "init_std": 0.03},
                "softmax T0.2 1024neg gate0.1": {"gate": 0.1},
                "softmax T0.2 1024neg gate0.1 init0.05": {"gate": 0.1, "init_std": 0.05},
                "softmax T0.2 1024neg gate0.1 init0.03": {"gate": 0.1, "init_std": 0.03},
                "softmax T0.2 1024neg gate0": {"gate": 0.0},
                "softmax T0.2 1024neg gate0 init0.05": {"gate": 0.0, "init_std": 0.05},
                # the sparse settings (simplex.SPARSE_SETTINGS), forced at any density
                "softmax T0.2 2048neg gate0 init0.05": {
                    "n_negatives": 2048,
                    "gate": 0.0,
                    "init_std": 0.05,
                },
            }.items()
        },
        # S15's probes: the sparse settings (as they are at the time of the run) with wider
        # embeddings
        "d128": {"embedding_dim": 128},
        "d256": {"embedding_dim": 256},
        "d512": {"embedding_dim": 512},
        "d1024": {"embedding_dim": 1024},
    },
    "youtube_dnn": {
        "default": {},
        "old dot T1 256neg init0.05 b512 lr1e-3 e20": {
            "normalize": False,
            "temperature": 1.0,
            "n_negatives": 256,
            "init_std": 0.05,
            "max_batch_size": 512,
            "patience": 0,
            "lr": 1e-3,
            "sparse_lr": None,
        },
        "sparse settings": dict(_YT_SPARSE),
        "sparse, dot T1": {**_YT_SPARSE, "normalize": False, "temperature": 1.0},
        "sparse, init0.05": {**_YT_SPARSE, "init_std": 0.05},
        "sparse, init0.1": {**_YT_SPARSE, "init_std": 0.1},
        "sparse, init0.15": {**_YT_SPARSE, "init_std": 0.15},
        "sparse, 256neg": {**_YT_SPARSE, "n_negatives": 256},
        "sparse, e5": {**_YT_SPARSE, "epochs": 5},
        "sparse, e10": {**_YT_SPARSE, "epochs": 10},
        "sparse, lr5e-4": {**_YT_SPARSE, "lr": 5e-4, "sparse_lr": None},
        "sparse, init0.05 e10": {**_YT_SPARSE, "init_std": 0.05, "epochs": 10},
    },
    "itemcf": {
        "default": {},
        "old cosine k100": {"similarity": "cosine", "k": 100, "shrink": 0.0, "iuf": False},
        "cosine k100 s10 iuf": {"similarity": "cosine", "k": 100, "shrink": 10.0, "iuf": True},
        "asym0.5 k200 s10 iuf": {
            "similarity": "asymmetric_cosine",
            "alpha": 0.5,
            "k": 200,
            "shrink": 10.0,
            "iuf": True,
        },
        "asym0.7 k100 s10 iuf": {
            "similarity": "asymmetric_cosine",
            "alpha": 0.7,
            "k": 100,
            "shrink": 10.0,
            "iuf": True,
        },
    },
}
THREADED = {"als", "bpr", "item2vec", "lightgcn", "simplex", "youtube_dnn"}  # take num_threads


# ---------------------------------------------------------------------------- data
def validation_splits(data_dir: Path, names: tuple[str, ...]) -> dict[str, tuple[Any, Any]]:
    """{dataset: (validation-train, validation)} as in the module docstring."""
    from benchmarks.recall_scale import SYNTH
    from recforge.data.readers.datasets import load_dataset
    from recforge.data.splits import leave_one_out, random_split
    from recforge.data.synth import make_synthetic

    out: dict[str, tuple[Any, Any]] = {}
    for name in names:
        if name == "ml-100k":
            from benchmarks.cf_ml100k import random_split as cornac_split

            data = load_dataset("ml-100k", data_dir).positives(4.0)
            train, _ = cornac_split(data, 0.2, 123)
            out[name] = cornac_split(train, 0.2, 124)
        elif name == "ml-latest-small":
            data = load_dataset("ml-latest-small", data_dir).positives(4.0)
            train, _ = random_split(data, 0.2, seed=0)
            out[name] = random_split(train, 0.2, seed=1)
        elif name == "beauty":
            train, valid, _ = leave_one_out(load_dataset("amazon-beauty", data_dir), valid=True)
            out[name] = (train, valid)
        elif name == "synthetic":
            train, _ = random_split(make_synthetic(**SYNTH), 0.2, seed=0)
            out[name] = random_split(train, 0.2, seed=1)
        else:
            raise ValueError(f"unknown dataset {name!r}")
    return out


# ---------------------------------------------------------------------------- search
def score(model_name: str, params: dict[str, Any], train: Any, valid: Any) -> dict[str, float]:
    from recforge import models
    from recforge.evaluation import full_ranking

    extra = {"num_threads": THREADS} if model_name in THREADED else {}
    t = time.perf_counter()
    model = models.get(model_name, **params, **extra).fit(train)
    fit_s = time.perf_counter() - t
    res = full_ranking(model, valid, k=20, metrics=("recall", "ndcg"))
    return {"recall@20": res["recall@20"], "ndcg@20": res["ndcg@20"], "fit_s": fit_s}


def run(
    data_dir: Any = None,
    out: Any = None,
    *,
    model_names: tuple[str, ...] = tuple(CANDIDATES),
    datasets: tuple[str, ...] = ("ml-100k", "ml-latest-small", "beauty", "synthetic"),
    candidates: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Score every candidate of every model on every validation split; returns
    {"results": {model: {candidate: {dataset: metrics}}}, "markdown": str}."""
    from benchmarks import resolve_data_dir

    splits = validation_splits(resolve_data_dir(data_dir), datasets)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for m in model_names:
        results[m] = {}
        for cand, params in CANDIDATES[m].items():
            if candidates is not None and cand not in candidates:
                continue
            results[m][cand] = {}
            for ds, (train, valid) in splits.items():
                r = score(m, params, train, valid)
                results[m][cand][ds] = r
                print(json.dumps({"model": m, "candidate": cand, "dataset": ds, **r}), flush=True)
    return {"results": results, "markdown": markdown(results, datasets)}


def markdown(results: dict[str, Any], datasets: tuple[str, ...]) -> str:
    load = os.getloadavg()[0]
    lines = [
        SUBSECTION,
        "",
        f"Run on {_dt.date.today().isoformat()} (1-min load average {load:.1f} at the end) "
        "with `nice -n 10 python -m benchmarks.recall_defaults` (module docstring: the "
        "validation splits; test splits unused). Recall@20 on each validation split; "
        "'rel.' is the mean over datasets of Recall@20 / the best candidate's.",
        "",
    ]
    for m, cands in results.items():
        best = {ds: max(c[ds]["recall@20"] for c in cands.values()) for ds in datasets}
        lines += [f"**{m}**", "", "| Candidate | " + " | ".join(datasets) + " | rel. |"]
        lines += ["|---" * (len(datasets) + 2) + "|"]
        for cand, per in cands.items():
            rel = float(np.mean([per[ds]["recall@20"] / max(best[ds], 1e-12) for ds in datasets]))
            cells = " | ".join(f"{per[ds]['recall@20']:.4f}" for ds in datasets)
            lines.append(f"| {cand} | {cells} | {rel:.3f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--models", default=",".join(CANDIDATES))
    ap.add_argument("--datasets", default="ml-100k,ml-latest-small,beauty,synthetic")
    ap.add_argument(
        "--candidates",
        default=None,
        help="subset (default: all), comma-separated, or semicolon-separated for names "
        "that contain commas",
    )
    ap.add_argument("--docs", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from benchmarks.recall_scale import log_epochs_to_env_file

    log_epochs_to_env_file()  # RECFORGE_BENCH_LOG=FILE: the torch models' epochs there
    result = run(
        args.data_dir,
        model_names=tuple(args.models.split(",")),
        datasets=tuple(args.datasets.split(",")),
        candidates=tuple(args.candidates.split(";" if ";" in args.candidates else ","))
        if args.candidates
        else None,
    )
    print(result["markdown"])
    if args.docs:
        from benchmarks.recall_zoo import update_docs

        print(f"updated {update_docs(result['markdown'], args.docs)}")


if __name__ == "__main__":
    main()
