"""The closed loop: ``recforge retrain --from-feedback``.

One run, safe to start from cron::

    lock      ROOT/NAME/.retrain/lock (flock): a second run while one holds it exits at once
    snapshot  the feedback store's newest event id: events committed later wait for next run
    serving   the newest complete version in ROOT/NAME (or --against V) and the data it was
              trained on: its ``trained_until`` timestamp (written by the run that published
              it; for a version built by ``recforge bundle build``, the end of the job's
              training split)
    data      the bundle job's log + the feedback events mapped to interactions
              (FeedbackMapping: which types are positives, the rating threshold)
    holdout   every row newer than ``trained_until``: the recent slice neither model trained
              on (fewer than ``min_holdout`` positives: nothing new to judge, exit 4)
    candidate the same bundle job trained on the rows up to ``trained_until``
    judge     both bundles replay the funnel (``evaluate_funnel``) for the same held-out users
              (known to both); the metric is ``funnel/<metric>@k`` of the job's evaluate.k
    publish   if candidate >= serving - tolerance: the job refit on every row up to the
              snapshot is published as the next version (``repository.publish``; the
              server's watcher hot-reloads it); else nothing is published

Every run writes a JSON report (both scores, the decision and why) to ``.retrain/last.json``
and, unless it found nothing to do, to ``.retrain/reports/``. A run that finds no event
beyond the last run's snapshot against the same serving version does nothing (exit 4):
rerunning is free. Only the event types that can be positives are read from the store.

Exit codes (``EXIT``): 0 published, 3 kept (the candidate was worse), 4 nothing new,
5 another run holds the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recforge.data.interactions import Interactions
from recforge.exceptions import ConfigError, RecforgeError
from recforge.serving.build import BundleJob, evaluate_funnel, train_bundle
from recforge.serving.feedback import EVENT_TYPES, EventStore, StoredEvent, open_store

log = logging.getLogger(__name__)

EXIT = {"published": 0, "kept": 3, "nothing_new": 4, "locked": 5}
METRICS = ("ndcg", "recall")
WORK = ".retrain"  # under ROOT/NAME: hidden, so the version scan skips it


@dataclass(frozen=True)
class FeedbackMapping:
    """Which feedback events become training interactions (positives)."""

    positive_types: tuple[str, ...] = ("click", "like", "cart", "purchase")
    rating_min: float = 4.0  # a ``rating`` event counts when value >= this

    def __post_init__(self) -> None:
        bad = [t for t in self.positive_types if t not in EVENT_TYPES]
        if bad:
            raise ConfigError(f"positive types: {bad[0]!r} is not one of {', '.join(EVENT_TYPES)}.")

    def is_positive(self, e: StoredEvent) -> bool:
        if e.type == "rating":
            return e.value >= self.rating_min
        return e.type in self.positive_types


@dataclass
class RetrainConfig:
    """One ``recforge retrain`` run."""

    job: BundleJob  # the bundle job that built the serving version (configs/bundles/*.yaml)
    models_root: Path  # the model repository the server watches
    feedback_url: str  # sqlite://PATH or postgresql://...
    name: str | None = None  # model name under the root (default: the job's name)
    mapping: FeedbackMapping = field(default_factory=FeedbackMapping)
    metric: str = "ndcg"  # ndcg | recall, of the served list at the job's evaluate.k
    tolerance: float = 0.0  # publish when candidate >= serving - tolerance (absolute)
    min_holdout: int = 20  # held-out positive rows needed to judge at all
    against: int | None = None  # the serving version to beat (default: the newest complete)
    force: bool = False  # retrain even if nothing arrived since the last run
    report: Path | None = None  # also write the report here

    def __post_init__(self) -> None:
        self.models_root = Path(self.models_root)
        self.name = self.name or self.job.name
        if self.metric not in METRICS:
            raise ConfigError(f"retrain metric {self.metric!r}: one of {', '.join(METRICS)}.")
        if not math.isfinite(self.tolerance) or self.tolerance < 0:
            raise ConfigError(f"retrain tolerance {self.tolerance!r}: a number >= 0.")
        if self.min_holdout < 1:
            raise ConfigError("retrain min_holdout: must be >= 1.")

    @property
    def work(self) -> Path:
        return self.models_root / str(self.name) / WORK


@dataclass
class RetrainResult:
    decision: str  # a key of EXIT
    report: dict[str, Any]
    report_path: Path | None

    @property
    def exit_code(self) -> int:
        return EXIT[self.decision]


# ---------------------------------------------------------------------------- the run
def retrain(cfg: RetrainConfig, echo: Any = None) -> RetrainResult:
    """One closed-loop run (module docstring); returns the decision and the report."""
    say = echo or (lambda msg: log.info("%s", msg))
    cfg.work.mkdir(parents=True, exist_ok=True)
    with _exclusive(cfg.work / "lock") as got:
        if not got:
            say(f"another retrain holds {cfg.work / 'lock'}; nothing done")
            return RetrainResult("locked", {"decision": "locked"}, None)
        store = open_store(cfg.feedback_url)
        try:
            return _run(cfg, store, say)
        finally:
            store.close()


def _run(cfg: RetrainConfig, store: EventStore, say: Any) -> RetrainResult:
    t0 = time.perf_counter()
    snapshot = store.last_id()  # events committed after this wait for the next run
    version, vpath = serving_version(cfg.models_root / str(cfg.name), cfg.against)
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": cfg.name,
        "serving_version": version,
        "feedback_until_id": snapshot,
        "settings": {
            "metric": f"funnel/{cfg.metric}@{cfg.job.evaluate.k}",
            "tolerance": cfg.tolerance,
            "min_holdout": cfg.min_holdout,
            "mapping": asdict(cfg.mapping),
        },
    }
    last = _read_json(cfg.work / "state.json")
    if (
        not cfg.force
        and last.get("feedback_until_id") == snapshot
        and last.get("serving_version") == version
    ):
        why = f"no event since id {snapshot} and version {version} was judged already"
        return _finish(cfg, report, "nothing_new", why, say, t0)

    from recforge.jobs import load_data, positives

    log_ = load_data(cfg.job.data)
    types = sorted({*cfg.mapping.positive_types, "rating"})  # the rest is never read
    events = store.events(until=snapshot, types=types)
    fb, counts = feedback_interactions(events, log_, cfg.mapping)
    report["feedback"] = counts
    say(f"feedback: {counts['events']} events up to id {snapshot}, {counts['rows']} positives")
    data = combine(log_, fb)
    until = trained_until(vpath, cfg.job, log_)
    ts = data.frame["timestamp"].to_numpy()
    seen, new = data.subset(ts <= until), data.subset(ts > until)
    thr = cfg.job.data.positive_threshold
    held = positives(new, thr)
    report["holdout"] = {"after_timestamp": until, "rows": len(held)}
    if len(held) < cfg.min_holdout:
        why = f"{len(held)} positive rows newer than version {version}'s data (< {cfg.min_holdout})"
        return _finish(cfg, report, "nothing_new", why, say, t0, snapshot, version)

    from recforge.serving.core import Recommender

    cand_dir = cfg.work / "candidate"
    say(f"candidate: the job on {len(seen):,} rows up to t={until:.0f}")
    train_bundle(cfg.job, seen, None, data, cand_dir, say=say)
    serving, candidate = Recommender.load(vpath), Recommender.load(cand_dir)
    test = _common_users(held, [serving, candidate])
    key = f"funnel/{cfg.metric}@{cfg.job.evaluate.k}"
    scores = {}
    for label, rec in (("serving", serving), ("candidate", candidate)):
        ev = cfg.job.evaluate
        scores[label] = evaluate_funnel(rec, test, k=ev.k, max_users=ev.max_users, seed=ev.seed)
    report["scores"] = scores
    s, c = scores["serving"][key], scores["candidate"][key]
    say(
        f"{key}: serving v{version} {s:.4f}, candidate {c:.4f} ({scores['serving']['n_users']} users)"
    )
    shutil.rmtree(cand_dir, ignore_errors=True)
    if c < s - cfg.tolerance:
        why = f"candidate {key} {c:.4f} < serving {s:.4f} - tolerance {cfg.tolerance}"
        return _finish(cfg, report, "kept", why, say, t0, snapshot, version)

    from recforge.serving.bundle import verify_bundle
    from recforge.serving.repository import publish

    full_dir = cfg.work / "bundle"
    data_until = float(ts.max())
    meta = {"retrain": {"trained_until": data_until, "feedback_until_id": snapshot,
                        "holdout": scores["candidate"], "against_version": version}}  # fmt: skip
    say(f"publish: the job refit on all {len(data):,} rows")
    train_bundle(cfg.job, data, None, data, full_dir, say=say, metrics=meta)
    final = publish(full_dir, cfg.models_root / str(cfg.name), verify=verify_bundle)
    shutil.rmtree(full_dir, ignore_errors=True)
    report["published_version"] = int(final.name)
    why = f"candidate {key} {c:.4f} >= serving {s:.4f} - tolerance {cfg.tolerance}"
    return _finish(cfg, report, "published", why, say, t0, snapshot, int(final.name))


def _finish(
    cfg: RetrainConfig,
    report: dict[str, Any],
    decision: str,
    why: str,
    say: Any,
    t0: float,
    snapshot: int | None = None,
    version: int | None = None,
) -> RetrainResult:
    """Write the report (and the state that makes the next run idempotent)."""
    report.update(decision=decision, reason=why, seconds=round(time.perf_counter() - t0, 1))
    say(f"{decision}: {why}")
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    path = cfg.work / "reports" / f"{stamp}-{decision}.json"
    if decision == "nothing_new" and snapshot is None:
        path = cfg.work / "last.json"  # an idle cron run leaves no new file behind
    text = json.dumps(report, indent=2, default=float)
    for p in {path, cfg.work / "last.json", *([cfg.report] if cfg.report else [])}:
        _write_atomic(Path(p), text)
    if snapshot is not None:
        state = {"feedback_until_id": snapshot, "serving_version": version}
        _write_atomic(cfg.work / "state.json", json.dumps(state))
    return RetrainResult(decision, report, path)


# ---------------------------------------------------------------------------- pieces
def serving_version(name_dir: Path, against: int | None = None) -> tuple[int, Path]:
    """(version, directory) of the version to beat: ``against``, else the newest complete."""
    from recforge.serving.repository import VersionSource

    found = VersionSource(name_dir.parent).scan().get(name_dir.name, {})
    complete = {v: d.path for v, d in found.items() if d.complete}
    if against is not None:
        if against not in complete:
            raise ConfigError(
                f"--against {against}: no complete version {name_dir / str(against)}."
            )
        return against, complete[against]
    if not complete:
        raise ConfigError(
            f"{name_dir}: no complete version to retrain against; publish the first one with "
            f"`recforge models publish BUNDLE {name_dir}`."
        )
    v = max(complete)
    return v, complete[v]


def trained_until(bundle_dir: Path, job: BundleJob, log_: Interactions) -> float:
    """The newest timestamp the bundle trained on: written by the retrain that published it,
    else (a bundle from ``recforge bundle build``) the end of the job's training split."""
    meta = _read_json(bundle_dir / "bundle.json").get("metrics", {}).get("retrain", {})
    if "trained_until" in meta:
        return float(meta["trained_until"])
    from recforge.jobs import split_data

    train, valid, _ = split_data(log_, job.split)
    seen = [train] + ([valid] if valid is not None else [])
    return float(max(p.frame["timestamp"].max() for p in seen))


