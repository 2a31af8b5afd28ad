"""``recforge bundle build --config FILE``: train (or reuse) the parts and write a bundle.

A bundle job is one YAML file::

    data: {source: synth, size: small}        # the train-job data section (recforge.jobs)
    split: {method: temporal, test_ratio: 0.1}
    recall:                                   # a RecallPipeline config, or {path: DIR}
      channels:
        - {name: itemcf, model: itemcf, quota: 200}
        - {name: als, model: als, params: {factors: 64}, quota: 200, index: {kind: hnsw}}
      k: 400
    ranker: {name: deepfm, params: {epochs: 2}}   # or {path: DIR}, or null: rank by recall
    rerank: {rank_top: 200, mmr_lambda: 0.0}
    evaluate: {k: 10, max_users: 2000}
    output: runs/bundle

The ranker trains on the training split's impressions with the user, item and context
features the bundle joins at request time (``jobs.ranking_frame``), so what is evaluated
offline is what is served. The bundle's metrics replay the funnel on the test split: for
test users the models know, Recall/NDCG@k of the served list (recall -> rank -> re-rank),
of the merged recall order alone, and of each channel alone, at the same k.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recforge import models
from recforge.config import from_dict, load_yaml
from recforge.data.interactions import Interactions
from recforge.exceptions import ConfigError
from recforge.jobs import DataConfig, SplitConfig, load_data, positives, ranking_frame, split_data

log = logging.getLogger(__name__)


@dataclass
class RankerSection:
    name: str | None = None  # a registered ranker; or path
    params: dict[str, Any] = field(default_factory=dict)
    path: str | None = None  # reuse a saved ranker directory (trained on the same data)
    n_negatives: int = 4  # implicit logs: sampled non-clicks per click
    onnx: bool = False  # also carry the ranker as ONNX; the server scores with onnxruntime

    def __post_init__(self) -> None:
        if (self.name is None) == (self.path is None):
            raise ConfigError("ranker: give either 'name' (with optional 'params') or 'path'.")
        if self.name is not None:
            from recforge.jobs import check_model_params

            check_model_params(self.name, self.params or {})
            if models.get_class(self.name).kind != "ranker":
                raise ConfigError(f"ranker.name: {self.name!r} is not a ranker.")


@dataclass
class FunnelEval:
    k: int = 10  # cut-off of the funnel metrics
    max_users: int = 2000  # test users replayed (a seeded sample when there are more)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 1 or self.max_users < 1:
            raise ConfigError("evaluate: k and max_users must be >= 1.")


@dataclass
class BundleJob:
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    recall: dict[str, Any] = field(default_factory=dict)  # RecallPipeline config or {path: DIR}
    ranker: RankerSection | None = None
    rerank: dict[str, Any] = field(default_factory=dict)  # RerankConfig fields
    evaluate: FunnelEval = field(default_factory=FunnelEval)
    output: str = "runs/bundle"
    name: str = "recforge"  # the model name the server answers under

    def __post_init__(self) -> None:
        if not self.recall:
            raise ConfigError(
                "recall: needs a RecallPipeline config (channels: ...) or {path: DIR}."
            )
        if "path" in self.recall and len(self.recall) > 1:
            raise ConfigError("recall: {path: DIR} takes no other keys.")
        if "path" not in self.recall:
            from recforge.pipeline import recall_config

            recall_config(self.recall)  # unknown keys are errors before any data is read
        from recforge.serving.bundle import RerankConfig

        from_dict(RerankConfig, self.rerank, where="rerank")

    @classmethod
    def from_yaml(cls, path: str | Path) -> BundleJob:
        return cls.from_dict(load_yaml(path), where=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "bundle job") -> BundleJob:
        try:
            return from_dict(cls, data, where=where)
        except ConfigError as e:
            msg = str(e)
            raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def build_bundle(job: BundleJob, echo: Any = None) -> dict[str, Any]:
    """Run a bundle job; returns {"output", "version", "metrics", "seconds"}."""
    from recforge.serving.core import Recommender

    say = echo or (lambda msg: log.info("%s", msg))
    t0 = time.perf_counter()
    inter = load_data(job.data)
    train, valid, test = split_data(inter, job.split)
    thr = job.data.positive_threshold
    say(f"data: {inter}; train {len(train):,} rows, test {len(test):,} rows")
    train_bundle(job, train, valid, inter, job.output, say=say)
    rec = Recommender.load(job.output)  # evaluate what will be served
    metrics = evaluate_funnel(
        rec,
        positives(test, thr),
        k=job.evaluate.k,
        max_users=job.evaluate.max_users,
        seed=job.evaluate.seed,
    )
    set_metrics(job.output, metrics)
    seconds = round(time.perf_counter() - t0, 1)
    return {
        "output": job.output,
        "version": rec.bundle.version,
        "metrics": metrics,
        "seconds": seconds,
    }


def train_bundle(
    job: BundleJob,
    train: Interactions,
    valid: Interactions | None,
    features: Interactions,
    output: str | Path,
    say: Any = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Fit the job's recall pipeline (or reuse its path) on ``train``'s positives and its
    ranker on ``train``'s impressions, and write the bundle to ``output`` with the user and
    item feature tables of ``features`` (the whole log). Returns the bundle's path."""
    from recforge.pipeline import RecallPipeline
    from recforge.serving.bundle import write_bundle

    say = say or (lambda msg: log.info("%s", msg))
    thr = job.data.positive_threshold
    if "path" in job.recall:
        pipeline = RecallPipeline.load(job.recall["path"])
    else:
        pipeline = RecallPipeline.from_config(job.recall).fit(positives(train, thr))
    say(f"recall: {', '.join(c.name for c in pipeline.channels)} (+ fallback)")

    ranker = None
    if job.ranker is not None:
        if job.ranker.path is not None:
            ranker = models.load(job.ranker.path)
        else:
            ranker = fit_ranker(job.ranker, train, valid, thr)
        say(f"ranker: {ranker.name}")
    return write_bundle(
        output,
        pipeline=pipeline,
        ranker=ranker,
        user_features=features.user_features,
        item_features=features.item_features,
        rerank=job.rerank,
        metrics=metrics,
        name=job.name,
        onnx=bool(job.ranker is not None and job.ranker.onnx),
    )


