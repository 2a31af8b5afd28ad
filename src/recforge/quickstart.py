"""The quickstart (``make run`` / ``recforge quickstart``): recall and ranking on synthetic data.

1. generate a synthetic log (users with drifting tastes, power-law items, side features);
2. split it per user by time (the latest 20% of each user's clicks are the test);
3. recall: fit MostPopular, ItemCF, ALS and EASE, evaluate full ranking (Recall/NDCG@K);
4. rank: build an impression frame (clicks + popularity-sampled non-clicks with user, item
   and context features), train LR, DeepFM, DCNv2 and LightGBM, evaluate AUC / GAUC / logloss;
5. save every model as an artifact directory and write ``report.html`` / ``report.md``
   (``recforge.report_parts``: data, recall curves, channels, ranking, funnel, metadata);
6. build a serving bundle (ItemCF + ALS through HNSW + EASE, DeepFM over the top 200),
   replay the funnel on the test split, start ``recforge serve`` on loopback, ask it once
   through REST (with the explain trace) and once through gRPC, and stop it.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from pathlib import Path
from typing import Any

from recforge import models
from recforge.data.interactions import Interactions
from recforge.data.splits import user_temporal_split
from recforge.data.synth import SIZES, make_ctr_frame, make_synthetic
from recforge.evaluation import evaluate_ranker, full_ranking

log = logging.getLogger(__name__)

RECALL_MODELS: dict[str, dict[str, Any]] = {
    "most_popular": {},
    "itemcf": {"k": 100},
    "als": {"factors": 32, "regularization": 0.1, "alpha": 10.0, "iterations": 15},
    "ease": {"l2": 200.0},
}
RECALL_COLUMNS = (
    "recall@10",
    "recall@20",
    "recall@50",
    "ndcg@10",
    "ndcg@20",
    "hit_rate@20",
    "coverage@20",
    "fit_s",
)
RANKERS: dict[str, dict[str, Any]] = {
    "lr": {"epochs": 2, "lr": 0.01, "batch_size": 4096},
    "deepfm": {
        "epochs": 2,
        "lr": 0.003,
        "batch_size": 2048,
        "embedding_dim": 16,
        "hidden": (128, 64),
    },
    "dcnv2": {
        "epochs": 2,
        "lr": 0.003,
        "batch_size": 2048,
        "embedding_dim": 16,
        "hidden": (128, 64),
    },
    "lightgbm": {"n_estimators": 200},
}


def run(
    out_dir: str | Path | None = None,
    size: str = "small",
    seed: int = 0,
    echo=print,
    serve: bool = True,
) -> dict[str, Any]:
    """Run the quickstart; returns a summary dict and writes everything under ``out_dir``."""
    t_start = time.perf_counter()
    out = Path(out_dir or f"runs/{_dt.datetime.now():%Y%m%d-%H%M%S}")
    (out / "models").mkdir(parents=True, exist_ok=True)

    inter = make_synthetic(**SIZES[size], seed=seed)
    train, test = user_temporal_split(inter, test_ratio=0.2)
    echo(f"data: {inter}")
    echo(f"split: per-user temporal, train {len(train):,} rows, test {len(test):,} rows")

    # ---- recall
    recall_rows, fitted = [], {}
    for name, params in RECALL_MODELS.items():
        if name not in models.available():
            continue
        model = models.get(name, **params)
        t0 = time.perf_counter()
        model.fit(train)
        fit_s = time.perf_counter() - t0
        m = full_ranking(
            model, test, k=(10, 20, 50), metrics=("recall", "ndcg", "hit_rate", "coverage")
        )
        m["fit_s"] = round(fit_s, 2)
        model.save(out / "models" / name, metrics=m)
        fitted[name] = model
        recall_rows.append({"model": name, **{k: m[k] for k in RECALL_COLUMNS}})
        echo(
            f"recall  {name:<14} recall@20={m['recall@20']:.4f} ndcg@20={m['ndcg@20']:.4f} fit={fit_s:.1f}s"
        )

    # ---- ranking: impressions = each click plus 4 sampled non-clicks
    tr_frame = make_ctr_frame(train, n_negatives=4, seed=1)
    te_frame = make_ctr_frame(_known(test, train), n_negatives=4, seed=2)
    n_valid = len(tr_frame) // 10  # the latest 10% of training impressions validate
    fit_frame, valid_frame = tr_frame.iloc[:-n_valid], tr_frame.iloc[-n_valid:]
    rank_rows, curves, histories, rankers = [], {}, {}, {}
    for name, params in RANKERS.items():
        model = models.get(name, **params)
        t0 = time.perf_counter()
        model.fit(fit_frame, label="label", valid=valid_frame)
        fit_s = time.perf_counter() - t0
        m = evaluate_ranker(model, te_frame, label="label", group="user")
        m["fit_s"] = round(fit_s, 2)
        model.save(out / "models" / name, metrics=m)
        curves[name] = (te_frame["label"].to_numpy(), model.predict_proba(te_frame))
        histories[name] = getattr(model, "train_history_", None)
        rankers[name] = model
        rank_rows.append({"model": name, **{k: m[k] for k in ("auc", "gauc", "logloss", "fit_s")}})
        echo(
            f"rank    {name:<14} auc={m['auc']:.4f} gauc={m['gauc']:.4f} logloss={m['logloss']:.4f} fit={fit_s:.1f}s"
        )

    summary = {
        "output": str(out),
        "data": {"size": size, "rows": len(inter), "users": inter.n_users, "items": inter.n_items},
        "recall": recall_rows,
        "ranking": rank_rows,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    bundle_dir = _bundle(out / "bundle", fitted, rankers.get("deepfm"), inter)
    summary["bundle"] = _funnel(bundle_dir, test, echo)
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
    parts = {"inter": inter, "train": train, "test": test, "fitted": fitted, "bundle": bundle_dir}
    report = _report(out, summary, curves, histories, parts)
    echo(f"models saved under {out / 'models'}; report: {report}")
    if serve:
        from recforge.serving.demo import ask_server

        ask_server(bundle_dir, _jsonable(test.frame["user"].iloc[0]), echo=echo)
    echo(f"done in {summary['seconds']}s")
    return summary


def _bundle(path: Path, fitted: dict[str, Any], ranker: Any, inter: Interactions) -> Path:
    """The serving bundle from the quickstart's own models: what was evaluated is served."""
    from recforge.index.faiss_index import AnnRecommender
    from recforge.pipeline import RecallPipeline
    from recforge.pipeline.recall import Channel
    from recforge.serving.bundle import write_bundle

    channels = [Channel("itemcf", fitted["itemcf"], quota=200)]
    if "als" in fitted:
        als = Channel("als", fitted["als"], quota=200, index={"kind": "hnsw"})
        als.ann_ = AnnRecommender(fitted["als"], als.index)
        channels.append(als)
    if "ease" in fitted:
        channels.append(Channel("ease", fitted["ease"], quota=100))
    pipeline = RecallPipeline(channels, fallback=fitted["most_popular"], k=400)
    return write_bundle(
        path,
        pipeline=pipeline,
        ranker=ranker,
        user_features=inter.user_features,
        item_features=inter.item_features,
        rerank={"rank_top": 200},
        name="quickstart",
    )


