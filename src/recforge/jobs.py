"""Jobs behind the CLI: load data, split, train, evaluate, save, report.

A train job is one YAML file (``recforge train --config FILE``)::

    data:                     # where the interactions come from
      source: synth           # synth | ml-100k | ml-latest-small | amazon-beauty | frappe | file
      size: small             # synth preset (tiny, small, medium, large, xlarge)
      path: null              # source: file -> a CSV/TSV/Parquet/JSONL log
      columns: {user: userId, item: movieId, rating: rating, timestamp: timestamp}
      positive_threshold: 4   # retrieval: keep rating >= 4 as positives
    split: {method: user_temporal, test_ratio: 0.2, valid_ratio: 0.0, seed: 123}
    model: {name: itemcf, params: {k: 100}}
    evaluate: {k: [10, 20]}
    output: runs/itemcf       # model directory + metrics.json + report

Every section is a typed dataclass: a misspelt key is an error naming the valid keys.
Retrieval models train on the (positive) interactions and report full-ranking metrics;
rankers train on a labelled frame (the log's ``label``, ``rating >= positive_threshold``,
or sampled negatives for implicit logs, with user/item features joined) and report AUC,
GAUC and logloss.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recforge import models
from recforge.config import from_dict, load_yaml
from recforge.data import splits
from recforge.data.interactions import Interactions
from recforge.exceptions import ConfigError

log = logging.getLogger(__name__)

SOURCES = ("synth", "ml-100k", "ml-latest-small", "amazon-beauty", "frappe", "file")
SPLITS = ("random", "temporal", "user_temporal", "leave_one_out")


@dataclass
class DataConfig:
    source: str = "synth"  # synth, a named dataset, or "file"
    size: str = "small"  # synth preset name
    seed: int = 0  # synth seed
    path: str | None = None  # source=file: the log file
    format: str | None = None  # source=file: csv/tsv/parquet/jsonl (default: from the suffix)
    columns: dict[str, str] = field(default_factory=dict)  # canonical name -> column in the file
    data_dir: str | None = None  # named datasets: folder holding them (default $RECFORGE_DATA_DIR)
    positive_threshold: float | None = None  # keep rating >= this as positives / labels
    skip_bad_rows: bool = False  # source=file: skip malformed rows (counted) instead of failing

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"data.source: {self.source!r} is not one of {SOURCES}.")
        if self.source == "file" and not self.path:
            raise ConfigError("data.path is required when data.source is 'file'.")


@dataclass
class SplitConfig:
    method: str = "user_temporal"  # random | temporal | user_temporal | leave_one_out
    test_ratio: float = 0.2
    valid_ratio: float = 0.0
    seed: int = 0  # random split only

    def __post_init__(self) -> None:
        if self.method not in SPLITS:
            raise ConfigError(f"split.method: {self.method!r} is not one of {SPLITS}.")


@dataclass
class ModelConfig:
    name: str = "itemcf"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    k: list[int] = field(default_factory=lambda: [10, 20])
    n_negatives: int = 4  # rankers on implicit logs: sampled negatives per positive


@dataclass
class TrainJob:
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    output: str | None = None  # model directory; default runs/<timestamp>-<model>

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainJob:
        return from_dict(cls, load_yaml(path), where=str(path))


# ---------------------------------------------------------------------------- data
def load_data(cfg: DataConfig) -> Interactions:
    """The interaction log a job trains on."""
    if cfg.source == "synth":
        from recforge.data.synth import SIZES, make_synthetic

        if cfg.size not in SIZES:
            raise ConfigError(f"data.size: {cfg.size!r} is not one of {sorted(SIZES)}.")
        return make_synthetic(**SIZES[cfg.size], seed=cfg.seed)
    if cfg.source == "file":
        from recforge.data.readers import read_interactions

        mapping = {f"{k}_col": v for k, v in cfg.columns.items()}
        return read_interactions(
            cfg.path, format=cfg.format, skip_bad_rows=cfg.skip_bad_rows, **mapping
        )
    from recforge.data.readers import load_dataset

    return load_dataset(cfg.source, cfg.data_dir)


def split_data(
    inter: Interactions, cfg: SplitConfig
) -> tuple[Interactions, Interactions | None, Interactions]:
    """(train, valid or None, test)."""
    if cfg.method == "leave_one_out":
        parts = splits.leave_one_out(inter, valid=cfg.valid_ratio > 0)
    elif cfg.method == "random":
        parts = splits.random_split(inter, cfg.test_ratio, cfg.valid_ratio, seed=cfg.seed)
    elif cfg.method == "temporal":
        parts = splits.temporal_split(inter, cfg.test_ratio, cfg.valid_ratio)
    else:
        parts = splits.user_temporal_split(inter, cfg.test_ratio, cfg.valid_ratio)
    if len(parts) == 3:
        return parts  # type: ignore[return-value]
    return parts[0], None, parts[1]


def positives(inter: Interactions, threshold: float | None) -> Interactions:
    """Rows that count as positive feedback for retrieval."""
    if threshold is not None and inter.has("rating"):
        return inter.positives(threshold)
    if inter.has("label"):
        return inter.positives()
    return inter


def ranking_frame(
    inter: Interactions, threshold: float | None, n_negatives: int, seed: int = 0
) -> pd.DataFrame:
    """A labelled frame for a ranker: the log with user/item features joined.

    Label: the log's ``label``; else ``rating >= threshold``; else (implicit log) every row
    is a positive and ``n_negatives`` unclicked items per row are sampled by popularity.
    """
    if not inter.has("label") and not (threshold is not None and inter.has("rating")):
        from recforge.data.synth import make_ctr_frame

        return make_ctr_frame(inter, n_negatives=n_negatives, seed=seed)
    frame = inter.frame.copy()
    if not inter.has("label"):
        frame["label"] = (frame["rating"] >= threshold).astype(np.int8)
    frame = frame.drop(
        columns=[c for c in ("rating", "weight", "timestamp", "split") if c in frame.columns]
    )
    for table, key in ((inter.user_features, "user"), (inter.item_features, "item")):
        if table is not None:
            text = [c for c in table.columns if c in ("title", "zip", "url")]
            t = table.drop(columns=text)
            t = t.add_prefix(f"{key}_") if set(t.columns) & set(frame.columns) else t
            frame = frame.join(t, on=key)
    return frame


# ---------------------------------------------------------------------------- train
def run_train(job: TrainJob, progress: bool = True) -> dict[str, Any]:
    """Run one train job; returns {"output", "metrics", "fit_seconds", ...}."""
    from recforge.evaluation import evaluate_ranker, full_ranking

    cls = models.get_class(job.model.name)
    model = models.get(job.model.name, **job.model.params)
    inter = load_data(job.data)
    train, valid, test = split_data(inter, job.split)
    out = Path(job.output or f"runs/{_stamp()}-{job.model.name}")
    t0 = time.perf_counter()
    if cls.kind == "retrieval":
        model.fit(positives(train, job.data.positive_threshold))
        fit_s = time.perf_counter() - t0
        metrics = full_ranking(
            model, positives(test, job.data.positive_threshold), k=tuple(job.evaluate.k)
        )
    else:
        thr = job.data.positive_threshold
        n_neg = job.evaluate.n_negatives
        tr = ranking_frame(train, thr, n_neg, seed=1)
        va = ranking_frame(valid, thr, n_neg, seed=2) if valid is not None else None
        te = ranking_frame(test, thr, n_neg, seed=3)
        model.fit(tr, label="label", valid=va)
        fit_s = time.perf_counter() - t0
        metrics = evaluate_ranker(
            model, te, label="label", group="user" if "user" in te.columns else None
        )
    metrics["fit_seconds"] = round(fit_s, 3)
    model.save(out, metrics=metrics)
    (out / "job.json").write_text(json.dumps(asdict(job), indent=2))
    return {"output": str(out), "model": job.model.name, "kind": cls.kind, "metrics": metrics}


def _stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
