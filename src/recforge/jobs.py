"""Jobs behind the CLI: load data, split, train, evaluate, save, report.

A train job is one YAML file (``recforge train --config FILE``)::

    data:                     # where the interactions come from
      source: synth           # synth | ml-100k | ml-latest-small | amazon-beauty | frappe | file
      size: small             # synth preset (tiny, small, medium, large, xlarge)
      synth: {n_users: 500}   # optional overrides of the preset's make_synthetic fields
      path: null              # source: file -> a CSV/TSV/Parquet/JSONL log
      user_col: userId        # source: file -> the column roles, as in read_interactions
      item_col: movieId       #   (user_col, item_col, timestamp_col, rating_col, label_col,
      timestamp_col: timestamp  # weight_col); or all at once: columns: {user: userId, ...}
      positive_threshold: 4   # retrieval: keep rating >= 4 as positives
    split: {method: auto, test_ratio: 0.2, valid_ratio: 0.0, seed: 123}  # auto: temporal
    model: {name: itemcf, params: {k: 100}}
    evaluate: {k: [10, 20]}
    output: runs/itemcf       # model directory + job.json + metrics.json + report.md/.html

Every section is a typed dataclass: a misspelt key is an error naming the valid keys and
the closest one, a value of the wrong type (``k: "abc"``) is an error naming the field, and
the model's name and parameters are checked against the registry before any data is read.
Retrieval models train on the (positive) interactions and report full-ranking metrics;
rankers train on a labelled frame (the log's ``label``, ``rating >= positive_threshold``,
or sampled negatives for implicit logs, with user/item features joined) and report AUC,
GAUC and logloss.

A job refuses to write into an output directory that already holds a model unless told to
overwrite it (``recforge train --overwrite``). Errors from the data layer are re-worded in
the job file's terms (``set data.skip_bad_rows: true`` rather than a keyword argument).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import inspect
import json
import logging
import time
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recforge import models
from recforge.config import check_keys, from_dict, load_yaml, suggest
from recforge.data import splits
from recforge.data.interactions import Interactions
from recforge.exceptions import ConfigError, DataError
from recforge.models.params import annotation_matches, check_params, type_name

log = logging.getLogger(__name__)

SOURCES = ("synth", "ml-100k", "ml-latest-small", "amazon-beauty", "frappe", "file")
SPLITS = ("auto", "random", "temporal", "user_temporal", "leave_one_out")
COLUMN_ROLES = ("user", "item", "timestamp", "rating", "label", "weight")


@dataclass
class DataConfig:
    source: str = "synth"  # synth, a named dataset, or "file"
    size: str = "small"  # synth preset name
    seed: int = 0  # synth seed
    synth: dict[str, Any] = field(default_factory=dict)  # overrides of the preset's fields
    path: str | None = None  # source=file: the log file
    format: str | None = None  # source=file: csv/tsv/parquet/jsonl (default: from the suffix)
    columns: dict[str, str] = field(default_factory=dict)  # canonical name -> column in the file
    data_dir: str | None = None  # named datasets: folder holding them (default $RECFORGE_DATA_DIR)
    positive_threshold: float | None = None  # keep rating >= this as positives / labels
    skip_bad_rows: bool = False  # source=file: skip malformed rows (counted) instead of failing
    # source=file: column roles, as read_interactions names them (merged into ``columns``)
    user_col: str | None = None
    item_col: str | None = None
    timestamp_col: str | None = None
    rating_col: str | None = None
    label_col: str | None = None
    weight_col: str | None = None

    def __post_init__(self) -> None:
        check_types(self, "data")
        for role in COLUMN_ROLES:
            column = getattr(self, f"{role}_col")
            if column is None:
                continue
            if self.columns.get(role, column) != column:
                raise ConfigError(
                    f"data.{role}_col: {column!r} disagrees with data.columns.{role}: "
                    f"{self.columns[role]!r}; keep one of them."
                )
            self.columns = {**self.columns, role: column}
        if self.columns and self.source != "file":
            raise ConfigError(
                f"data: column names ({', '.join(f'{r}_col' for r in self.columns)}) apply to "
                f"source: file only; {self.source!r} knows its own columns."
            )
        bad = [r for r in self.columns if r not in COLUMN_ROLES]
        if bad:
            raise ConfigError(
                f"data.columns: unknown role {bad[0]!r}{suggest(str(bad[0]), list(COLUMN_ROLES))}; "
                f"roles: {', '.join(COLUMN_ROLES)}."
            )
        if self.source not in SOURCES:
            raise ConfigError(
                f"data.source: {self.source!r}{suggest(self.source, list(SOURCES))} is not "
                f"one of {', '.join(SOURCES)}."
            )
        if self.source == "file" and not self.path:
            raise ConfigError("data.path is required when data.source is 'file'.")
        if self.synth:
            from recforge.data.synth import SynthConfig

            check_keys(self.synth, [f.name for f in dataclasses.fields(SynthConfig)], "data.synth")


@dataclass
class SplitConfig:
    # auto (temporal when the log has timestamps, else random) | random | temporal |
    # user_temporal | leave_one_out; what each leaks: recforge.data.splits
    method: str = "auto"
    test_ratio: float = 0.2
    valid_ratio: float = 0.0
    seed: int = 0  # random split only

    def __post_init__(self) -> None:
        check_types(self, "split")
        if self.method not in SPLITS:
            raise ConfigError(
                f"split.method: {self.method!r}{suggest(self.method, list(SPLITS))} is not "
                f"one of {', '.join(SPLITS)}."
            )
        for name in ("test_ratio", "valid_ratio"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ConfigError(f"split.{name}: must be in [0, 1), got {value!r}.")
        if self.method != "leave_one_out" and self.test_ratio + self.valid_ratio >= 1:
            raise ConfigError(
                f"split: test_ratio + valid_ratio must be < 1, got "
                f"{self.test_ratio} + {self.valid_ratio}."
            )


@dataclass
class ModelConfig:
    name: str = "itemcf"  # a registered model (`recforge models` lists them)
    params: dict[str, Any] = field(default_factory=dict)  # keyword hyperparameters

    def __post_init__(self) -> None:
        if self.params is None:  # `params:` left empty in YAML
            self.params = {}
        check_types(self, "model")
        check_model_params(self.name, self.params)


@dataclass
class EvalConfig:
    k: list[int] = field(default_factory=lambda: [10, 20])  # cut-offs of top-K metrics
    n_negatives: int = 4  # rankers on implicit logs: sampled negatives per positive

    def __post_init__(self) -> None:
        if isinstance(self.k, int) and not isinstance(self.k, bool):
            self.k = [self.k]
        check_types(self, "evaluate")
        if not self.k or any(k < 1 for k in self.k):
            raise ConfigError(f"evaluate.k: needs positive integers, got {self.k!r}.")
        if self.n_negatives < 1:
            raise ConfigError(f"evaluate.n_negatives: must be >= 1, got {self.n_negatives!r}.")


@dataclass
class TrainJob:
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    output: str | None = None  # model directory; default runs/<timestamp>-<model>

    def __post_init__(self) -> None:
        check_types(self, "")

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainJob:
        """Parse and check a job file; every error names the file and the field."""
        _check_yaml_syntax(Path(path))
        return cls.from_dict(load_yaml(path), where=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "job") -> TrainJob:
        try:
            return from_dict(cls, data, where=where)
        except ConfigError as e:
            msg = str(e)
            raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from None


# ---------------------------------------------------------------------------- checks
def _check_yaml_syntax(path: Path) -> None:
    """A YAML syntax error as one line: file, line, column and the problem."""
    import yaml

    if not path.is_file():
        return  # load_yaml says "not found"
    try:
        yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        context = getattr(e, "context", None)
        raise ConfigError(
            f"{path}{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")
        ) from None


def check_types(obj: Any, where: str) -> None:
    """Raise ConfigError if a field of dataclass ``obj`` does not match its annotation."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            continue
        hint = hints.get(f.name, Any)
        if not annotation_matches(value, hint):
            key = f"{where}.{f.name}" if where else f.name
            raise ConfigError(
                f"{key}: expected {type_name(hint)}, got {type(value).__name__} {value!r}."
            )


