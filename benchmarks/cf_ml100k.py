"""Recall baselines on MovieLens 100K: MostPopular, ItemCF, UserCF against implicit's
item-item nearest neighbours (Cosine, BM25, TF-IDF), all on one split in one run.

Protocol (close to the Cornac README setting for ML-100K implicit feedback; Cornac splits
all rated rows and counts test ratings >= 4 as relevant, here only positive rows are split
and trained on, so Cornac's BPR figures are context, not a like-for-like comparison):

* ratings >= 4 are positives (55,375 of 100,000 rows); the other rows are dropped;
* the positive rows are split 80/20 at random, ``numpy.random.default_rng(123)``
  permutation, first 80 % train;
* test pairs whose user or item never occurs in train are dropped (no model can rank
  them; Cornac's ``exclude_unknowns``);
* full ranking: every model scores all train items for each test user, the user's train
  items are excluded, and Recall@K / NDCG@K (binary gains, ``recforge.metrics``) are
  averaged over test users: ``recforge.evaluation.full_ranking`` for recforge models, the
  same metric functions on ``recommend(..., filter_already_liked_items=True)`` for implicit;
* hyperparameters of ItemCF, UserCF and each implicit model (its ``K``) are chosen on a
  validation split carved from train (80/20 of the train rows, seed 124) by Recall@10,
  then refit on all of train; the test split is never looked at while tuning.

Run it::

    python -m benchmarks.cf_ml100k --data-dir ../shared/data --docs docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import json
import logging
import platform
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recforge import metrics
from recforge.data.interactions import Interactions
from recforge.data.readers.movielens import read_movielens_100k
from recforge.data.vocab import IdVocab
from recforge.evaluation import full_ranking
from recforge.models.retrieval.knn import ItemCF, UserCF
from recforge.models.retrieval.popular import MostPopular

log = logging.getLogger(__name__)

SEED = 123
TEST_FRAC = 0.2
THRESHOLD = 4.0
KS = (10, 20)
SECTION = "## Recall baselines on MovieLens 100K"
COMMAND = "python -m benchmarks.cf_ml100k --data-dir ../shared/data --docs docs/BENCHMARKS.md"

# Validation grids (small on purpose: every fit takes well under a second on ML-100K).
ITEMCF_GRID: dict[str, list[Any]] = {
    # alpha = 0.5 would make asymmetric_cosine a copy of cosine: try both sides instead
    "similarity": [
        {"similarity": "cosine"},
        {"similarity": "jaccard"},
        {"similarity": "asymmetric_cosine", "alpha": 0.25},
        {"similarity": "asymmetric_cosine", "alpha": 0.75},
    ],
    "k": [20, 50, 100, 200, 500],
    "shrink": [0.0, 10.0],
    "iuf": [False, True],
}
USERCF_GRID: dict[str, list[Any]] = {
    "similarity": ["cosine", "jaccard"],
    "k": [20, 50, 100, 200, 500],
    "iif": [False, True],
}
IMPLICIT_K_GRID = [20, 50, 100, 200, 500]
# Settings that won on validation when the committed table was made (``run(tune=False)``
# and the real-data test use them).
TUNED: dict[str, dict[str, Any]] = {
    "itemcf": {"similarity": "cosine", "k": 20, "shrink": 10.0, "iuf": True},
    "usercf": {"similarity": "cosine", "k": 100, "iif": True},
    "implicit_cosine": {"K": 500},
    "implicit_bm25": {"K": 500},
    "implicit_tfidf": {"K": 500},
}


# ---------------------------------------------------------------------------- data
def load_positives(data_dir: str | Path) -> Interactions:
    """ML-100K rows with rating >= 4 (user, item, rating, timestamp; raw int ids)."""
    return read_movielens_100k(Path(data_dir) / "ml-100k").positives(THRESHOLD)


def random_split(
    data: Interactions, test_frac: float = TEST_FRAC, seed: int = SEED
) -> tuple[Interactions, Interactions]:
    """Rows split at random: (train, test), ``test_frac`` of the rows in test, both in
    their original row order."""
    order = np.random.default_rng(seed).permutation(len(data))
    n_train = int(round(len(data) * (1.0 - test_frac)))
    train = data.subset(np.sort(order[:n_train]), "train")
    return train, data.subset(np.sort(order[n_train:]), "test")


def known_test(train: Interactions, test: Interactions) -> Interactions:
    """Test rows whose user and item both occur in train, one row per (user, item)."""
    frame = test.frame
    keep = frame["user"].isin(train.frame["user"]) & frame["item"].isin(train.frame["item"])
    keep &= ~frame.duplicated(["user", "item"])
    return test.subset(keep.to_numpy(), f"{test.name}-known")


def held_out_sets(
    train: Interactions, test: Interactions
) -> tuple[IdVocab, IdVocab, np.ndarray, list[set[int]]]:
    """Train vocabularies (the ones a model fitted on ``train`` builds), the test users'
    internal indices, sorted, and their relevant internal item indices; test pairs with a
    user or item unknown to train are dropped."""
    user_vocab, item_vocab = train.vocabs()
    u = user_vocab.index(test.frame["user"].to_numpy(), unknown="mask")
    i = item_vocab.index(test.frame["item"].to_numpy(), unknown="mask")
    keep = (u >= 0) & (i >= 0)
    grouped = pd.DataFrame({"u": u[keep], "i": i[keep]}).groupby("u")["i"].agg(set)
    return user_vocab, item_vocab, grouped.index.to_numpy(np.int64), list(grouped.to_numpy())


# ---------------------------------------------------------------------------- evaluation
def score_ranked(
    ranked: np.ndarray, relevant: list[set[int]], ks: Iterable[int] = KS
) -> dict[str, float]:
    """Recall@k and NDCG@k of ranked internal item indices (n_users, >= max(ks)), with the
    ``recforge.metrics`` definitions that ``full_ranking`` uses."""
    out = {}
    for k in ks:
        out[f"recall@{k}"] = metrics.recall_at_k(ranked, relevant, k)
        out[f"ndcg@{k}"] = metrics.ndcg_at_k(ranked, relevant, k)
    return out


def evaluate_recforge(
    model: Any, train: Interactions, test: Interactions, ks: Iterable[int] = KS
) -> dict[str, float]:
    """Fit a recforge retrieval model on train; ``full_ranking`` Recall/NDCG on the known
    part of test, plus fit seconds."""
    ks = tuple(ks)
    t0 = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - t0
    res = full_ranking(model, known_test(train, test), k=ks, metrics=("recall", "ndcg"))
    return {**{f"{m}@{k}": res[f"{m}@{k}"] for k in ks for m in ("recall", "ndcg")}, "fit_s": fit_s}


def evaluate_implicit(
    factory: Callable[[], Any], train: Interactions, test: Interactions, ks: Iterable[int] = KS
) -> dict[str, float]:
    """The same protocol for an ``implicit`` recommender built by ``factory()``: its
    ``recommend(..., filter_already_liked_items=True)`` top k scored with the same metrics."""
    ks = tuple(ks)
    user_vocab, item_vocab, users, relevant = held_out_sets(train, test)
    user_items = sp.csr_matrix(train.to_csr(user_vocab, item_vocab))
    model = factory()
    with warnings.catch_warnings():
        # implicit 0.7 hands its own normalised matrix to a CSR check and warns about it
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        t0 = time.perf_counter()
        model.fit(user_items, show_progress=False)
        fit_s = time.perf_counter() - t0
        ranked, _ = model.recommend(
            users, user_items[users], N=max(ks), filter_already_liked_items=True
        )
    return {**score_ranked(np.asarray(ranked, dtype=np.int64), relevant, ks), "fit_s": fit_s}


def _implicit_factories() -> dict[str, Callable[..., Any]]:
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender, TFIDFRecommender

    # one thread: the recforge models are single-threaded NumPy/SciPy too
    return {
        "implicit_cosine": lambda K: CosineRecommender(K=K, num_threads=1),
        "implicit_bm25": lambda K: BM25Recommender(K=K, num_threads=1),
        "implicit_tfidf": lambda K: TFIDFRecommender(K=K, num_threads=1),
    }


def _grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination; a dict among a key's values is merged in as several parameters."""
    out = []
    for values in itertools.product(*grid.values()):
        params: dict[str, Any] = {}
        for key, value in zip(grid, values):
            params.update(value if isinstance(value, dict) else {key: value})
        out.append(params)
    return out


