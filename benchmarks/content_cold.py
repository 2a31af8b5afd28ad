"""Cold-item content recall: the text encoder trained here (``text_encoder``) against TF-IDF
(``content``) on items nobody interacted with in training, ML-100K titles + genres and
Amazon Beauty attributes.

Protocol
--------
* **Items held out entirely.** The items with at least one interaction are shuffled (seed
  ``SEED``); ``TEST_FRAC`` of them are the *test cold* items, ``VALID_FRAC`` the *validation
  cold* items, the rest are warm. Every interaction with a cold item (validation or test) is
  removed from training; the models train on the warm items' interactions only. The
  catalogue's text (item_features) is known for every item, as it is when a new item is
  listed: both models put the items that only ``item_features`` holds into their catalogue
  (``feature_items=True``) and embed them from their text.
* **Task.** For every user with a training history and at least one interaction with a
  cold item of the split, rank the split's cold items (the cold-item channel of a recall
  funnel: warm items are left to the CF channels) by the user's vector, and score the top
  ``K`` against the user's interactions with those items: Recall@K and NDCG@K (binary
  gains, ``recforge.metrics`` definitions), averaged over users.
* **Text.** ML-100K: ``title`` + ``genres=...`` tokens (from ``u.item``). Beauty: the item's
  attribute ids as ``attributes=...`` tokens (``Beauty_item2attributes.json`` holds
  category/brand ids only; there are no titles in the prepared files).
* **Models.** ``content`` TF-IDF (uni+bigrams, SVD to ``dim``; user = mean of its items'
  vectors); ``text_encoder`` (WordPiece tokenizer + Transformer trained here with its
  default objective: a user's sampled history -> the held-out item, in-batch InfoNCE with
  log-Q correction; user = mean of its items' vectors); ``text_encoder+tfidf``, the same
  encoder trained and served with a TF-IDF/SVD part beside it (``tfidf_weight``). A random
  ranking of the cold items gives the scale. Each row's settings are chosen on the
  validation cold items (``GRID``, best NDCG@K); the test cold items are scored once, with
  that choice.

Run it::

    python -m benchmarks.content_cold --data-dir ../shared/data --docs docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import report
from recforge import models
from recforge.data.interactions import Interactions
from recforge.metrics import rank_metrics_from_hits
from recforge.topk import topk

log = logging.getLogger(__name__)

SECTION = "## Recall"
SUBSECTION = "### Cold items: a text encoder trained here vs TF-IDF"
COMMAND = "python -m benchmarks.content_cold --data-dir ../shared/data --docs docs/BENCHMARKS.md"
SEED = 2024
TEST_FRAC = 0.15
VALID_FRAC = 0.10
K = 20
THREADS = 1

# dataset -> (text_columns, token_columns)
TEXT = {"ml100k": (["title"], ["genres"]), "beauty": ([], ["attributes"])}
# row -> (registered model, candidate settings chosen on the validation cold items)
GRID: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "content": ("content", [{"dim": 64}, {"dim": 128}, {"dim": 256}]),
    "text_encoder": ("text_encoder", [{"epochs": 3}, {"epochs": 5}]),
    "text_encoder+tfidf": ("text_encoder", [{"tfidf_weight": 0.5}]),
}


def load(name: str, data_dir: str | Path) -> Interactions:
    from recforge.data.readers import load_dataset

    return load_dataset({"ml100k": "ml-100k", "beauty": "amazon-beauty"}[name], data_dir)


def split_items(inter: Interactions, seed: int = SEED) -> dict[str, np.ndarray]:
    """Raw item ids: {"valid": ..., "test": ...} cold items, the rest warm."""
    items = np.sort(inter.frame["item"].unique())
    order = np.random.default_rng(seed).permutation(len(items))
    n_test, n_valid = int(round(TEST_FRAC * len(items))), int(round(VALID_FRAC * len(items)))
    return {
        "test": items[order[:n_test]],
        "valid": items[order[n_test : n_test + n_valid]],
    }


def cold_split(inter: Interactions) -> tuple[Interactions, dict[str, dict[str, set]]]:
    """(training interactions without any cold item, {split: {user: cold items of the
    split the user interacted with}})."""
    cold = split_items(inter)
    frame = inter.frame
    is_cold = frame["item"].isin(np.concatenate(list(cold.values())))
    train = Interactions(
        frame[~is_cold].reset_index(drop=True),
        inter.user_features,
        inter.item_features,
        name=f"{inter.name}-warm",
    )
    targets = {}
    for split, ids in cold.items():
        part = frame[frame["item"].isin(ids)]
        targets[split] = {"items": ids, "users": part.groupby("user")["item"].agg(set).to_dict()}
    return train, targets


def evaluate(
    user_vecs: np.ndarray, item_vecs: np.ndarray, model, split: dict[str, Any]
) -> dict[str, float]:
    """Recall@K / NDCG@K of ranking the split's cold items for its users that the model
    knows (user_vecs (n_users, d) and item_vecs (n_items, d) in the model's index space)."""
    users = [u for u in split["users"] if u in model.user_vocab_]
    u_idx = model.user_vocab_.index(users)
    cand = model.item_vocab_.index(split["items"])  # every cold item is in the catalogue
    scores = user_vecs[u_idx] @ item_vecs[cand].T  # (U, C)
    top, _ = topk(scores, min(K, len(cand)))
    ranked = split["items"][top]  # (U, K) raw ids
    rel = [split["users"][u] for u in users]
    hits = np.array([[i in r for i in row] for row, r in zip(ranked, rel)], dtype=bool)
    m = rank_metrics_from_hits(hits, np.array([len(r) for r in rel]), K, ("recall", "ndcg"))
    return {
        "recall": float(np.nanmean(m["recall"])),
        "ndcg": float(np.nanmean(m["ndcg"])),
        "users": len(users),
    }


def fit_model(name: str, train: Interactions, dataset: str, params: dict[str, Any]):
    """Fit the row ``name`` of ``GRID`` (its registered model) with ``params``."""
    model_name = GRID[name][0]
    text, tokens = TEXT[dataset]
    base = {"text_columns": text, "token_columns": tokens, "feature_items": True}
    if model_name == "content":
        base["encoder"] = "tfidf"
    else:
        base["num_threads"] = THREADS
    return models.get(model_name, **(base | params)).fit(train)


def random_ranking(model, split: dict[str, Any], seed: int = SEED) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    n_users, n_items = model.n_users, model.n_items
    return evaluate(
        rng.normal(size=(n_users, 8)).astype(np.float32),
        rng.normal(size=(n_items, 8)).astype(np.float32),
        model,
        split,
    )


def run_dataset(
    dataset: str, data_dir: str | Path, model_names: tuple[str, ...]
) -> list[dict[str, Any]]:
    inter = load(dataset, data_dir)
    train, targets = cold_split(inter)
    rows = []
    for name in model_names:
        best: tuple[float, dict[str, Any], Any, float] | None = None
        tried = []
        for params in GRID[name][1]:
            t0, c0 = time.perf_counter(), time.process_time()
            model = fit_model(name, train, dataset, params)
            fit_s = time.perf_counter() - t0
            cpu_s = time.process_time() - c0
            val = evaluate(model.user_factors_, model.item_factors_, model, targets["valid"])
            tried.append({"params": params, **val, "fit_s": fit_s, "cpu_s": cpu_s})
            log.info("content_cold %s %s %s valid %s (%.0fs)", dataset, name, params, val, fit_s)
            if best is None or val["ndcg"] > best[0]:
                best = (val["ndcg"], params, model, fit_s, cpu_s)
        assert best is not None
        _, params, model, fit_s, cpu_s = best
        test = evaluate(model.user_factors_, model.item_factors_, model, targets["test"])
        rows.append(
            {
                "dataset": dataset,
                "model": name,
                "params": params,
                "valid": next(t for t in tried if t["params"] is params),
                "tried": tried,
                "test": test,
                "fit_s": fit_s,
                "cpu_s": cpu_s,
                "load": f"{os.getloadavg()[0]:.1f}",
            }
        )
    rows.append(
        {
            "dataset": dataset,
            "model": "random",
            "params": {},
            "valid": random_ranking(model, targets["valid"]),
            "tried": [],
            "test": random_ranking(model, targets["test"]),
            "fit_s": 0.0,
            "cpu_s": 0.0,
            "load": f"{os.getloadavg()[0]:.1f}",
        }
    )
    rows.append(
        {
            "dataset": dataset,
            "sizes": {
                "items": int(inter.frame["item"].nunique()),
                "cold_test": len(targets["test"]["items"]),
                "cold_valid": len(targets["valid"]["items"]),
                "train_rows": len(train),
                "rows": len(inter),
            },
        }
    )
    return rows


def run(
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    *,
    datasets: tuple[str, ...] = ("ml100k", "beauty"),
    model_names: tuple[str, ...] = tuple(GRID),
) -> dict[str, Any]:
    """Every model on every dataset; returns ``{"rows": [...], "markdown": ...}``."""
    from benchmarks import resolve_data_dir

    data_dir = resolve_data_dir(data_dir)
    rows: list[dict[str, Any]] = []
    for ds in datasets:
        rows += run_dataset(ds, data_dir, model_names)
    result = {"rows": rows, "date": _dt.date.today().isoformat()}
    result["markdown"] = to_markdown(result)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "content_cold.md").write_text(result["markdown"])
    return result