def feedback_interactions(
    events: Iterator[StoredEvent], log_: Interactions, mapping: FeedbackMapping
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Positive feedback events as rows shaped like ``log_``'s frame, and counts of what was
    read, kept and dropped. Ids are turned back into the log's raw ids (the store keeps
    strings); an item the catalogue does not hold is dropped (no features to serve it with),
    as is a repeated (user, item) pair (the first event counts). Columns the events do not
    carry: ``rating`` is the event's value for a rating, else the log's highest; ``label``
    1; ``weight`` 1; a context column (``device``) its most frequent value in the log."""
    frame = log_.frame
    if "timestamp" not in frame.columns:
        raise ConfigError(
            f"{log_.name}: the closed loop needs timestamps (the held-out slice is the newest)."
        )
    items = pd.Index(frame["item"].unique())
    if log_.item_features is not None:
        items = items.union(log_.item_features.index)
    item_of = {str(i): i for i in items}
    user_of = {str(u): u for u in frame["user"].unique()}
    users_are_str = not pd.api.types.is_numeric_dtype(frame["user"])
    counts = {"events": 0, "rows": 0, "not_positive": 0, "unknown_item": 0, "bad_user": 0}
    rows: list[tuple] = []
    for e in events:
        counts["events"] += 1
        if not mapping.is_positive(e):
            counts["not_positive"] += 1
            continue
        item = item_of.get(e.item)
        if item is None:
            counts["unknown_item"] += 1
            continue
        user = user_of.get(e.user, e.user if users_are_str else _as_int(e.user))
        if user is None:
            counts["bad_user"] += 1
            continue
        rows.append((user, item, e.timestamp, e.value if e.type == "rating" else None))
    fb = pd.DataFrame(rows, columns=["user", "item", "timestamp", "value"])
    before = len(fb)
    fb = fb.drop_duplicates(["user", "item"], keep="first")
    counts["repeated"] = before - len(fb)
    counts["rows"] = len(fb)
    out = pd.DataFrame({"user": fb["user"], "item": fb["item"]})
    ts_dtype = frame["timestamp"].dtype
    out["timestamp"] = (
        fb["timestamp"].round().astype(ts_dtype) if ts_dtype.kind in "iu" else fb["timestamp"]
    )
    for col in frame.columns:
        if col in out.columns:
            continue
        if col == "rating":
            top = frame["rating"].max()
            out[col] = fb["value"].fillna(top).astype(frame[col].dtype)
        elif col in ("label", "weight"):
            out[col] = np.ones(len(fb), dtype=frame[col].dtype)
        else:
            mode = frame[col].mode()
            out[col] = mode.iloc[0] if len(mode) else None
    return out.reset_index(drop=True), counts


def combine(log_: Interactions, fb: pd.DataFrame) -> Interactions:
    """The log and the feedback rows in one time-ordered log (features of the log)."""
    frame = pd.concat([log_.frame, fb[list(log_.frame.columns)]], ignore_index=True)
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    return Interactions(frame, log_.user_features, log_.item_features, name=f"{log_.name}+feedback")


def _common_users(held: Interactions, recs: Sequence[Any]) -> Interactions:
    """The held-out rows of users every bundle's first recall channel knows: both bundles
    are judged on the same users."""
    mask = np.ones(len(held), dtype=bool)
    users = held.frame["user"]
    for rec in recs:
        known = rec.pipeline.channels[0].model.user_vocab_.raw_ids
        mask &= users.isin(set(known.tolist())).to_numpy()
    if not mask.any():
        raise RecforgeError("no held-out user is known to both bundles; nothing to judge.")
    return held.subset(mask)


def _as_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[bool]:
    """Yields True while holding an exclusive flock on ``path``, False if another holds it."""
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
