"""Every registered retrieval model on MovieLens 100K and Amazon Beauty, with implicit's
ALS/BPR and gensim's Word2Vec run raw (outside our wrappers) on the same splits.

Protocols:

* **MovieLens 100K** (Cornac's README setting): ratings >= 4 are positives; the positive
  rows are split 80/20 at random with ``numpy.random.default_rng(123)`` (the split of
  ``benchmarks.cf_ml100k``); test pairs with a user or item unseen in train are dropped
  (Cornac's ``exclude_unknowns``). Full ranking over all train items, the user's train
  items excluded; Recall@10/NDCG@10 for the comparison with Cornac's BPR (NDCG@10 0.1500,
  Recall@10 0.1195) and Recall@20/NDCG@20.
* **Amazon Beauty** (``Beauty.txt``, all interactions, file order = time): the last item
  of each user is the test target (``leave_one_out(valid=False)``), the rest is train;
  full ranking, the user's train items excluded; Recall@20 / NDCG@20.

Hyperparameters are in ``PARAMS`` (one entry per dataset and model; a registered model
without an entry is listed as not run, since defaults may far exceed the time budget).
BPR's and ALS's were chosen on a validation split of the ML-100K train rows (80/20,
seed 124), never on the test split. ``--models`` runs a subset.

Run it::

    python -m benchmarks.recall_zoo --docs docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import platform
import time
import traceback
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recforge import metrics
from recforge import models as registry
from recforge.data.interactions import Interactions
from recforge.exceptions import DataError

log = logging.getLogger(__name__)

SECTION = "## Recall"
SUBSECTION = "### Recall model zoo"
COMMAND = "python -m benchmarks.recall_zoo --docs docs/BENCHMARKS.md"
THREADS = 2
CORNAC_BPR = {"ndcg@10": 0.1500, "recall@10": 0.1195}

# Per dataset, per registered model: hyperparameters (C2's torch models add theirs here).
_ALS = {
    "factors": 32,
    "regularization": 0.1,
    "alpha": 5.0,
    "iterations": 15,
    "num_threads": THREADS,
}
_BPR = {
    "factors": 128,
    "learning_rate": 0.005,
    "regularization": 0.01,
    "iterations": 100,
    "num_threads": THREADS,
}
_W2V = {
    "vector_size": 64,
    "window": 10,
    "epochs": 10,
    "negative": 10,
    "sample": 0.0,
    "num_threads": THREADS,
}
_WALKS = {
    "walk_length": 20,
    "walks_per_node": 10,
    "vector_size": 64,
    "window": 5,
    "epochs": 3,
    "num_threads": THREADS,
}
_WALKS_BIG = {**_WALKS, "walk_length": 10, "walks_per_node": 5, "epochs": 2}
_ITEMCF = {"similarity": "asymmetric_cosine", "k": 50, "shrink": 10.0, "iuf": True}
_USERCF = {"similarity": "cosine", "k": 50, "iif": True}

# Per dataset, per registered model: hyperparameters (C2's torch models add theirs here).
# ALS and BPR: chosen on a validation split of the ML-100K train rows (80/20, seed 124);
# itemcf/usercf: benchmarks.cf_ml100k's validated settings; the rest fixed by hand.
PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "ml-100k": {
        "most_popular": {},
        "itemcf": _ITEMCF,
        "usercf": _USERCF,
        "als": _ALS,
        "bpr": _BPR,
        "item2vec": _W2V,
        "deepwalk": {**_WALKS, "graph": "bipartite"},
        "node2vec": {**_WALKS, "graph": "bipartite", "p": 1.0, "q": 0.5},
        "ease": {"l2": 200.0},
        "content": {
            "text_columns": ["title"],
            "token_columns": ["genres"],
            "encoder": "tfidf",
            "dim": 64,
        },
    },
    "beauty": {
        "most_popular": {},
        "itemcf": _ITEMCF,
        "usercf": _USERCF,
        "als": _ALS,
        "bpr": _BPR,
        "item2vec": {**_W2V, "window": 5},
        "deepwalk": {**_WALKS_BIG, "graph": "bipartite"},
        "node2vec": {**_WALKS_BIG, "graph": "bipartite", "p": 1.0, "q": 0.5},
        "ease": {"l2": 200.0},
        "content": {
            "text_columns": [],
            "token_columns": ["attributes"],
            "encoder": "tfidf",
            "dim": 64,
        },
    },
}

# Torch retrieval models (C2). ML-100K: settings from the runs reported in docs/BENCHMARKS.md
# ("Torch retrieval models"); Beauty: fewer epochs and bigger batches for the larger catalogue.
PARAMS["ml-100k"].update(
    {
        "lightgcn": {
            "embedding_dim": 64,
            "n_layers": 3,
            "l2": 1e-4,
            "epochs": 60,
            "batch_size": 2048,
            "lr": 5e-3,
        },
        "simplex": {
            "n_negatives": 300,
            "margin": 0.3,
            "negative_weight": 5.0,
            "gate": 0.5,
            "epochs": 10,
            "lr": 5e-3,
        },
        "dssm": {
            "loss": "in_batch",
            "temperature": 0.2,
            "item_feature_cols": ["genres", "year"],
            "epochs": 10,
        },
        "youtube_dnn": {"loss": "sampled_softmax", "n_negatives": 256, "epochs": 20},
        "fm_recall": {"loss": "bpr", "epochs": 30, "batch_size": 1024, "lr": 2e-3},
    }
)
PARAMS["beauty"].update(
    {
        # one epoch on the shared 2-core machine: lightgcn 86 s, dssm 247 s, simplex 100 s,
        # youtube_dnn 92 s, fm_recall 66 s (Recall@20 after it: 0.049, 0.055, 0.042, 0.016, 0.027)
        "lightgcn": {"n_layers": 3, "l2": 1e-4, "epochs": 10, "batch_size": 4096, "lr": 5e-3},
        "simplex": {
            "n_negatives": 300,
            "margin": 0.3,
            "negative_weight": 5.0,
            "epochs": 3,
            "batch_size": 1024,
            "lr": 5e-3,
        },
        "dssm": {
            "loss": "in_batch",
            "temperature": 0.2,
            "epochs": 2,
            "batch_size": 1024,
            "lr": 2e-3,
        },
        "youtube_dnn": {"loss": "sampled_softmax", "epochs": 3, "batch_size": 1024, "lr": 2e-3},
        "fm_recall": {"loss": "bpr", "epochs": 5, "batch_size": 4096, "lr": 5e-3},
    }
)


# ---------------------------------------------------------------------------- data
def load_ml100k(data_dir: Path) -> tuple[Interactions, Interactions]:
    """(train, test) of ML-100K positives under the Cornac protocol (module docstring)."""
    from benchmarks.cf_ml100k import random_split
    from recforge.data.readers.movielens import read_movielens_100k

    data = read_movielens_100k(Path(data_dir) / "ml-100k").positives(4.0)
    train, test = random_split(data, 0.2, 123)
    return train, _known(train, test)


def load_beauty(data_dir: Path) -> tuple[Interactions, Interactions]:
    """(train, test) of Amazon Beauty, the last item of each user held out."""
    from recforge.data.readers.sequences import read_sequences
    from recforge.data.splits import leave_one_out

    folder = Path(data_dir) / "amazon-beauty"
    attrs = folder / "Beauty_item2attributes.json"
    data = read_sequences(folder / "Beauty.txt", attrs if attrs.exists() else None)
    train, test = leave_one_out(data, valid=False)
    return train, _known(train, test)


def _known(train: Interactions, test: Interactions) -> Interactions:
    """Test rows whose user and item occur in train."""
    keep = test.frame["user"].isin(set(train.frame["user"])) & test.frame["item"].isin(
        set(train.frame["item"])
    )
    return test.subset(keep.to_numpy(), "test")


DATASETS = {"ml-100k": load_ml100k, "beauty": load_beauty}


# ---------------------------------------------------------------------------- evaluation
def evaluate_model(
    name: str, params: dict[str, Any], train: Interactions, test: Interactions
) -> dict[str, Any]:
    """Fit a registered model and score it with ``recforge.evaluation.full_ranking``."""
    from recforge.evaluation import full_ranking

    t0 = time.perf_counter()
    model = registry.get(name, **params).fit(train)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = full_ranking(model, test, k=(10, 20), metrics=("recall", "ndcg"))
    return {
        **{k: float(v) for k, v in result.items() if "@" in k},
        "fit_s": fit_s,
        "eval_s": time.perf_counter() - t0,
    }


def _relevant(
    train: Interactions, test: Interactions
) -> tuple[Any, Any, np.ndarray, list[set[int]]]:
    uv, iv = train.vocabs()
    u = uv.index(test.frame["user"].to_numpy())
    i = iv.index(test.frame["item"].to_numpy())
    grouped = pd.DataFrame({"u": u, "i": i}).groupby("u")["i"].agg(set)
    return uv, iv, grouped.index.to_numpy(np.int64), list(grouped.to_numpy())


def _scores(ranked: Any, relevant: list[set[int]]) -> dict[str, float]:
    out = {}
    for k in (10, 20):
        out[f"recall@{k}"] = metrics.recall_at_k(ranked, relevant, k)
        out[f"ndcg@{k}"] = metrics.ndcg_at_k(ranked, relevant, k)
    return out


def evaluate_implicit_raw(
    kind: str, params: dict[str, Any], train: Interactions, test: Interactions
) -> dict[str, Any]:
    """implicit's ALS or BPR used directly: fit on the train CSR, ``recommend`` with its own
    seen-item filter, scored with ``recforge.metrics``."""
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from threadpoolctl import threadpool_limits

    uv, iv, users, relevant = _relevant(train, test)
    csr = train.to_csr(uv, iv)
    p = {
        k: v
        for k, v in params.items()
        if k not in ("weight_col", "use_cg", "verify_negative_samples")
    }
    p["random_state"] = 0
    cls = AlternatingLeastSquares if kind == "als" else BayesianPersonalizedRanking
    t0 = time.perf_counter()
    with threadpool_limits(1, "blas"):
        est = cls(**p)
        est.fit(csr, show_progress=False)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ranked, _ = est.recommend(users, csr[users], N=20, filter_already_liked_items=True)
    return {
        **_scores(np.asarray(ranked, dtype=np.int64), relevant),
        "fit_s": fit_s,
        "eval_s": time.perf_counter() - t0,
    }


def evaluate_gensim_raw(
    params: dict[str, Any], train: Interactions, test: Interactions
) -> dict[str, Any]:
    """gensim Word2Vec used directly: sentences = each user's items in time order, queries
    by ``KeyedVectors.most_similar(positive=user's items)`` (mean of unit vectors, cosine)."""
    from gensim.models import Word2Vec

    uv, iv, users, relevant = _relevant(train, test)
    frame = train.frame.sort_values(["user", "timestamp"], kind="stable")
    seqs = frame.groupby("user", sort=False)["item"].agg(lambda s: [str(x) for x in s])
    w2v_params = {
        "vector_size": params.get("vector_size", 64),
        "window": params.get("window", 5),
        "negative": params.get("negative", 5),
        "epochs": params.get("epochs", 10),
        "workers": params.get("num_threads", 1),
    }
    t0 = time.perf_counter()
    w2v = Word2Vec(list(seqs.to_numpy()), min_count=1, sg=1, seed=0, **w2v_params)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    raw_users = uv.ids(users)
    ranked = []
    for u in raw_users:
        history = list(dict.fromkeys(seqs[u]))
        top = w2v.wv.most_similar(positive=history, topn=20)  # excludes the query items
        ranked.append(iv.index([int(t) for t, _ in top]).tolist())
    return {**_scores(ranked, relevant), "fit_s": fit_s, "eval_s": time.perf_counter() - t0}


# ---------------------------------------------------------------------------- pipeline
PIPELINE = {
    "channels": [
        {"name": "ease", "model": "ease", "params": {"l2": 200.0}, "quota": 200},
        {"name": "als", "model": "als", "params": _ALS, "quota": 150, "index": {"kind": "hnsw"}},
        {"name": "itemcf", "model": "itemcf", "params": _ITEMCF, "quota": 100},
        {"name": "item2vec", "model": "item2vec", "params": _W2V, "quota": 50},
    ],
    "fallback": "most_popular",
    "merge": "quota",
}


def evaluate_pipeline(train: Interactions, test: Interactions) -> dict[str, Any]:
    """``PIPELINE`` fitted on train: merged recall@100/200/500 and each channel's share."""
    from recforge.pipeline import RecallPipeline, evaluate_recall

    t0 = time.perf_counter()
    pipe = RecallPipeline.from_config(PIPELINE).fit(train)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = evaluate_recall(pipe, test, ks=(100, 200, 500))
    return {**out, "fit_s": fit_s, "eval_s": time.perf_counter() - t0}


# ---------------------------------------------------------------------------- run
def run(
    data_dir: str | Path,
    out: str | Path | None = None,
    *,
    datasets: Iterable[str] = ("ml-100k", "beauty"),
    only: Iterable[str] | None = None,
    peers: bool = True,
    pipeline: bool = True,
) -> dict[str, Any]:
    """Run the zoo; returns ``{"rows": [...], "markdown": str, ...}``.

    datasets: any of "ml-100k", "beauty". only: restrict to these model names.
    peers: include raw implicit ALS/BPR and gensim Word2Vec.
    pipeline: on ML-100K, also evaluate the multi-channel ``PIPELINE`` (recall@100/200/500).
    """
    datasets = tuple(datasets)
    only = None if only is None else list(only)
    names = [n for n in registry.available("retrieval") if only is None or n in only]
    rows: list[dict[str, Any]] = []
    pipeline_result: dict[str, Any] | None = None
    for ds in datasets:
        if ds not in DATASETS:
            raise DataError(f"recall_zoo: unknown dataset {ds!r}; choose from {sorted(DATASETS)}.")
        train, test = DATASETS[ds](Path(data_dir))
        log.info("%s: %d train rows, %d test rows", ds, len(train), len(test))
        ds_params = PARAMS.get(ds, {})
        # (shown name, source, params, evaluate(params, train, test))
        jobs: list[tuple[str, str, dict[str, Any], Callable[..., dict[str, Any]]]] = []
        for name in names:
            if name not in ds_params:  # defaults can take far longer than this bench's budget
                log.warning("%s: no PARAMS[%r][%r] entry; skipped", ds, ds, name)
                rows.append(
                    {
                        "dataset": ds,
                        "model": name,
                        "source": "recforge",
                        "params": {},
                        "skipped": True,
                    }
                )
                continue
            jobs.append((name, "recforge", ds_params[name], partial(evaluate_model, name)))
        if peers:
            for kind in ("als", "bpr"):
                p = dict(ds_params.get(kind, {}))
                jobs.append(
                    (f"implicit {kind} (raw)", "implicit", p, partial(evaluate_implicit_raw, kind))
                )
            p = dict(ds_params.get("item2vec", {}))
            jobs.append(("gensim word2vec (raw)", "gensim", p, evaluate_gensim_raw))
        for name, source, shown, evaluate in jobs:
            row: dict[str, Any] = {"dataset": ds, "model": name, "source": source, "params": shown}
            try:
                row.update(evaluate(shown, train, test))
            except Exception as e:  # noqa: BLE001 - one model failing must not lose the table
                log.warning("%s on %s failed: %s\n%s", name, ds, e, traceback.format_exc())
                row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
            rows.append(row)
            log.info(
                "%s %s: %s",
                ds,
                name,
                {
                    k: (round(v, 4) if isinstance(v, float) else v)
                    for k, v in row.items()
                    if k != "params"
                },
            )
        if ds == "ml-100k" and pipeline:
            pipeline_result = evaluate_pipeline(train, test)
            log.info("pipeline: %s", pipeline_result)
    result = {
        "bench": "recall_zoo",
        "date": _dt.date.today().isoformat(),
        "rows": rows,
        "pipeline": pipeline_result,
        "environment": _environment(),
        "cornac_bpr_ml100k": CORNAC_BPR,
    }
    command = COMMAND
    if only is not None:
        command += f" --models {','.join(names)}"
    if tuple(datasets) != ("ml-100k", "beauty"):
        command += f" --datasets {','.join(datasets)}"
    result["command"] = command
    result["markdown"] = to_markdown(result)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "recall_zoo.json").write_text(
            json.dumps({k: v for k, v in result.items() if k != "markdown"}, indent=2, default=str)
        )
        (out / "recall_zoo.md").write_text(result["markdown"])
    return result