def _fmt(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        SUBSECTION,
        "",
        f"{int(TEST_FRAC * 100)}% of the items (test) and {int(VALID_FRAC * 100)}% "
        f"(validation) are held out of training entirely (all their interactions removed; "
        f"seed {SEED}); the models see only their text. For each user with a training "
        f"history, the split's cold items are ranked by the user's vector; Recall@{K} / "
        f"NDCG@{K} against the user's interactions with them. Settings per model chosen on "
        f"the validation cold items (best NDCG@{K} over `GRID`), test scored once. ML-100K: "
        f"title + genres; Beauty: attribute ids (the prepared files carry no titles). "
        f"Text encoder: {THREADS} torch thread. See `benchmarks/content_cold.py`.",
        "",
        f"    {COMMAND}",
        "",
        f"| dataset | model | chosen on validation | valid NDCG@{K} | test Recall@{K} | "
        f"test NDCG@{K} | test users | fit s | fit CPU s | load avg | date |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    sizes = []
    for r in result["rows"]:
        if "sizes" in r:
            s = r["sizes"]
            sizes.append(
                f"**{r['dataset']}**: {s['items']} items, {s['cold_test']} test cold / "
                f"{s['cold_valid']} validation cold; {s['train_rows']} of {s['rows']} "
                f"interactions left for training."
            )
            continue
        lines.append(
            f"| {r['dataset']} | {r['model']} | {_fmt(r['params'])} | {r['valid']['ndcg']:.4f} | "
            f"{r['test']['recall']:.4f} | {r['test']['ndcg']:.4f} | {r['test']['users']} | "
            f"{r['fit_s']:.0f} | {r['cpu_s']:.0f} | {r['load']} | {result['date']} |"
        )
    lines += ["", *sizes, ""]
    tried = [r for r in result["rows"] if r.get("tried")]
    if tried:
        lines += [f"Validation NDCG@{K} of every setting tried:", ""]
        for r in tried:
            cells = "; ".join(f"{_fmt(t['params'])}: {t['ndcg']:.4f}" for t in r["tried"])
            lines.append(f"- {r['dataset']} {r['model']}: {cells}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder holding ml-100k/, amazon-beauty/")
    parser.add_argument("--out", default=None)
    parser.add_argument("--docs", default=None, help="markdown file to update")
    parser.add_argument("--datasets", default="ml100k,beauty")
    parser.add_argument("--models", default=",".join(GRID))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    result = run(
        args.data_dir,
        args.out,
        datasets=tuple(args.datasets.split(",")),
        model_names=tuple(args.models.split(",")),
    )
    report(result, args.docs, SECTION)


if __name__ == "__main__":
    main()