def tune(train: Interactions, seed: int = SEED + 1) -> dict[str, dict[str, Any]]:
    """Best parameters per model by validation Recall@10 on a split of ``train`` only."""
    fit_part, valid = random_split(train, TEST_FRAC, seed)
    best: dict[str, dict[str, Any]] = {}
    for name, cls, grid in (("itemcf", ItemCF, ITEMCF_GRID), ("usercf", UserCF, USERCF_GRID)):
        scored = [
            (evaluate_recforge(cls(**p), fit_part, valid, (10,))["recall@10"], i, p)
            for i, p in enumerate(_grid(grid))
        ]
        best[name] = max(scored, key=lambda t: (t[0], -t[1]))[2]
        log.info(
            "tuned %s: %s (valid recall@10 %.4f)", name, best[name], max(s for s, _, _ in scored)
        )
    for name, factory in _implicit_factories().items():
        scored = [
            (evaluate_implicit(lambda K=K, f=factory: f(K), fit_part, valid, (10,))["recall@10"], K)
            for K in IMPLICIT_K_GRID
        ]
        best[name] = {"K": max(scored, key=lambda t: (t[0], -t[1]))[1]}
        log.info("tuned %s: %s", name, best[name])
    return best


# ---------------------------------------------------------------------------- the run
def run(
    data_dir: str | Path,
    out: str | Path | None = None,
    *,
    tune_params: bool = True,
    implicit_models: bool = True,
) -> dict[str, Any]:
    """Run the benchmark; returns ``{"rows": [...], "params": {...}, "protocol": {...}, "markdown": str}``.

    tune_params: choose hyperparameters on the validation split (else use ``TUNED``).
    implicit_models: include the implicit peers.
    out: folder to write ``cf_ml100k.json`` and ``cf_ml100k.md`` into.
    """
    data = load_positives(data_dir)
    train, test = random_split(data)
    params = tune(train) if tune_params else {k: dict(v) for k, v in TUNED.items()}
    if not implicit_models:
        params = {k: v for k, v in params.items() if not k.startswith("implicit")}
    rows = []

    def add(name: str, shown: dict[str, Any], result: dict[str, float]) -> None:
        rows.append({"model": name, "params": shown, **result})
        log.info("%s %s: %s", name, shown, {k: round(v, 4) for k, v in result.items()})

    add("most_popular", {}, evaluate_recforge(MostPopular(), train, test))
    add("itemcf", params["itemcf"], evaluate_recforge(ItemCF(**params["itemcf"]), train, test))
    add("usercf", params["usercf"], evaluate_recforge(UserCF(**params["usercf"]), train, test))
    if implicit_models:
        for name, factory in _implicit_factories().items():
            add(
                name,
                params[name],
                evaluate_implicit(lambda f=factory, n=name: f(params[n]["K"]), train, test),
            )
    _, _, users, relevant = held_out_sets(train, test)
    result = {
        "bench": "cf_ml100k",
        "date": _dt.date.today().isoformat(),
        "protocol": {
            "positives": f"rating >= {THRESHOLD:g}",
            "split": f"random 80/20 of positive rows, numpy default_rng({SEED})",
            "n_train": len(train),
            "n_test_pairs": int(sum(len(r) for r in relevant)),
            "n_test_users": len(users),
            "tuned_on_validation": tune_params,
        },
        "params": params,
        "rows": rows,
        "environment": _environment(),
    }
    result["markdown"] = to_markdown(result)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "cf_ml100k.json").write_text(
            json.dumps({k: v for k, v in result.items() if k != "markdown"}, indent=2)
        )
        (out / "cf_ml100k.md").write_text(result["markdown"])
    return result