def _environment() -> dict[str, str]:
    import faiss
    import gensim
    import implicit

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "implicit": implicit.__version__,
        "gensim": gensim.__version__,
        "faiss": faiss.__version__,
        "threads": str(THREADS),
    }


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else "-"


def to_markdown(result: dict[str, Any]) -> str:
    env = ", ".join(f"{k} {v}" for k, v in result["environment"].items())
    lines = [
        SUBSECTION,
        "",
        f"Run on {result['date']} ({env}) with:",
        "",
        f"    {result.get('command', COMMAND)}",
        "",
        "Full ranking over all train items, the user's train items excluded, binary-gain NDCG "
        "(`recforge.evaluation.full_ranking`; the raw peers are scored with `recforge.metrics` "
        "on the same split). ML-100K: ratings >= 4, random 80/20 split with seed 123, test "
        "pairs with unseen users/items dropped (Cornac's protocol; Cornac's BPR: Recall@10 "
        f"{CORNAC_BPR['recall@10']}, NDCG@10 {CORNAC_BPR['ndcg@10']}). Beauty: all "
        "interactions, the last item of each user is the test target.",
        "",
    ]
    for ds in dict.fromkeys(r["dataset"] for r in result["rows"]):
        lines += [
            f"**{ds}**",
            "",
            "| Model | Source | Recall@10 | NDCG@10 | Recall@20 | NDCG@20 | Fit (s) | Params |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in result["rows"] if r["dataset"] == ds):
            shown = (
                ", ".join(f"{k}={v}" for k, v in r["params"].items() if k != "num_threads")
                or "defaults"
            )
            if r.get("skipped"):
                lines.append(
                    f"| {r['model']} | {r['source']} | not run: no entry in `PARAMS` | | | | | |"
                )
                continue
            if "error" in r:
                lines.append(
                    f"| {r['model']} | {r['source']} | error: {r['error']} | | | | | {shown} |"
                )
                continue
            lines.append(
                f"| {r['model']} | {r['source']} | {_fmt(r.get('recall@10'))} | {_fmt(r.get('ndcg@10'))} | "
                f"{_fmt(r.get('recall@20'))} | {_fmt(r.get('ndcg@20'))} | {r['fit_s']:.1f} | {shown} |"
            )
        lines.append("")
    p = result.get("pipeline")
    if p:
        chans = [c["name"] for c in PIPELINE["channels"]]
        quotas = ", ".join(f"{c['name']} {c['quota']}" for c in PIPELINE["channels"])
        lines += [
            f"**Multi-channel recall on ml-100k** (`recforge.pipeline.RecallPipeline`, merge "
            f'"quota", quotas {quotas}, als served by HNSW, most-popular fill; '
            f"`evaluate_recall`): fit {p['fit_s']:.1f}s, evaluation {p['eval_s']:.1f}s.",
            "",
            "| Recall@100 | Recall@200 | Recall@500 | "
            + " | ".join(f"{c} only" for c in chans)
            + " | fallback only |",
            "|---|---|---|" + "---|" * (len(chans) + 1),
            f"| {p['recall@100']:.4f} | {p['recall@200']:.4f} | {p['recall@500']:.4f} | "
            + " | ".join(f"{p[f'unique_recall@500/{c}']:.4f}" for c in chans)
            + f" | {p['fallback_recall@500']:.4f} |",
            "",
            '"X only": recall of hits in the merged top 500 that only channel X found.',
            "",
        ]
    return "\n".join(lines)


def update_docs(markdown: str, path: str | Path, section: str = SECTION) -> Path:
    """Replace (or append) ``markdown``'s ``### `` subsection inside ``section`` of a
    markdown file, creating the section if missing; everything else stays."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    title = markdown.splitlines()[0].rstrip()
    block = markdown.rstrip("\n").splitlines()
    start = next((i for i, line in enumerate(lines) if line.rstrip() == section), None)
    if start is None:
        lines += ["", section, "", *block]
    else:
        end = next(
            (j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines)
        )
        sub = next((j for j in range(start + 1, end) if lines[j].rstrip() == title), None)
        if sub is None:
            insert = end
            while insert > start + 1 and not lines[insert - 1].strip():
                insert -= 1
            lines[insert:insert] = ["", *block]
        else:
            sub_end = next(
                (
                    j
                    for j in range(sub + 1, end)
                    if lines[j].startswith("### ") or lines[j].startswith("## ")
                ),
                end,
            )
            tail_blank = [""] if sub_end < len(lines) else []
            lines[sub:sub_end] = [*block, *tail_blank]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", default=None, help="folder holding ml-100k/ and amazon-beauty/"
    )
    parser.add_argument("--out", default=None, help="folder for recall_zoo.json / .md")
    parser.add_argument(
        "--docs", default=None, help="markdown file to update, e.g. docs/BENCHMARKS.md"
    )
    parser.add_argument("--datasets", default="ml-100k,beauty")
    parser.add_argument(
        "--models", default=None, help="comma-separated model names (default: all retrieval)"
    )
    parser.add_argument("--no-peers", action="store_true", help="skip raw implicit / gensim")
    parser.add_argument(
        "--no-pipeline", action="store_true", help="skip the multi-channel pipeline"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from benchmarks import resolve_data_dir

    result = run(
        resolve_data_dir(args.data_dir),
        out=args.out,
        datasets=args.datasets.split(","),
        only=args.models.split(",") if args.models else None,
        peers=not args.no_peers,
        pipeline=not args.no_pipeline,
    )
    print(result["markdown"])
    if args.docs:
        print(f"updated {update_docs(result['markdown'], args.docs)}")


if __name__ == "__main__":
    main()
