"""A tiny serving bundle for the serving tests: synthetic data with user, item and context
features, ItemCF + ALS (through HNSW) + EASE channels, a DeepFM ranker."""

from __future__ import annotations

from pathlib import Path

from recforge import models
from recforge.data.synth import SIZES, make_ctr_frame, make_synthetic
from recforge.pipeline import RecallPipeline
from recforge.serving import write_bundle

RECALL = {
    "channels": [
        {"name": "itemcf", "model": "itemcf", "params": {"k": 30}, "quota": 60},
        {
            "name": "als",
            "model": "als",
            "params": {"factors": 8, "iterations": 3, "num_threads": 1},
            "quota": 60,
            "index": {"kind": "hnsw", "hnsw_m": 8},
        },
        {"name": "ease", "model": "ease", "params": {"l2": 50.0}, "quota": 40},
    ],
    "fallback": "most_popular",
    "k": 120,
}


def tiny_log():
    return make_synthetic(**SIZES["tiny"], seed=0)


def build_tiny_bundle(path: Path, rerank: dict | None = None, ranker: bool = True) -> Path:
    inter = tiny_log()
    pipe = RecallPipeline.from_config(RECALL).fit(inter)
    rk = None
    if ranker:
        frame = make_ctr_frame(inter, n_negatives=2, seed=1)
        rk = models.get(
            "deepfm", epochs=1, embedding_dim=4, hidden=(16,), batch_size=512, num_threads=1
        ).fit(frame, label="label")
    return write_bundle(
        path,
        pipeline=pipe,
        ranker=rk,
        user_features=inter.user_features,
        item_features=inter.item_features,
        rerank=rerank or {"rank_top": 50},
        name="tiny",
    )