def check_model_params(name: str, params: Mapping[str, Any]) -> None:
    """Check that model ``name`` is registered and ``params`` are known names of the right
    types (``recforge.models.params.check_params``), before any data is loaded."""
    check_params(models.get_class(name), params, where="model.params")


# ---------------------------------------------------------------------------- data
# The data layer's hints name Python keyword arguments; in a job they are YAML keys.
_YAML_HINTS = (
    (r"pass skip_bad_rows=True", "set data.skip_bad_rows: true"),
    (r"[Pp]ass data_dir= or set", "Set data.data_dir in the job file or set"),
    (r"[Pp]ass (\w+)_col= with one of them", r"set data.\1_col to one of them"),
    (r"pass format= one of", "set data.format to one of"),
    (
        r"name it with Interactions\.from_frame\(df, timestamp_col=\.\.\.\)",
        "name it with data.timestamp_col",
    ),
    (r"or use random_split", "or set split.method: random"),
    (
        r"Interactions\.from_frame\(df, user_col=\.\.\., item_col=\.\.\.\)",
        "data.user_col / data.item_col",
    ),
)


def in_job_terms(error: Exception) -> str:
    """An error message of the data layer with its hints said as job-file settings."""
    import re

    text = str(error)
    for pattern, repl in _YAML_HINTS:
        text = re.sub(pattern, repl, text)
    return text


