"""Learning to rank on recall candidates: does a ranking stage beat the best recall
channel? Pointwise DeepFM, listwise DeepFM (softmax over each user's list) and LambdaMART
re-rank the merged candidates of ItemCF, EASE and MostPopular on MovieLens 100K.

Protocol
--------
* ``user_temporal_split``: per user the latest 10 % of rows to test, the 10 % before to
  validation, the rest to train (the per-user protocol; it leaks other users' future into
  train, as the published ML-100K numbers do).
* **Ranker training data** (what the funnel feeds the ranker): the channels are fitted on
  train; each user's top ``K`` of every channel (train items excluded), merged, are the
  user's candidate list; a candidate is labelled 1 if the user consumed it in the
  validation period. Features: user, item, age band, gender, occupation, genres, release
  year, per channel the candidate's rank (``K`` + 1 when the channel did not return it),
  score and gap to the channel's best score for that user (``gap_<channel>``, NaN when
  the channel did not return it), and the user's and item's volume in the channels'
  training log (``user_activity``, ``item_pop``: log(1 + rows)). The gaps and volumes are
  computed by ``recforge.pipeline.candidate_features`` (``gap_to_best``, ``with_counts``),
  the code that builds a served ranker's inputs. The test run uses the gaps and leaves the
  volumes out (``UNUSED``: they lowered validation NDCG@10, ``--validation``). 10 % of
  these users (seed ``SEED``) are held out to early-stop the rankers (never the test
  period).
* ``--validation``: LambdaMART with and without the gap/volume features on the
  validation-labelled lists only, over 10 user folds: fold f is scored, fold f + 1
  early-stops, the other 8 train (a list is never scored by a model that stopped on it);
  NDCG@10 over every user, and its paired difference to EASE's own order of the same
  lists (mean +- standard error over users).
* **Test**: the channels are refitted on train + validation; each user's merged top-``K``
  (train and validation items excluded) is scored by each ranker; NDCG@10 and Recall@10
  of the top 10 against the user's test items, next to each channel's own top 10 and to
  the merged order (candidates in order of their best channel rank) at the same k.
* Rankers: DeepFM (embedding 16, MLP (128, 64), Adam lr 1e-3, batch 1024, at most
  ``EPOCHS`` epochs on validation AUC) with ``loss="bce"`` (pointwise) or
  ``list_loss="softmax"`` (listwise, lists = users); LambdaMART (LightGBM lambdarank,
  num_leaves 31, lr 0.05, at most 300 trees, early stopping on validation NDCG@10).

Run it::

    python -m benchmarks.ltr_funnel --data-dir ../shared/data --docs docs/BENCHMARKS.md
    python -m benchmarks.ltr_funnel --data-dir ../shared/data --validation
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
import pandas as pd

from benchmarks import report
from recforge import models
from recforge.data.interactions import Interactions
from recforge.data.splits import user_temporal_split
from recforge.metrics import ndcg_at_k, recall_at_k
from recforge.pipeline.candidate_features import gap_to_best, with_counts

log = logging.getLogger(__name__)

SECTION = "## Ranking quality"
SUBSECTION = "### Learning to rank on recall candidates (ML-100K funnel)"
COMMAND = "python -m benchmarks.ltr_funnel --data-dir ../shared/data --docs docs/BENCHMARKS.md"
SEED = 2024
K = 50  # candidates per channel
TOP = 10
EPOCHS = 4
THREADS = int(os.environ.get("RECFORGE_BENCH_THREADS", "2"))
CHANNELS = {"itemcf": {}, "ease": {"l2": 300.0}, "most_popular": {}}
RANKERS = ("deepfm_pointwise", "deepfm_listwise", "lambdamart")
NEW_FEATURES = ("user_activity", "item_pop", *(f"gap_{n}" for n in CHANNELS))
# chosen on validation (``--validation``): the volumes lowered LambdaMART's NDCG@10
UNUSED = ("user_activity", "item_pop")


def load(data_dir: str | Path) -> Interactions:
    from benchmarks.multitask import load_ml100k

    return load_ml100k(data_dir)


def candidates(
    train: Interactions, users: np.ndarray, exclude: Interactions | None = None
) -> tuple[pd.DataFrame, dict[str, dict[Any, list]]]:
    """Channels fitted on ``train``; each user's merged top-K with per-channel rank/score
    columns, and each channel's own ranked list per user (``exclude``'s items removed)."""
    seen = {} if exclude is None else exclude.frame.groupby("user")["item"].agg(set).to_dict()
    per_channel: dict[str, dict[Any, list]] = {}
    parts = []
    for name, params in CHANNELS.items():
        model = models.get(name, **params).fit(train)
        ids, scores = model.recommend(users, k=K + 30, exclude_seen=True, unknown="popular")
        rows, lists = [], {}
        for u, row_ids, row_scores in zip(users, ids, scores):
            drop = seen.get(u, set())
            keep = [(i, s) for i, s in zip(row_ids, row_scores) if i not in drop and np.isfinite(s)]
            keep = keep[:K]
            lists[u] = [i for i, _ in keep]
            rows += [(u, i, r + 1, s) for r, (i, s) in enumerate(keep)]
        per_channel[name] = lists
        parts.append(pd.DataFrame(rows, columns=["user", "item", f"rank_{name}", f"score_{name}"]))
    merged = parts[0]
    for p in parts[1:]:
        merged = merged.merge(p, on=["user", "item"], how="outer")
    score_cols = [f"score_{n}" for n in CHANNELS]
    gaps = gap_to_best(merged[score_cols].to_numpy(), merged["user"].to_numpy())
    for s, name in enumerate(CHANNELS):
        merged[f"gap_{name}"] = gaps[:, s]
    for name in CHANNELS:
        merged[f"rank_{name}"] = merged[f"rank_{name}"].fillna(K + 1).astype(np.float64)
        low = merged[f"score_{name}"].min()
        merged[f"score_{name}"] = merged[f"score_{name}"].fillna(low).astype(np.float64)
    merged["best_rank"] = merged[[f"rank_{n}" for n in CHANNELS]].min(axis=1)
    return merged, per_channel


def add_features(frame: pd.DataFrame, inter: Interactions, log: Interactions) -> pd.DataFrame:
    """User and item feature columns of ``inter`` plus the volumes of ``log`` (the log the
    channels were fitted on)."""
    users, items = with_counts(log.frame, inter.user_features, inter.item_features)
    uf = users.reindex(frame["user"].to_numpy())
    itf = items.reindex(frame["item"].to_numpy())
    out = frame.copy()
    for col in uf.columns:
        out[col] = uf[col].to_numpy()
    for col in itf.columns:
        out[col] = itf[col].to_numpy()
    return out


def label(frame: pd.DataFrame, part: Interactions) -> pd.DataFrame:
    pos = set(zip(part.frame["user"], part.frame["item"]))
    frame = frame.copy()
    frame["label"] = [int((u, i) in pos) for u, i in zip(frame["user"], frame["item"])]
    return frame


def _ranker(name: str):
    deep = dict(embedding_dim=16, hidden=(128, 64), lr=1e-3, batch_size=1024, epochs=EPOCHS,
                patience=1, seed=0, num_threads=THREADS, progress=False)  # fmt: skip
    if name == "deepfm_pointwise":
        return models.get("deepfm", **deep)
    if name == "deepfm_listwise":
        return models.get("deepfm", list_loss="softmax", list_group="user", **deep)
    return models.get("lambdamart", group="user", n_estimators=300, learning_rate=0.05,
                      num_threads=THREADS)  # fmt: skip


def top_lists(frame: pd.DataFrame, score: np.ndarray) -> dict[Any, list]:
    f = frame[["user", "item"]].assign(score=score)
    f = f.sort_values(["user", "score"], ascending=[True, False], kind="stable")
    return f.groupby("user", sort=False)["item"].agg(lambda s: list(s[:TOP])).to_dict()


def run(
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    unused: tuple[str, ...] = UNUSED,
) -> dict[str, Any]:
    """Every channel and ranker, without the ``unused`` feature columns;
    ``{"rows": [...], "markdown": ...}``."""
    from benchmarks import resolve_data_dir

    inter = load(resolve_data_dir(data_dir))
    train, valid, test = user_temporal_split(inter, 0.1, 0.1)
    users = np.asarray(sorted(set(valid.frame["user"]) & set(train.frame["user"])))
    fit_frame, _ = candidates(train, users)
    fit_frame = add_features(label(fit_frame, valid), inter, train).drop(columns=list(unused))
    held = np.random.default_rng(SEED).choice(users, max(1, len(users) // 10), replace=False)
    is_held = fit_frame["user"].isin(set(held))
    rank_train, rank_valid = fit_frame[~is_held], fit_frame[is_held]

    before = Interactions(pd.concat([train.frame, valid.frame], ignore_index=True),
                          inter.user_features, inter.item_features)  # fmt: skip
    test_users = np.asarray(sorted(set(test.frame["user"]) & set(before.frame["user"])))
    test_frame, channel_lists = candidates(before, test_users, exclude=valid)
    test_frame = add_features(test_frame, inter, before).drop(columns=list(unused))
    relevant = test.frame.groupby("user")["item"].agg(set).to_dict()
    rel = [relevant.get(u, set()) for u in test_users]
    cand_recall = float(np.mean([
        len(set(test_frame.loc[test_frame["user"] == u, "item"]) & r) / max(len(r), 1)
        for u, r in zip(test_users[:300], rel[:300])
    ]))  # fmt: skip

    rows = []

    def score(name: str, lists: dict[Any, list], fit_s: float = 0.0, load: str = "") -> None:
        ranked = [lists.get(u, []) for u in test_users]
        rows.append({"method": name, f"ndcg@{TOP}": float(ndcg_at_k(ranked, rel, TOP)),
                     f"recall@{TOP}": float(recall_at_k(ranked, rel, TOP)),
                     "fit_s": fit_s, "load": load})  # fmt: skip
        log.info("%s", rows[-1])

    for name, lists in channel_lists.items():
        score(f"channel {name}", lists)
    score("merged recall order", top_lists(test_frame, -test_frame["best_rank"].to_numpy()))
    drop = ["label"]
    for name in RANKERS:
        t0, load0 = time.perf_counter(), os.getloadavg()[0]
        model = _ranker(name).fit(rank_train, label="label", valid=rank_valid)
        fit_s = time.perf_counter() - t0
        p = model.predict_proba(test_frame.drop(columns=[c for c in drop if c in test_frame]))
        score(name, top_lists(test_frame, np.asarray(p)), fit_s,
              f"{load0:.1f}-{os.getloadavg()[0]:.1f}")  # fmt: skip
    result = {
        "rows": rows,
        "date": _dt.date.today().isoformat(),
        "sizes": {
            "train_lists": int(rank_train["user"].nunique()),
            "train_rows": len(rank_train),
            "train_pos": int(rank_train["label"].sum()),
            "test_users": len(test_users),
            "test_rows": len(test_frame),
            "candidate_recall": cand_recall,
        },
    }
    result["markdown"] = to_markdown(result)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "ltr_funnel.md").write_text(result["markdown"])
    return result


def validate(data_dir: str | Path | None = None, folds: int = 10) -> list[dict[str, Any]]:
    """``--validation`` (module docstring): LambdaMART feature variants on validation,
    rotated over ``folds`` user folds so that every user's list is scored once."""
    from benchmarks import resolve_data_dir

    inter = load(resolve_data_dir(data_dir))
    train, valid, _ = user_temporal_split(inter, 0.1, 0.1)
    users = np.asarray(sorted(set(valid.frame["user"]) & set(train.frame["user"])))
    frame, _ = candidates(train, users)
    frame = add_features(label(frame, valid), inter, train)
    fold_of = dict(
        zip(np.random.default_rng(SEED).permutation(users), np.arange(len(users)) % folds)
    )
    fold = frame["user"].map(fold_of).to_numpy()
    relevant = valid.frame.groupby("user")["item"].agg(set).to_dict()
    base = [c for c in frame.columns if c not in NEW_FEATURES]
    gaps = [f"gap_{n}" for n in CHANNELS]
    variants = {
        "channel ease order": None,
        "channel itemcf order": None,
        "lambdamart, earlier features": base,
        "+ volumes": base + ["user_activity", "item_pop"],
        "+ gaps": base + gaps,
        "+ volumes + gaps": base + ["user_activity", "item_pop"] + gaps,
    }
    lists: dict[str, dict[Any, list]] = {v: {} for v in variants}
    cpu: dict[str, float] = dict.fromkeys(variants, 0.0)
    trees: dict[str, list[int]] = {v: [] for v in variants}
    for f in range(folds):  # score fold f, early-stop on fold f + 1, train on the rest
        part, stop = frame[fold == f], frame[fold == (f + 1) % folds]
        fit = frame[(fold != f) & (fold != (f + 1) % folds)]
        for name, cols in variants.items():
            if cols is None:
                p = part[f"score_{name.split()[1]}"].to_numpy()
            else:
                c0 = time.process_time()
                model = _ranker("lambdamart").fit(fit[cols], label="label", valid=stop[cols])
                p = np.asarray(model.predict_proba(part[[c for c in cols if c != "label"]]))
                cpu[name] += time.process_time() - c0
                trees[name].append(int(model.metrics_.get("n_trees", 0)))
            lists[name].update(top_lists(part, p))
        log.info("fold %d done, load %.1f", f, os.getloadavg()[0])
    scored = sorted(lists["channel ease order"])
    rel = [relevant.get(u, set()) for u in scored]
    rows = []
    for name in variants:
        ranked = [lists[name].get(u, []) for u in scored]
        per_user = np.asarray(ndcg_at_k(ranked, rel, TOP, per_user=True), dtype=np.float64)
        rows.append({"method": name, f"ndcg@{TOP}": float(np.mean(per_user)),
                     "per_user": per_user,
                     "cpu_s": cpu[name], "trees": trees[name]})  # fmt: skip
    log.info("scored %d users over %d folds", len(scored), folds)
    return rows


