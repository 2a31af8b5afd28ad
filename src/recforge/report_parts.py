"""What a run report shows, built from library objects: data, training, ranking, recall,
the funnel replay and the run's metadata. Each function returns ``recforge.report``
sections (``Text``, ``Table``, ``Curve``, ``Bars``) for ``write_report``:

* ``data_sections(inter, train, test, split)``: sizes and sparsity of the log and of each
  part, the item popularity long tail (share of interactions held by the top share of
  items), and the leakage note of the split used;
* ``training_curves`` (in ``recforge.report``): loss, validation metrics and learning rate
  per epoch;
* ``ranking_sections(scores)``: ROC, precision-recall and calibration (predicted vs
  observed click rate by bucket of predictions);
* ``recall_sections(models, test, train)``: Recall/NDCG/HR@K for K = 5..100 as curves,
  coverage and novelty;
* ``channel_sections(pipeline, test)``: each recall channel's unique contribution (test
  hits among the merged candidates that no other channel found);
* ``funnel_sections(metrics)``: the served funnel replayed on the test split
  (``recforge.serving.build.evaluate_funnel``'s figures) against each channel alone;
* ``run_meta(config=..., data=..., seconds=...)``: config, data hash, versions, hardware.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from recforge.report import Bars, Curve, Table, Text, roc_pr_curves

KS = (5, 10, 20, 50, 100)

# what each split leaks (recforge.data.splits says why)
LEAKAGE = {
    "temporal": "one global time cut: train holds only the past; no leak.",
    "user_temporal": (
        "per user, the latest share of their rows: train holds other users' interactions "
        "from after a test user's test period (what became popular later), which flatters "
        "popularity and CF. Comparable with published per-user protocols; not a deployment "
        "estimate."
    ),
    "leave_one_out": (
        "per user, the last row to test: the same future leak as user_temporal (other "
        "users' later rows are in train)."
    ),
    "random": (
        "rows at random: train holds the future of every test row; (user, item) pairs in "
        "both parts are dropped from test. Use it only for logs without time."
    ),
}


def data_hash(inter: Any) -> str:
    """A short content hash of an interaction log (its user/item/timestamp/label columns)."""
    f = inter.frame
    cols = [c for c in ("user", "item", "timestamp", "rating", "label") if c in f.columns]
    h = pd.util.hash_pandas_object(f[cols], index=False).to_numpy()
    return hashlib.sha256(h.tobytes()).hexdigest()[:12]


def _sizes(inter: Any) -> dict[str, Any]:
    n, users, items = len(inter), inter.n_users, inter.n_items
    pairs = len(inter.frame[["user", "item"]].drop_duplicates())
    return {
        "interactions": n,
        "users": users,
        "items": items,
        "density": pairs / max(users * items, 1),
    }


def data_sections(inter: Any, train: Any, test: Any, split: str | None = None) -> list[Any]:
    """Sizes/sparsity of the log and its parts, the popularity long tail, the split note."""
    rows = {"all": _sizes(inter), "train": _sizes(train), "test": _sizes(test)}
    counts = np.sort(inter.frame["item"].value_counts().to_numpy())[::-1]
    share_items = np.arange(1, len(counts) + 1) / len(counts)
    share_inter = np.cumsum(counts) / counts.sum()
    top = {q: float(share_inter[max(int(q * len(counts)) - 1, 0)]) for q in (0.01, 0.1, 0.2)}
    sections: list[Any] = [
        Table(
            "Data",
            ["interactions", "users", "items", "density"],
            rows,
            row_header="part",
            bold_best=False,
            digits=5,
        ),
        Curve(
            "Item popularity long tail",
            {"share of interactions": (share_items, share_inter)},
            "share of items, most popular first",
            "cumulative share of interactions",
            diagonal=True,
        ),
    ]
    note = (
        f"The top 1% of items hold {top[0.01]:.0%} of the interactions, the top 10% "
        f"{top[0.1]:.0%}, the top 20% {top[0.2]:.0%} (the diagonal: every item equally popular)."
    )
    if split:
        method = split.split()[0].rstrip(",")
        note += f"\n\nSplit: {split}. Leakage: {LEAKAGE.get(method, 'see recforge.data.splits.')}"
    sections.append(Text("Split and long tail", note))
    return sections


def calibration_curve(scores: Mapping[str, tuple[Any, Any]], buckets: int = 10) -> Curve:
    """Predicted vs observed positive rate by equal-count bucket of predictions, per model."""
    series = {}
    for name, (y, p) in scores.items():
        y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
        order = np.argsort(p, kind="stable")
        parts = np.array_split(order, min(buckets, len(order)))
        series[name] = (
            np.array([p[b].mean() for b in parts if len(b)]),
            np.array([y[b].mean() for b in parts if len(b)]),
        )
    hi = max((max(x.max(), o.max()) for x, o in series.values()), default=1.0)
    curve = Curve(
        "Calibration: observed vs predicted rate (deciles of predictions)",
        series,
        "mean predicted probability",
        "observed positive rate",
        diagonal=True,
    )
    if hi < 0.5:  # zoom in on the range the predictions occupy
        curve.unit_square = False
    return curve


def ranking_sections(scores: Mapping[str, tuple[Any, Any]]) -> list[Any]:
    """ROC, PR and calibration curves: scores maps name -> (y_true, y_prob)."""
    return [*roc_pr_curves(scores), calibration_curve(scores)]


def recall_sections(
    fitted: Mapping[str, Any], test: Any, ks: Sequence[int] = KS, max_users: int | None = 2000
) -> tuple[list[Any], dict[str, dict[str, float]]]:
    """Recall/NDCG/HR@K curves over ``ks`` and a coverage/novelty table for fitted
    retrieval models; returns (sections, {model: metrics})."""
    from recforge.evaluation import full_ranking

    if max_users is not None and test.n_users > max_users:
        users = np.random.default_rng(0).choice(test.users, max_users, replace=False)
        test = test.subset(test.frame["user"].isin(set(users.tolist())).to_numpy())
    results = {
        name: full_ranking(
            m, test, k=tuple(ks), metrics=("recall", "ndcg", "hit_rate", "coverage", "novelty")
        )
        for name, m in fitted.items()
    }
    sections: list[Any] = []
    for metric, label in (("recall", "Recall@K"), ("ndcg", "NDCG@K"), ("hit_rate", "HR@K")):
        series = {n: (list(ks), [r[f"{metric}@{k}"] for k in ks]) for n, r in results.items()}
        sections.append(
            Curve(f"{label}, K = {ks[0]}..{ks[-1]}", series, "K", label, unit_square=False)
        )
    k = 20 if 20 in ks else ks[0]
    sections.append(
        Table(
            f"Beyond accuracy at K = {k}",
            [f"coverage@{k}", f"novelty@{k}", "n_users"],
            {
                n: {c: r.get(c) for c in (f"coverage@{k}", f"novelty@{k}", "n_users")}
                for n, r in results.items()
            },
        )
    )
    return sections, results


def channel_contribution(pipeline: Any, test: Any, max_users: int = 500) -> dict[str, dict]:
    """Per recall channel: test hits among the merged candidates it found, and those no
    other channel found (its unique contribution), over known test users."""
    known = set(pipeline.channels[0].model.user_vocab_.raw_ids.tolist())
    pairs = test.frame[["user", "item"]].drop_duplicates()
    pairs = pairs[pairs["user"].isin(known)]
    relevant = pairs.groupby("user")["item"].agg(set)
    users = relevant.index.to_numpy()
    if len(users) > max_users:
        users = np.random.default_rng(0).choice(users, max_users, replace=False)
    names = [c.name for c in pipeline.channels]
    found = dict.fromkeys(names, 0)
    unique = dict.fromkeys(names, 0)
    total = hits = 0
    for u in users:
        cand = pipeline.candidates(u)
        ids = pipeline.catalogue_.ids(cand.items)
        rel = relevant[u]
        total += len(rel)
        is_hit = np.fromiter((i in rel for i in ids), bool, count=len(ids))
        hits += int(is_hit.sum())
        by = ~np.isnan(cand.source_rank[is_hit])  # (hits, channels): who found each hit
        for s, n in enumerate(names):
            found[n] += int(by[:, s].sum())
            unique[n] += int((by[:, s] & (by.sum(1) == 1)).sum())
    return {
        n: {
            "hits": found[n],
            "unique hits": unique[n],
            "share of merged hits": found[n] / max(hits, 1),
            "unique share": unique[n] / max(hits, 1),
        }
        for n in names
    } | {
        "merged": {
            "hits": hits,
            "unique hits": None,
            "share of merged hits": 1.0,
            "unique share": None,
            "recall of candidates": hits / max(total, 1),
        }
    }


def channel_sections(pipeline: Any, test: Any, max_users: int = 500) -> list[Any]:
    rows = channel_contribution(pipeline, test, max_users)
    cols = ["hits", "unique hits", "share of merged hits", "unique share"]
    chans = {n: r for n, r in rows.items() if n != "merged"}
    return [
        Table(
            f"Recall channels: test hits among the merged candidates (recall of the "
            f"candidates {rows['merged']['recall of candidates']:.3f})",
            cols,
            rows,
            row_header="channel",
        ),
        Bars(
            "Unique contribution of each channel (share of merged hits only it found)",
            {n: {"unique share": r["unique share"]} for n, r in chans.items()},
        ),
    ]


def funnel_sections(funnel: Mapping[str, Any], ranker: str = "the ranker") -> list[Any]:
    """The served funnel against the merged recall order and each channel alone."""
    k = funnel["k"]
    stages = ["funnel", "recall_merged"] + [
        n.removesuffix(f"/ndcg@{k}")
        for n in funnel
        if n.startswith("channel/") and n.endswith(f"/ndcg@{k}")
    ]
    rows = {
        s: {f"recall@{k}": funnel[f"{s}/recall@{k}"], f"ndcg@{k}": funnel[f"{s}/ndcg@{k}"]}
        for s in stages
    }
    best = funnel.get("best_channel")
    gain = funnel.get(f"funnel_gain_over_best_channel/ndcg@{k}")
    sections: list[Any] = [
        Table(
            f"Served funnel replay ({funnel['n_users']} test users): recall -> {ranker} -> top "
            f"{k}, against the merged recall order and each channel alone",
            [f"recall@{k}", f"ndcg@{k}"],
            rows,
            row_header="stage",
        )
    ]
    if best is not None and gain is not None:
        verdict = "adds" if gain > 0 else "loses"
        sections.append(
            Text(
                "What the ranking stage earns",
                f"The served list {verdict} {abs(gain):.4f} NDCG@{k} against the best single "
                f"channel ({best}) at the same k.",
            )
        )
    business = funnel.get("business")
    if business:
        shown = ["funnel", "recall_merged"] + ([f"channel/{best}"] if best else [])
        views = {
            s: {
                f"ctr@{k}": funnel.get(f"{s}/ctr@{k}"),
                f"arpu@{k}": funnel.get(f"{s}/arpu@{k}"),
                "ctr_by_position": business[s]["ctr_by_position"],
            }
            for s in shown
            if s in business
        }
        sections += business_sections(views, k, business.get("held_out_arpu"))
    return sections


def list_business_sections(
    fitted: Mapping[str, Any],
    test: Any,
    prices: Any = None,
    k: int = 10,
    max_users: int | None = 2000,
) -> list[Any]:
    """The business view (``recforge.business``) of each fitted retrieval model's top-k
    lists for the test users it knows (a seeded sample of ``max_users``), against their
    test rows; ``prices``: item id -> price (e.g. ``item_features["price"]``) or None."""
    from recforge.business import business_view

    views = {}
    for name, model in fitted.items():
        known = set(model.user_vocab_.raw_ids.tolist())
        users = [u for u in pd.unique(test.frame["user"]) if u in known]
        if max_users is not None and len(users) > max_users:
            pick = np.random.default_rng(0).choice(len(users), max_users, replace=False)
            users = [users[i] for i in np.sort(pick)]
        if not users:
            continue
        ids, scores = model.recommend(users, k=k, exclude_seen=True)
        lists = {
            u: [i for i, s in zip(row, sc) if np.isfinite(s)]
            for u, row, sc in zip(users, ids.tolist(), scores)
        }
        views[name] = business_view(lists, test.frame, k=k, prices=prices)
    if not views:
        return []
    held = next(iter(views.values())).get("held_out_arpu")
    return business_sections(views, k, held)


def business_sections(
    views: Mapping[str, Mapping[str, Any]], k: int, held_out_arpu: float | None = None
) -> list[Any]:
    """A table of CTR@k and revenue per user (``recforge.business``) per list and the CTR
    per list position; ``views``: list name -> a ``business_view`` result (or its keys)."""
    cols = [f"ctr@{k}"] + (
        [f"arpu@{k}"] if any(v.get(f"arpu@{k}") is not None for v in views.values()) else []
    )
    rows = {n: {c: v.get(c) for c in cols} for n, v in views.items()}
    note = (
        f"; held-out value per user {held_out_arpu:.2f} (every held-out click's price)"
        if held_out_arpu is not None
        else ""
    )
    return [
        Table(
            f"Business view at k = {k}: CTR = share of recommended items the user clicked in "
            f"the held-out period; ARPU = mean per user of the prices of held-out clicks that "
            f"were recommended{note}",
            cols,
            rows,
            row_header="list",
            digits=3,
        ),
        Curve(
            "CTR by list position (held-out clicks)",
            {
                n: (list(range(1, len(v["ctr_by_position"]) + 1)), list(v["ctr_by_position"]))
                for n, v in views.items()
            },
            "position",
            "CTR",
            unit_square=False,
        ),
    ]


def run_meta(
    *, config: Any = None, data: Any = None, seconds: float | None = None
) -> dict[str, Any]:
    """Run metadata: config (JSON), data hash, versions, hardware, wall time."""
    import recforge

    versions = [
        f"recforge {getattr(recforge, '__version__', '?')}",
        f"python {platform.python_version()}",
    ]
    for mod in ("numpy", "pandas", "torch", "faiss", "lightgbm"):
        m = sys.modules.get(mod)
        if m is not None:
            versions.append(f"{mod} {getattr(m, '__version__', '?')}")
    meta: dict[str, Any] = {}
    if config is not None:
        meta["config"] = json.dumps(config, default=str, sort_keys=True)
    if data is not None:
        meta["data hash"] = data_hash(data)
    meta["versions"] = ", ".join(versions)
    meta["hardware"] = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"
    if seconds is not None:
        meta["wall time"] = f"{seconds:.1f} s"
    return meta


def write_bundle_report(job: Any, result: Mapping[str, Any], out: Any = None) -> Any:
    """The report of ``recforge bundle build``: data and split, each channel's unique
    contribution, the funnel replay, metadata; written beside the bundle (a bundle
    directory holds only its listed files) in ``<output>-report/``. Returns report.html."""
    from pathlib import Path

    from recforge.jobs import load_data, positives, split_data
    from recforge.report import write_report
    from recforge.serving.core import Recommender

    out = Path(out or f"{Path(job.output)}-report")
    inter = load_data(job.data)
    train, _, test = split_data(inter, job.split)
    rec = Recommender.load(job.output)
    test_pos = positives(test, job.data.positive_threshold)
    split = f"{job.split.method}, test_ratio {job.split.test_ratio}"
    ranker = getattr(rec.bundle.ranker, "name", None) or "the ranker"
    sections = [
        *funnel_sections(result["metrics"], ranker),
        *channel_sections(rec.pipeline, test_pos),
        *data_sections(inter, train, test, split),
    ]
    meta = {
        "bundle": f"{result['output']} (version {result['version']})",
        "split": split,
        **run_meta(config=dataclasses.asdict(job), data=inter, seconds=result.get("seconds")),
    }
    return write_report(
        out, title=f"recforge bundle build: {job.name}", sections=sections, meta=meta
    )[1]