def load_data(cfg: DataConfig) -> Interactions:
    """The interaction log a job trains on."""
    if cfg.source == "synth":
        from recforge.data.synth import SIZES, make_synthetic

        if cfg.size not in SIZES:
            raise ConfigError(f"data.size: {cfg.size!r} is not one of {sorted(SIZES)}.")
        try:
            return make_synthetic(**{**SIZES[cfg.size], **cfg.synth, "seed": cfg.seed})
        except ConfigError as e:
            raise ConfigError(f"data.synth: {e}") from None
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
    """(train, valid or None, test). ``method: auto`` is the global temporal split when the
    log has timestamps (train holds only the past: no leak of other users' future), else
    the random split."""
    method = cfg.method
    if method == "auto":
        method = "temporal" if inter.has("timestamp") else "random"
        log.info("split method auto on %s: %s", inter.name, method)
    if method == "leave_one_out":
        parts = splits.leave_one_out(inter, valid=cfg.valid_ratio > 0)
    elif method == "random":
        parts = splits.random_split(inter, cfg.test_ratio, cfg.valid_ratio, seed=cfg.seed)
    elif method == "temporal":
        parts = splits.temporal_split(inter, cfg.test_ratio, cfg.valid_ratio)
    else:
        parts = splits.user_temporal_split(inter, cfg.test_ratio, cfg.valid_ratio)
    if len(parts) == 3:
        return parts  # type: ignore[return-value]
    return parts[0], None, parts[1]


def positives(inter: Interactions, threshold: float | None) -> Interactions:
    """Rows that count as positive feedback for retrieval: ``rating >= threshold`` when a
    threshold is set and the log has ratings, else ``label > 0`` when it has labels, else
    every row."""
    if threshold is not None and inter.has("rating"):
        return inter.positives(threshold)
    return inter.positives()  # label > 0 when there is a label, else every row


def _has_both_labels(inter: Interactions) -> bool:
    return inter.has("label") and inter.frame["label"].nunique() > 1


def ranking_frame(
    inter: Interactions,
    threshold: float | None,
    n_negatives: int,
    seed: int = 0,
    known: Interactions | None = None,
    history: bool = False,
) -> pd.DataFrame:
    """A labelled frame for a ranker: the log with user/item features joined.

    ``history`` (a ranker that ``reads_history``: DIN, DIEN, DSIN, BST): ``history_frame``
    instead, each row with the user's behaviours before it.

    Label: the log's ``label`` when it holds both classes; else ``rating >= threshold``;
    else (an implicit or click-only log) every row is a positive and ``n_negatives``
    unclicked items per row are sampled by popularity. ``known``: the whole log when
    ``inter`` is one split of it; sampled negatives are never an item the user clicked in
    any split (without it, a test negative could be a train click).
    """
    if history:
        return history_frame(inter, n_negatives, seed=seed, known=known)
    use_label = _has_both_labels(inter)
    use_rating = not use_label and threshold is not None and inter.has("rating")
    if not (use_label or use_rating):
        from recforge.data.synth import make_ctr_frame

        return make_ctr_frame(inter, n_negatives=n_negatives, seed=seed, known=known)
    frame = inter.frame.copy()
    if use_rating:
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


HISTORY_LEN = 50  # behaviours kept per row in job frames
SESSION_GAP = 1800.0  # seconds of inactivity that start a new session (DSIN's 30 minutes)


def history_frame(
    inter: Interactions, n_negatives: int, seed: int = 0, known: Interactions | None = None
) -> pd.DataFrame:
    """DIN-style samples (``data.history.history_samples``) for the events of ``inter``,
    histories and never-clicked negatives taken from ``known`` (the whole log), the item's
    categorical features as history attributes and the user features joined."""
    from recforge.data.history import history_samples

    full = known if known is not None else inter
    itf = full.item_features
    attrs = []
    if itf is not None:
        for c in itf.columns:
            col = itf[c]
            scalar = not (col.dtype == object and col.map(lambda v: isinstance(v, list)).any())
            if scalar and not pd.api.types.is_float_dtype(col) and c not in ("title", "url"):
                attrs.append(c)
    frame = history_samples(
        full,
        attributes=attrs,
        max_len=HISTORY_LEN,
        n_negatives=max(1, n_negatives),
        session_gap=SESSION_GAP,
        targets=inter.frame,
        seed=seed,
    ).drop(columns=["events_after"])
    if full.user_features is not None:
        frame = frame.join(full.user_features, on="user")
    return frame