def _funnel(bundle_dir: Path, test: Interactions, echo) -> dict[str, Any]:
    """Replay the served funnel on the test split; the bundle keeps the figures."""
    from recforge.serving.build import evaluate_funnel, set_metrics
    from recforge.serving.core import Recommender

    m = evaluate_funnel(Recommender.load(bundle_dir), test, k=10, max_users=500)
    set_metrics(bundle_dir, m)
    best = m["best_channel"]
    echo(
        f"funnel  bundle {bundle_dir}: ndcg@10 served {m['funnel/ndcg@10']:.4f}, merged recall "
        f"{m['recall_merged/ndcg@10']:.4f}, best channel ({best}) {m[f'channel/{best}/ndcg@10']:.4f}"
        f" on {m['n_users']} test users"
    )
    return m


def _jsonable(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def _known(test: Interactions, train: Interactions) -> Interactions:
    """Test rows whose user and item the models have seen (impressions need both)."""
    f = test.frame
    keep = f["user"].isin(set(train.users)) & f["item"].isin(set(train.items))
    return test.subset(keep.to_numpy())


def _report(
    out: Path,
    summary: dict[str, Any],
    scores: dict,
    histories: dict,
    parts: dict[str, Any],
) -> Path:
    """report.html / report.md: data and split, recall (K curves, coverage, novelty, each
    channel's unique contribution), ranking (ROC, PR, calibration, training curves), the
    served funnel replay, metadata. ``parts``: inter, train, test, fitted, bundle."""
    from recforge import report_parts as rp
    from recforge.report import Bars, Table, training_curves, write_report

    def table(title, rows, key="model"):
        cols = [c for c in rows[0] if c != key] if rows else []
        return Table(title, cols, {r[key]: r for r in rows})

    d = summary["data"]
    recall = summary["recall"]
    split = "user_temporal, latest 20% of each user's clicks as test"
    sections: list[Any] = []
    if summary.get("bundle"):
        sections += rp.funnel_sections(summary["bundle"], "DeepFM")
    sections += rp.data_sections(parts["inter"], parts["train"], parts["test"], split)
    sections += [
        table("Recall: full ranking, training items excluded", recall),
        Bars(
            "Recall@K per recall channel",
            {r["model"]: {f"recall@{k}": r[f"recall@{k}"] for k in (10, 20, 50)} for r in recall},
        ),
    ]
    sections += rp.recall_sections(parts["fitted"], parts["test"], max_users=1000)[0]
    if parts.get("bundle") is not None:
        from recforge.serving.core import Recommender

        pipe = Recommender.load(parts["bundle"]).pipeline
        sections += rp.channel_sections(pipe, parts["test"], max_users=300)
    sections += [
        table("Ranking: each click + 4 popularity-sampled non-clicks", summary["ranking"]),
        *rp.ranking_sections(scores),
        *training_curves(histories),
    ]
    meta = {
        "dataset": f"synthetic ({d['size']}): {d['rows']:,} interactions, {d['users']:,} users, {d['items']:,} items",
        "split": split,
        "run time": f"{summary['seconds']} s",
        **rp.run_meta(
            config={"size": d["size"], "recall": RECALL_MODELS, "rankers": RANKERS},
            data=parts["inter"],
            seconds=summary["seconds"],
        ),
    }
    _, html_path = write_report(out, title="recforge quickstart", sections=sections, meta=meta)
    return html_path