def to_markdown(result: dict[str, Any]) -> str:
    s = result["sizes"]
    lines = [
        SUBSECTION,
        "",
        f"Candidates: the top {K} of ItemCF, EASE and MostPopular, merged; rankers trained on "
        f"{s['train_lists']} users' lists ({s['train_rows']} rows, {s['train_pos']} positives: "
        "items consumed in the validation period), tested on "
        f"{s['test_users']} users ({s['test_rows']} candidate rows; the candidates hold "
        f"{s['candidate_recall']:.1%} of the test items, the ceiling of any ranker). "
        "Same k for every row. See `benchmarks/ltr_funnel.py` for the protocol.",
        "",
        f"    {COMMAND}",
        "",
        f"| method | NDCG@{TOP} | Recall@{TOP} | fit s | load avg | date |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        fit = f"{r['fit_s']:.0f}" if r["fit_s"] else ""
        lines.append(
            f"| {r['method']} | {r[f'ndcg@{TOP}']:.4f} | {r[f'recall@{TOP}']:.4f} | {fit} | "
            f"{r['load']} | {result['date']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder holding ml-100k/")
    parser.add_argument("--out", default=None)
    parser.add_argument("--docs", default=None, help="markdown file to update")
    parser.add_argument("--validation", action="store_true",
                        help="LambdaMART feature variants on validation only (no test)")  # fmt: skip
    parser.add_argument("--earlier-features", action="store_true",
                        help="reference: without the gap and volume features")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.validation:
        rows = validate(args.data_dir)
        ref = rows[0]["per_user"]  # EASE's own order
        for r in rows:
            d = r["per_user"] - ref
            se = d.std(ddof=1) / np.sqrt(len(d))
            trees = f"{min(r['trees'])}-{max(r['trees'])}" if r["trees"] else ""
            print(f"| {r['method']} | {r[f'ndcg@{TOP}']:.4f} | {d.mean():+.4f} +- {se:.4f} | "
                  f"{trees} | {r['cpu_s']:.0f} |")  # fmt: skip
        return
    result = run(args.data_dir, args.out, NEW_FEATURES if args.earlier_features else UNUSED)
    report(result, args.docs, SECTION)


if __name__ == "__main__":
    main()