# ---------------------------------------------------------------------------- train
def run_train(job: TrainJob, progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Run one train job: load, split, fit, evaluate; write the model, ``job.json``,
    ``metrics.json`` and ``report.md`` / ``report.html`` into the output directory.

    An output directory that already holds something is refused (ConfigError saying so)
    unless ``overwrite``, which replaces it. Returns {"output": dir, "model": name, "kind",
    "metrics": {..., "fit_seconds"}, "skipped_rows": malformed log rows skipped
    (``data.skip_bad_rows``), "report": report.html}.
    """
    from recforge.train import distributed

    cls = models.get_class(job.model.name)
    model = models.get(job.model.name, **job.model.params)
    out = Path(job.output or f"runs/{_stamp()}-{job.model.name}")
    # under torchrun every rank trains its shard; rank 0 alone checks and writes the output
    t_start = time.perf_counter()
    distributed.init_from_env()
    main_rank = distributed.is_main()
    if main_rank:
        check_output(out, overwrite)
    try:
        inter = load_data(job.data)
        skipped = int(inter.meta.get("skipped_rows", 0) or 0)
        train, valid, test = split_data(inter, job.split)
    except (DataError, ConfigError) as e:
        raise (DataError if isinstance(e, DataError) else ConfigError)(in_job_terms(e)) from None
    thr = job.data.positive_threshold
    t0 = time.perf_counter()
    if cls.kind == "retrieval":
        takes_valid = "valid" in inspect.signature(model.fit).parameters
        extra = {"valid": positives(valid, thr)} if valid is not None and takes_valid else {}
        model.fit(positives(train, thr), **extra)  # valid: per-epoch metrics (torch models)
    else:
        n_neg = job.evaluate.n_negatives
        hist = getattr(cls, "reads_history", False)
        va = None
        if valid is not None:
            va = ranking_frame(valid, thr, n_neg, seed=2, known=inter, history=hist)
        train_frame = ranking_frame(train, thr, n_neg, seed=1, known=inter, history=hist)
        model.fit(train_frame, label="label", valid=va)
    fit_s = time.perf_counter() - t0
    world = distributed.world()[1]
    if world > 1:  # training is the only collective work: leave the group on every rank now
        distributed.barrier_and_shutdown()
    if not main_rank:
        return {
            "output": str(out),
            "model": job.model.name,
            "kind": cls.kind,
            "metrics": {},
            "skipped_rows": skipped,
            "report": None,
            "rank": distributed.world()[0],
        }
    metrics = evaluate_model(model, job, test, known=inter)
    metrics["fit_seconds"] = round(fit_s, 3)
    if world > 1:
        metrics["world_size"] = world
    model.save(out, metrics=metrics)
    (out / "job.json").write_text(json.dumps(asdict(job), indent=2))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    _, report = write_job_report(
        out,
        job,
        model,
        metrics,
        data=inter,
        train=train,
        test=test,
        seconds=time.perf_counter() - t_start,
    )
    return {
        "output": str(out),
        "model": job.model.name,
        "kind": cls.kind,
        "metrics": metrics,
        "skipped_rows": skipped,
        "report": str(report),
    }


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an output directory that already holds files, unless ``overwrite``."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        what = "a model" if (out / "manifest.json").exists() else "files"
        raise ConfigError(
            f"{out}: already holds {what}; refusing to overwrite it. Pass overwrite=True to "
            f"replace it, or set another output."
        )


def write_job_report(
    out: Path,
    job: TrainJob,
    model: Any,
    metrics: Mapping[str, Any],
    *,
    data: Interactions,
    train: Interactions,
    test: Interactions,
    seconds: float | None = None,
    title: str | None = None,
) -> tuple[Path, Path]:
    """``report.md``/``report.html`` of a job: its metrics, the data and split (with the
    split's leakage note), training curves, ROC/PR/calibration for a ranker or
    Recall/NDCG/HR@K curves for a retrieval model, and the run's metadata."""
    from recforge import report_parts as parts
    from recforge.report import Table, training_curves, write_report

    name = job.model.name
    rows = {name: {k: v for k, v in metrics.items() if isinstance(v, int | float)}}
    split = f"{job.split.method}, test_ratio {job.split.test_ratio}"
    sections: list[Any] = [Table("Test metrics", list(rows[name]), rows)]
    sections += parts.data_sections(data, train, test, split)
    sections += training_curves({name: getattr(model, "train_history_", None)})
    thr = job.data.positive_threshold
    if is_pipeline(model):
        sections += parts.channel_sections(model, positives(test, thr))
    elif model.kind == "retrieval":
        sections += parts.recall_sections({name: model}, positives(test, thr))[0]
        itf = data.item_features
        prices = itf["price"] if itf is not None and "price" in itf.columns else None
        sections += parts.list_business_sections({name: model}, positives(test, thr), prices)
    else:
        hist = getattr(model, "reads_history", False)
        frame = ranking_frame(test, thr, job.evaluate.n_negatives, seed=3, known=data, history=hist)
        scores = {name: (frame["label"].to_numpy(), model.predict_proba(frame))}
        sections += parts.ranking_sections(scores)
    meta = {
        "model": f"{name} {json.dumps(job.model.params, default=str)}",
        "data": job.data.source + (f" ({job.data.size})" if job.data.source == "synth" else ""),
        "split": split,
        "rows": f"train {len(train):,}, test {len(test):,}",
        **parts.run_meta(config=asdict(job), data=data, seconds=seconds),
    }
    return write_report(out, title=title or f"recforge train: {name}", sections=sections, meta=meta)


def evaluate_model(
    model: Any, job: TrainJob, test: Interactions, known: Interactions | None = None
) -> dict[str, Any]:
    """The job's test metrics for a fitted model: full ranking of the positive test rows for
    a retrieval model; recall of the merged candidates (``evaluate_recall``) for a
    ``RecallPipeline``; AUC/GAUC/logloss on the labelled test frame for a ranker (``known``:
    the whole log, so that sampled test negatives are never a user's click in any split)."""
    from recforge.evaluation import evaluate_ranker, full_ranking

    thr = job.data.positive_threshold
    if is_pipeline(model):
        from recforge.pipeline.recall import evaluate_recall

        return evaluate_recall(model, positives(test, thr), ks=tuple(job.evaluate.k))
    if model.kind == "retrieval":
        return full_ranking(model, positives(test, thr), k=tuple(job.evaluate.k))
    hist = getattr(model, "reads_history", False)
    frame = ranking_frame(test, thr, job.evaluate.n_negatives, seed=3, known=known, history=hist)
    return evaluate_ranker(model, frame, group="user" if "user" in frame.columns else None)


def is_pipeline(obj: Any) -> bool:
    from recforge.pipeline.recall import RecallPipeline

    return isinstance(obj, RecallPipeline)


def unknown_share_warnings(model: Any, test: Interactions, limit: float = 0.5) -> list[str]:
    """Warnings when more than ``limit`` of the test users or items are unknown to the model
    (it was trained on other data: its metrics mean little). Empty when all is well."""
    out = []
    vocabs = []
    if is_pipeline(model):
        ch = model.channels[0].model
        vocabs = [("user", ch.user_vocab_), ("item", ch.item_vocab_)]
    elif model.kind == "retrieval":
        vocabs = [("user", model.user_vocab_), ("item", model.item_vocab_)]
    for kind, vocab in vocabs:
        ids = pd.unique(test.frame[kind])
        unknown = float((vocab.index(ids, unknown="mask") < 0).mean()) if len(ids) else 0.0
        if unknown > limit:
            out.append(
                f"{unknown:.0%} of the {len(ids):,} test {kind}s are unknown to the model: it was "
                f"probably trained on other data, so these metrics say little. Evaluate on the "
                f"job it was trained with (the job.json beside it) or pass the matching --config."
            )
    return out


def load_saved(path: str | Path) -> Any:
    """A saved model or ``RecallPipeline`` directory; a missing one is a ConfigError that
    says how to make it (and names a close existing directory)."""
    import difflib

    path = Path(path)
    if not path.exists():
        near = []
        if path.parent.is_dir():
            names = [p.name for p in path.parent.iterdir() if p.is_dir()]
            near = difflib.get_close_matches(path.name, names, n=1)
        hint = f" Did you mean {str(path.parent / near[0])!r}?" if near else ""
        raise ConfigError(
            f"{path}: no such directory.{hint} A model directory is what a train job writes "
            f"(`recforge train --config FILE` writes the job's output: folder)."
        )
    from recforge.pipeline.recall import MANIFEST, RecallPipeline

    if (path / MANIFEST).exists():
        return RecallPipeline.load(path)
    return models.load(path)


def _stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
