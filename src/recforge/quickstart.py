"""The quickstart (``make run`` / ``recforge quickstart``): recall and ranking on synthetic data.

1. generate a synthetic log (users with drifting tastes, power-law items, side features);
2. split it per user by time (the latest 20% of each user's clicks are the test);
3. recall: fit MostPopular, ItemCF, ALS and EASE, evaluate full ranking (Recall/NDCG@K);
4. rank what the funnel feeds the ranker (``recforge.pipeline.candidate_features``): the
   training split is cut again per user (its latest 20% label the ranker), the recall
   channels are refitted on the part before, and each user's best ``RANK_TOP`` merged
   candidates become ranker rows labelled by that user's label-period clicks, with the
   candidate's recall ranks and scores, user, item and request-context features (device and
   time of day of the user's first label-period click) and context x category crosses.
   LR, DeepFM, DCNv2 and LightGBM train on 80% of the users' lists; the other 20% choose
   the served ranker (NDCG@10 of their lists, never the test split). On the test split
   each ranker re-ranks the served pipeline's candidates (AUC / GAUC / logloss / NDCG@10);
5. save every model as an artifact directory and write ``report.html`` / ``report.md``
   (``recforge.report_parts``: data, recall curves, channels, ranking, funnel, metadata);
6. build a serving bundle (ItemCF + ALS through HNSW + EASE, the chosen ranker over the top
   ``RANK_TOP``), replay the funnel on the test split (each request with the user's context
   at the start of the test period), start ``recforge serve`` on loopback, ask it once
   through REST (with the explain trace) and once through gRPC, and stop it.

Why the ranker is trained this way: on popularity-sampled negatives (each click against 4
random items) it learns "is this a plausible item at all", which every recall candidate
already is; it never saw the recall scores or the request's context, and the funnel
served it neither, so re-ranking lowered NDCG@10 below the best channel's.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from recforge import models
from recforge.data.interactions import Interactions
from recforge.data.splits import user_temporal_split
from recforge.data.synth import SIZES, make_synthetic
from recforge.evaluation import evaluate_scores, full_ranking
from recforge.metrics import ndcg_at_k

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
RANK_TOP = 50  # recall candidates the ranker re-ranks per request
CONTEXT = ("device", "daypart")  # request context the ranker reads
CROSSES = (("daypart", "category"), ("device", "category"))  # context x item crosses
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
    "lightgbm": {"n_estimators": 300, "min_child_samples": 50},
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

    # ---- ranking on the funnel's own candidates (module docstring, step 4)
    t0 = time.perf_counter()
    fit_frame, valid_frame, te_frame = ranker_frames(inter, train, test, fitted, seed=seed)
    echo(
        f"rank    frames: {len(fit_frame):,} train rows ({int(fit_frame['label'].sum()):,} "
        f"clicked), {len(valid_frame):,} validation, {len(te_frame):,} test "
        f"({time.perf_counter() - t0:.1f}s)"
    )
    rank_rows, curves, histories, rankers = [], {}, {}, {}
    for name, params in RANKERS.items():
        model = models.get(name, **params)
        t0 = time.perf_counter()
        model.fit(_features(fit_frame), label="label", valid=_features(valid_frame))
        fit_s = time.perf_counter() - t0
        p_test = np.asarray(model.predict_proba(_features(te_frame)), dtype=np.float64)
        m = evaluate_scores(te_frame["label"].to_numpy(), p_test, te_frame["user"].to_numpy())
        m["ndcg@10"] = list_ndcg(te_frame, p_test, test.frame)
        m["valid_ndcg@10"] = list_ndcg(
            valid_frame, model.predict_proba(_features(valid_frame)), None
        )
        m["fit_s"] = round(fit_s, 2)
        model.save(out / "models" / name, metrics=m)
        curves[name] = (te_frame["label"].to_numpy(), p_test)
        histories[name] = getattr(model, "train_history_", None)
        rankers[name] = model
        cols = ("valid_ndcg@10", "ndcg@10", "auc", "gauc", "logloss", "fit_s")
        rank_rows.append({"model": name, **{k: m[k] for k in cols}})
        echo(
            f"rank    {name:<14} valid ndcg@10={m['valid_ndcg@10']:.4f} test ndcg@10="
            f"{m['ndcg@10']:.4f} auc={m['auc']:.4f} gauc={m['gauc']:.4f} fit={fit_s:.1f}s"
        )
    chosen = max(rank_rows, key=lambda r: r["valid_ndcg@10"])["model"]
    baselines = []  # the same candidate lists in one channel's order: what a ranker must beat
    for ch in fitted:
        col = f"recall_rank_{ch}"
        if col in te_frame.columns:
            baselines.append(
                {
                    "model": f"{ch} order (no ranker)",
                    "valid_ndcg@10": list_ndcg(valid_frame, -valid_frame[col].to_numpy(), None),
                    "ndcg@10": list_ndcg(te_frame, -te_frame[col].to_numpy(), test.frame),
                }
            )
    echo(f"rank    served ranker: {chosen} (best validation NDCG@10)")

    summary = {
        "output": str(out),
        "data": {"size": size, "rows": len(inter), "users": inter.n_users, "items": inter.n_items},
        "recall": recall_rows,
        "ranking": rank_rows,
        "served_ranker": chosen,
        "ranking_baselines": baselines,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    bundle_dir = _bundle(out / "bundle", fitted, rankers[chosen], inter)
    summary["bundle"] = _funnel(bundle_dir, test, echo)
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
    parts = {"inter": inter, "train": train, "test": test, "fitted": fitted, "bundle": bundle_dir}
    report = _report(out, summary, curves, histories, parts)
    echo(f"models saved under {out / 'models'}; report: {report}")
    if serve:
        from recforge.serving.build import request_contexts
        from recforge.serving.demo import ask_server

        user = test.frame["user"].iloc[0]
        context = request_contexts(test, list(CONTEXT)).get(user)  # as the funnel replay's
        ask_server(bundle_dir, _jsonable(user), echo=echo, context=context)
    echo(f"done in {summary['seconds']}s")
    return summary


def _pipeline(fitted: dict[str, Any]) -> Any:
    """The served recall: ItemCF 200 + ALS 200 through HNSW + EASE 100, popularity fallback."""
    from recforge.index.faiss_index import AnnRecommender
    from recforge.pipeline import RecallPipeline
    from recforge.pipeline.recall import Channel

    channels = [Channel("itemcf", fitted["itemcf"], quota=200)]
    if "als" in fitted:
        als = Channel("als", fitted["als"], quota=200, index={"kind": "hnsw"})
        als.ann_ = AnnRecommender(fitted["als"], als.index)
        channels.append(als)
    if "ease" in fitted:
        channels.append(Channel("ease", fitted["ease"], quota=100))
    return RecallPipeline(channels, fallback=fitted["most_popular"], k=400)


def ranker_frames(
    inter: Interactions,
    train: Interactions,
    test: Interactions,
    fitted: dict[str, Any],
    seed: int = 0,
    max_test_users: int = 500,
):
    """(train, validation, test) ranker frames of the funnel's candidates (module
    docstring, step 4). Train/validation: channels refitted on the part of ``train`` before
    each user's latest 20%, which labels them; validation = a seeded 20% of those users.
    Test: the served channels (``fitted``, on all of ``train``) for up to
    ``max_test_users`` test users, labelled by their test clicks."""
    from recforge.pipeline.candidate_features import candidate_frame
    from recforge.serving.build import request_contexts

    early, label_part = user_temporal_split(train, test_ratio=0.2)
    refit = {n: models.get(n, **RECALL_MODELS[n]).fit(early) for n in fitted}
    users = np.asarray(sorted(set(label_part.users) & set(early.users)))

    def frame(pipeline, users, part):
        return candidate_frame(
            pipeline,
            users,
            top=RANK_TOP,
            labels=part.frame,
            contexts=request_contexts(part, list(CONTEXT)),
            user_features=inter.user_features,
            item_features=inter.item_features,
            crosses=CROSSES,
        )

    rng = np.random.default_rng(seed)
    labelled = frame(_pipeline(refit), users, label_part)
    held = set(rng.choice(users, max(1, len(users) // 5), replace=False).tolist())
    is_valid = labelled["user"].isin(held).to_numpy()
    test_users = np.asarray(sorted(set(test.users) & set(train.users)))
    if len(test_users) > max_test_users:
        test_users = np.sort(rng.choice(test_users, max_test_users, replace=False))
    te = frame(_pipeline(fitted), test_users, test)
    return labelled[~is_valid], labelled[is_valid], te


def _features(frame: Any) -> Any:
    """A ranker frame without the ids: the ranker generalises through the recall features,
    side features and crosses rather than memorising users and items."""
    return frame.drop(columns=["user", "item"])


def list_ndcg(frame: Any, scores: Any, relevant_frame: Any, k: int = 10) -> float:
    """NDCG@k of each user's candidates re-ordered by ``scores``. Relevant items: the
    user's rows of ``relevant_frame`` (all of them, also those recall missed), or the
    frame's own positive labels when None."""
    f = frame[["user", "item", "label"]].assign(score=np.asarray(scores, dtype=np.float64))
    if relevant_frame is None:
        relevant = f[f["label"] == 1].groupby("user")["item"].agg(set)
    else:
        relevant = relevant_frame.groupby("user")["item"].agg(set)
    f = f.sort_values(["user", "score"], ascending=[True, False], kind="stable")
    tops = f.groupby("user", sort=False)["item"].agg(lambda s: list(s[:k]))
    users = [u for u in tops.index if u in relevant.index]
    return round(float(ndcg_at_k([tops[u] for u in users], [relevant[u] for u in users], k)), 4)