def _environment() -> dict[str, str]:
    import scipy

    env = {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__}
    try:
        import implicit

        env["implicit"] = implicit.__version__
    except ImportError:  # pragma: no cover - implicit is a dependency
        pass
    return env


def to_markdown(result: dict[str, Any]) -> str:
    """The docs section: protocol, command, date and the table."""
    p = result["protocol"]
    env = ", ".join(f"{k} {v}" for k, v in result["environment"].items())
    lines = [
        SECTION,
        "",
        f"Run on {result['date']} ({env}; 1 thread for every model) with:",
        "",
        f"    {COMMAND}",
        "",
        f"MovieLens 100K, positives = {p['positives']}; {p['split']}; {p['n_train']} train rows, "
        f"{p['n_test_pairs']} test pairs over {p['n_test_users']} users (test pairs with an item "
        "or user unseen in train dropped). Full ranking over all train items, the user's train "
        "items excluded; binary-gain NDCG. Hyperparameters "
        + (
            "chosen on a validation split of train (80/20, seed 124) by Recall@10"
            if p["tuned_on_validation"]
            else "fixed (`TUNED`)"
        )
        + "; the test split is used once.",
        "",
        "Fit times are wall-clock seconds on a shared machine: compare them within one table only.",
        "",
        "| Model | Params | Recall@10 | NDCG@10 | Recall@20 | NDCG@20 | Fit (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        shown = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        lines.append(
            f"| {r['model']} | {shown} | {r['recall@10']:.4f} | {r['ndcg@10']:.4f} | "
            f"{r['recall@20']:.4f} | {r['ndcg@20']:.4f} | {r['fit_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def update_docs(markdown: str, path: str | Path) -> Path:
    """Replace (or append) this bench's section in a markdown file; other sections stay."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == SECTION), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + markdown
    else:
        end = next(
            (j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines)
        )
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + markdown + ("\n" + tail if tail else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder holding ml-100k/ (default: RECFORGE_DATA_DIR or ../shared/data)",
    )
    parser.add_argument("--out", default=None, help="folder for cf_ml100k.json / .md")
    parser.add_argument(
        "--docs",
        default=None,
        help="markdown file whose section to update, e.g. docs/BENCHMARKS.md",
    )
    parser.add_argument("--no-tune", action="store_true", help="use the committed TUNED parameters")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from benchmarks import resolve_data_dir

    result = run(resolve_data_dir(args.data_dir), out=args.out, tune_params=not args.no_tune)
    print(result["markdown"])
    if args.docs:
        print(f"updated {update_docs(result['markdown'], args.docs)}")


if __name__ == "__main__":
    main()