def fit_ranker(
    spec: RankerSection, train: Interactions, valid: Interactions | None, thr: float | None
):
    """A ranker trained on ``train``'s impressions (validated on ``valid``'s, else on the
    latest 10% of training impressions)."""
    frame = ranking_frame(train, thr, spec.n_negatives, seed=1)
    if valid is not None and len(valid):
        va = ranking_frame(valid, thr, spec.n_negatives, seed=2)
    else:
        n_valid = max(1, len(frame) // 10)
        frame, va = frame.iloc[:-n_valid], frame.iloc[-n_valid:]
    return models.get(spec.name, **(spec.params or {})).fit(frame, label="label", valid=va)


def evaluate_funnel(
    rec: Any, test: Interactions, k: int = 10, max_users: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Replay the funnel for test users the bundle's channels know: Recall/NDCG@k of the
    served list, of the merged recall order alone, and of each channel alone (same k).

    Each user's request carries the context of their first test row (the bundle's context
    fields that the test split has as columns, e.g. ``device``): the request is made when
    the test period starts, so its context is the one a server would know then.
    The business view of every list (``recforge.business``): ``<list>/ctr@k`` and, when
    the bundle's item table has a ``price`` column, ``<list>/arpu@k``; ``business`` holds
    the CTR per position of each list and the held-out ARPU."""
    from recforge.business import business_view
    from recforge.metrics import ndcg_at_k, recall_at_k

    pipe = rec.pipeline
    known = set(pipe.channels[0].model.user_vocab_.raw_ids.tolist())
    pairs = test.frame[["user", "item"]].drop_duplicates()
    pairs = pairs[pairs["user"].isin(known)]
    users = pairs["user"].drop_duplicates().to_numpy()
    if len(users) > max_users:
        users = np.random.default_rng(seed).choice(users, max_users, replace=False)
    relevant = pairs.groupby("user")["item"].agg(set)
    rel = [relevant[u] for u in users]
    lists: dict[str, list[list[Any]]] = {"funnel": [], "recall_merged": []}
    for c in pipe.channels:
        lists[f"channel/{c.name}"] = []
    context = request_contexts(test, getattr(rec, "context_fields", []))
    t0 = time.perf_counter()
    for u in users:
        lists["funnel"].append(rec.recommend(u, k=k, context=context.get(u)).items)
        cand = pipe.candidates(u)
        lists["recall_merged"].append(list(pipe.catalogue_.ids(cand.items[:k])))
        for s, c in enumerate(pipe.channels):
            col = cand.source_rank[:, s]
            rows = np.flatnonzero(~np.isnan(col))
            rows = rows[np.argsort(col[rows], kind="stable")][:k]
            lists[f"channel/{c.name}"].append(list(pipe.catalogue_.ids(cand.items[rows])))
    per_user_ms = (time.perf_counter() - t0) / max(len(users), 1) * 1e3
    out: dict[str, Any] = {"n_users": int(len(users)), "k": k}
    for name, ranked in lists.items():
        out[f"{name}/recall@{k}"] = round(float(recall_at_k(ranked, rel, k)), 4)
        out[f"{name}/ndcg@{k}"] = round(float(ndcg_at_k(ranked, rel, k)), 4)
    chans = [n for n in lists if n.startswith("channel/")]
    best = max(chans, key=lambda n: out[f"{n}/ndcg@{k}"])
    out["best_channel"] = best.removeprefix("channel/")
    out[f"funnel_gain_over_best_channel/ndcg@{k}"] = round(
        out[f"funnel/ndcg@{k}"] - out[f"{best}/ndcg@{k}"], 4
    )
    out["replay_ms_per_user"] = round(per_user_ms, 2)
    table = rec.bundle.item_table
    prices = table["price"] if table is not None and "price" in table.columns else None
    held = pairs[pairs["user"].isin(set(users.tolist()))]
    business: dict[str, Any] = {}
    for name, ranked in lists.items():
        view = business_view(dict(zip(users, ranked)), held, k=k, prices=prices)
        out[f"{name}/ctr@{k}"] = view[f"ctr@{k}"]
        if prices is not None:
            out[f"{name}/arpu@{k}"] = view[f"arpu@{k}"]
            business["held_out_arpu"] = view["held_out_arpu"]
        business[name] = {"ctr_by_position": view["ctr_by_position"]}
    out["business"] = business
    out["context_fields"] = sorted({c for ctx in context.values() for c in ctx})
    return out


def request_contexts(test: Interactions, fields: list[str]) -> dict[Any, dict[str, Any]]:
    """Per test user, the values of the context ``fields`` on their first test row (in time
    order when the split has timestamps); fields the split has no column for are left out."""
    cols = [c for c in fields if c in test.frame.columns]
    if not cols:
        return {}
    f = test.frame
    if "timestamp" in f.columns:
        f = f.sort_values("timestamp", kind="stable")
    first = f.groupby("user", sort=False)[cols].first()
    return {
        u: {c: (v.item() if hasattr(v, "item") else v) for c, v in row.items() if pd.notna(v)}
        for u, row in first.iterrows()
    }


def set_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    """Store offline metrics in bundle.json (not a checksummed file), atomically."""
    from recforge.serving.bundle import MANIFEST

    mfile = Path(path) / MANIFEST
    manifest = json.loads(mfile.read_text())
    manifest["metrics"] = metrics
    tmp = mfile.with_name(f".{MANIFEST}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=float))
    os.replace(tmp, mfile)