def _bundle(path: Path, fitted: dict[str, Any], ranker: Any, inter: Interactions) -> Path:
    """The serving bundle from the quickstart's own models: what was evaluated is served."""
    from recforge.serving.bundle import write_bundle

    return write_bundle(
        path,
        pipeline=_pipeline(fitted),
        ranker=ranker,
        user_features=inter.user_features,
        item_features=inter.item_features,
        rerank={"rank_top": RANK_TOP},
        name="quickstart",
    )


def _funnel(bundle_dir: Path, test: Interactions, echo) -> dict[str, Any]:
    """Replay the served funnel on the test split; the bundle keeps the figures."""
    from recforge.serving.build import evaluate_funnel, set_metrics
    from recforge.serving.core import Recommender

    m = evaluate_funnel(Recommender.load(bundle_dir), test, k=10, max_users=1000)
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
        sections += rp.funnel_sections(summary["bundle"], summary["served_ranker"])
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
        table(
            f"Ranking: each test user's best {RANK_TOP} recall candidates, labelled by their "
            f"test clicks (rankers trained on the same kind of lists from the training "
            f"period; validation users choose the served one: {summary['served_ranker']})",
            summary["ranking"] + summary.get("ranking_baselines", []),
        ),
        *rp.ranking_sections(scores),
        *training_curves(histories),
    ]
    meta = {
        "dataset": f"synthetic ({d['size']}): {d['rows']:,} interactions, {d['users']:,} users, {d['items']:,} items",
        "split": split,
        "run time": f"{summary['seconds']} s",
        **rp.run_meta(
            config={
                "size": d["size"],
                "recall": RECALL_MODELS,
                "rankers": RANKERS,
                "rank_top": RANK_TOP,
                "context": CONTEXT,
                "crosses": CROSSES,
            },
            data=parts["inter"],
            seconds=summary["seconds"],
        ),
    }
    _, html_path = write_report(out, title="recforge quickstart", sections=sections, meta=meta)
    return html_path
