"""Recall at 40k items: every CF model with its defaults on a synthetic 30k x 40k x 800k log,
next to implicit's ALS and BPR run raw in the same run.

Data: ``recforge.data.synth.make_synthetic(**SYNTH)``: 30,000 users, 40,000 items, 800,000
interactions, power-law item popularity (rank^-0.9) softened in the choice (popularity
weight 0.5), 100 categories in a 32-d latent space, sharp tastes (temperature 0.1). The
shape of the public ~30k x 41k x ~810k check-in benchmark (Gowalla as prepared for
LightGCN) that issue 14's published Recall@20 figures come from; that dataset is not on
this machine, so those figures cannot be checked here and the table compares models and
peers on the synthetic log only.

Protocol: rows split at random 80/20 (``random_split(seed=0)``, test pairs whose user or
item is unseen in train dropped); each model fitted on train with its registry defaults
(``models.get(name)``), full ranking over every train item with the user's train items
excluded, Recall@20 / NDCG@20 (``recforge.evaluation.full_ranking``). ``--split valid``
instead splits train 80/20 again (seed 1) and scores the validation part: that is what
defaults are chosen on; the test split is scored once, for the table. ``--params JSON``
overrides the defaults of every model run (a probe); ``--curve`` (validation split only)
also passes the validation part to the torch models' ``fit(valid=...)``: per-epoch
recall@10 on 2,000 of its rows (``valid_recall@10`` in the row), which their early
stopping then monitors instead of held-out training cells. ``--full-curve`` (validation
split only; training unchanged) also scores the Recall@20 of the whole evaluation part
after each epoch (``full_recall@20`` in the row's ``epoch_valid``, beside the held-out
cells' metrics that early stopping monitors), to see whether the epoch those cells pick is
the one the evaluation would; ``--held-out N`` sets ``torch_base.HELD_OUT_ROWS`` (the most
training cells early stopping holds out) in the child. With ``RECFORGE_BENCH_LOG=FILE``
each model child appends its Trainer's per-epoch lines (loss, validation metrics) to FILE as
they end, to stop a probe whose curve is clearly behind.

Each model runs in its own child process (``--child``), which reads the split from
Parquet files the parent wrote, so its peak RSS (``VmHWM``) is its own: the interpreter,
the data, the fit and the evaluation. Epoch time is fit time over epochs (iterations) for
models that have them.

    nice -n 10 python -m benchmarks.recall_scale --docs docs/BENCHMARKS.md
    python -m benchmarks.recall_scale --models ease --split valid     # one model
    python -m benchmarks.recall_scale --models simplex --split valid --curve \
        --params '{"epochs": 8, "n_negatives": 1000}'                 # a probe
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import REPO, peak_rss_kib

log = logging.getLogger(__name__)

SUBSECTION = "### Recall at 40k items"
COMMAND = "nice -n 10 python -m benchmarks.recall_scale --docs docs/BENCHMARKS.md"
THREADS = int(os.environ.get("RECFORGE_BENCH_THREADS", "2"))  # per model child
K = 20

SYNTH: dict[str, Any] = dict(
    n_users=30_000,
    n_items=40_000,
    n_interactions=800_000,
    n_categories=100,
    dim=32,
    n_brands=2_000,
    n_tags=200,
    n_cities=50,
    popularity_alpha=0.9,
    popularity_weight=0.5,
    temperature=0.1,
    daypart_effect=0.0,  # no time-of-day bias: the log these settings were chosen on
    seed=0,
)

# recforge models with their defaults (num_threads is the machine's, not a hyperparameter);
# "implicit_*" are the peers, run raw with the same hyperparameters as our defaults.
MODELS = (
    "most_popular",
    "itemcf",
    "als",
    "bpr",
    "item2vec",
    "youtube_dnn",
    "ease",
    "lightgcn",
    "simplex",
    "implicit_als",
    "implicit_bpr",
)
TIMEOUT_S = 45 * 60  # per model child


def log_epochs_to_env_file() -> None:
    """With ``RECFORGE_BENCH_LOG=FILE`` set, append the Trainer's per-epoch lines (loss,
    validation metrics) to FILE as each epoch ends, to watch a probe's curve."""
    path = os.environ.get("RECFORGE_BENCH_LOG")
    if not path:
        return
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    trainer_log = logging.getLogger("recforge.train")
    trainer_log.addHandler(handler)
    trainer_log.setLevel(logging.INFO)
    trainer_log.propagate = False  # not also on stderr


# ---------------------------------------------------------------------------- data
def write_split(folder: Path, split: str = "test") -> dict[str, Any]:
    """Generate the synthetic log, split it and write ``train.parquet`` and ``eval.parquet``
    (user, item) into ``folder``; returns the sizes."""
    from recforge.data.splits import random_split
    from recforge.data.synth import make_synthetic

    inter = make_synthetic(**SYNTH)
    train, test = random_split(inter, 0.2, seed=0)
    if split == "valid":
        train, test = random_split(train, 0.2, seed=1)
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("eval", test)):
        part.frame[["user", "item"]].to_parquet(folder / f"{name}.parquet", index=False)
    return {
        "rows": len(inter),
        "train_rows": len(train),
        "eval_rows": len(test),
        "users": int(train.frame["user"].nunique()),
        "items": int(train.frame["item"].nunique()),
    }


def _read(folder: Path) -> tuple[Any, Any]:
    from recforge.data.interactions import Interactions

    return (
        Interactions(pd.read_parquet(folder / "train.parquet")),
        Interactions(pd.read_parquet(folder / "eval.parquet")),
    )


# ---------------------------------------------------------------------------- one model
def _epochs(model: Any) -> int | None:
    hist = getattr(model, "train_history_", None)
    if hist is not None and hist.train_loss:  # epochs actually run (early stopping)
        return len(hist.train_loss)
    for name in ("epochs", "iterations"):
        if hasattr(model, name):
            return int(getattr(model, name))
    return None


def _implicit_peer(kind: str, train: Any) -> tuple[Any, dict[str, Any], float]:
    """Fit implicit's ALS/BPR raw on train's matrix with recforge's default hyperparameters;
    returns (an EmbeddingMixin-like recforge model holding the factors, params, fit s)."""
    from threadpoolctl import threadpool_limits

    from recforge import models

    ours = models.get(kind, num_threads=THREADS)
    params = {k: v for k, v in ours.get_params().items() if k in PEER_KEYS[kind]}
    # the vocabularies and seen matrix, without training (iterations are what we time)
    shell = models.get(kind, **{**params, "iterations": 1}, num_threads=THREADS).fit(train)
    params.update(_resolved(shell))  # ALS's data-dependent defaults, as our fit used them
    if kind == "als":
        from implicit.cpu.als import AlternatingLeastSquares as Est
    else:
        from implicit.cpu.bpr import BayesianPersonalizedRanking as Est
    est = Est(**params, num_threads=THREADS, random_state=0)
    t = time.perf_counter()
    with threadpool_limits(1, "blas"):
        est.fit(shell.seen_, show_progress=False)
    fit_s = time.perf_counter() - t
    shell.user_factors_ = np.ascontiguousarray(est.user_factors, dtype=np.float32)
    shell.item_factors_ = np.ascontiguousarray(est.item_factors, dtype=np.float32)
    return shell, params, fit_s


def _resolved(model: Any) -> dict[str, Any]:
    """Hyperparameters a model resolved at fit from None defaults (ALS's ``alpha_``...)."""
    out = {
        k: getattr(model, k + "_")
        for k in ("alpha", "regularization", "batch_size", "lr")
        if hasattr(model, k + "_")
    }
    out.update(
        getattr(model, "settings_", None) or {}
    )  # e.g. YouTube-DNN: the density-chosen settings
    hist = getattr(model, "train_history_", None)
    if hist is not None and hist.best_epoch is not None:
        out["best_epoch"] = hist.best_epoch + 1  # 1-based: the epoch whose weights were kept
    return out


PEER_KEYS = {
    "als": ("factors", "regularization", "alpha", "iterations"),
    "bpr": ("factors", "learning_rate", "regularization", "iterations"),
}


def run_child(
    name: str,
    folder: Path,
    params: dict[str, Any] | None = None,
    curve: bool = False,
    full_curve: bool = False,
    held_out: int | None = None,
) -> dict[str, Any]:
    """Fit and evaluate one model in this process (``curve``: with the evaluation part as
    ``fit(valid=...)``, ``full_curve``: its Recall@20 per epoch, both for the validation
    split only; ``held_out``: ``torch_base.HELD_OUT_ROWS``); returns its row."""
    from recforge import models
    from recforge.evaluation import full_ranking
    from recforge.models.retrieval import torch_base
    from recforge.threads import set_default_threads

    set_default_threads(THREADS)
    if held_out is not None:
        torch_base.HELD_OUT_ROWS = int(held_out)
    train, test = _read(folder)
    rss_data = peak_rss_kib()
    if name.startswith("implicit_"):
        cpu = time.process_time()
        model, shown, fit_s = _implicit_peer(name.removeprefix("implicit_"), train)
        fit_cpu_s = time.process_time() - cpu
        source = "implicit"
    else:
        model = models.get(name, **(params or {}))
        if full_curve:
            _with_full_curve(model, test)
        t, cpu = time.perf_counter(), time.process_time()
        model.fit(train, valid=test) if curve else model.fit(train)
        fit_s = time.perf_counter() - t
        fit_cpu_s = time.process_time() - cpu
        source = "recforge"
        shown = {**model.get_params(), **_resolved(model)}
    t = time.perf_counter()
    res = full_ranking(model, test, k=K, metrics=("recall", "ndcg"))
    epochs = _epochs(model) if source == "recforge" else shown.get("iterations")
    hist = getattr(model, "train_history_", None)
    curve_r10 = [round(v["recall@10"], 4) for v in hist.valid] if curve and hist else None
    per_epoch = [{k: round(v, 4) for k, v in e.items()} for e in hist.valid] if hist else None
    return {
        "model": name,
        "source": source,
        "recall@20": res[f"recall@{K}"],
        "ndcg@20": res[f"ndcg@{K}"],
        "fit_s": fit_s,
        "fit_cpu_s": fit_cpu_s,
        "load_at_fit_end": os.getloadavg()[0],
        "epochs": epochs,
        "epoch_s": fit_s / epochs if epochs else None,
        "eval_s": time.perf_counter() - t,
        "peak_rss_mib": peak_rss_kib() / 1024,
        "rss_after_data_mib": rss_data / 1024,
        "params": {k: v for k, v in shown.items() if k not in ("num_threads", "progress")},
        "valid_recall@10": curve_r10,
        "epoch_valid": per_epoch,
        "best_epoch": getattr(hist, "best_epoch", None),
    }


def _spawn(
    name: str,
    folder: Path,
    params: dict[str, Any] | None,
    timeout: float,
    curve: bool = False,
    full_curve: bool = False,
    held_out: int | None = None,
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.recall_scale",
        "--child",
        name,
        "--folder",
        str(folder),
    ]
    if params:
        cmd += ["--params", json.dumps(params)]
    if curve:
        cmd += ["--curve"]
    if full_curve:
        cmd += ["--full-curve"]
    if held_out is not None:
        cmd += ["--held-out", str(held_out)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH")])
        ),
    }
    t = time.perf_counter()
    try:
        out = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"model": name, "error": f"over the {timeout:.0f} s budget"}
    last = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not last:
        tail = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
        return {"model": name, "error": tail}
    row = json.loads(last[-1])
    row["wall_s"] = time.perf_counter() - t
    return row


def _with_full_curve(model: Any, test: Any) -> None:
    """Make ``model``'s per-epoch validation also report ``full_recall@K``: ``full_ranking``'s
    Recall@K of the evaluation part with the user and item vectors of that epoch. A probe:
    what the model trains on and stops on is unchanged (the fit's end sets the final
    vectors)."""
    from recforge.evaluation import full_ranking

    epoch_valid_fn = model._epoch_valid_fn

    def wrapped(vectors: Any) -> Any:
        fn = epoch_valid_fn(vectors)
        if vectors is None:
            return fn

        def both(module: Any) -> dict[str, float]:
            out = dict(fn(module)) if fn is not None else {}
            model.user_factors_, model.item_factors_ = vectors(module)
            res = full_ranking(model, test, k=K, metrics=("recall",))
            out[f"full_recall@{K}"] = res[f"recall@{K}"]
            return out

        return both

    model._epoch_valid_fn = wrapped


# ---------------------------------------------------------------------------- report
def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def markdown(rows: list[dict[str, Any]], sizes: dict[str, Any], split: str) -> str:
    load = os.getloadavg()
    lines = [
        SUBSECTION,
        "",
        f"Run on {_dt.date.today().isoformat()} (python {platform.python_version()}, "
        f"{THREADS} threads per model, 1-min load average {load[0]:.1f} at the end) with:",
        "",
        f"    {COMMAND}" + ("" if split == "test" else f" --split {split}"),
        "",
        f"Synthetic log `make_synthetic(**benchmarks.recall_scale.SYNTH)`: {sizes['rows']:,} "
        f"interactions; train {sizes['train_rows']:,} rows over {sizes['users']:,} users x "
        f"{sizes['items']:,} items, {split} {sizes['eval_rows']:,} rows (random 80/20, seed 0). "
        "Each model with its registry defaults, in its own process; full ranking, train items "
        "excluded. Peak RSS is the child's VmHWM (interpreter + data + fit + evaluation). "
        "implicit's ALS/BPR run raw with the same hyperparameters as recforge's defaults. "
        "The ~30k x 41k real dataset behind issue 14's published Recall@20 figures is not "
        "on this machine: those figures are not checked here.",
        "",
        "| Model | Source | Recall@20 | NDCG@20 | Fit (s) | Epoch (s) | Peak RSS (MiB) | Params |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | - | - | - | - | - | - | not run: {r['error']} |")
            continue
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items() if v is not None)
        lines.append(
            f"| {r['model']} | {r['source']} | {r['recall@20']:.4f} | {r['ndcg@20']:.4f} | "
            f"{r['fit_s']:.1f} | {_fmt(r['epoch_s'], '.1f')} | {r['peak_rss_mib']:,.0f} | {params} |"
        )
    return "\n".join(lines) + "\n"


def run(
    data_dir: Any = None,
    out: str | Path | None = None,
    *,
    models: tuple[str, ...] = MODELS,
    split: str = "test",
    timeout: float = TIMEOUT_S,
    params: dict[str, Any] | None = None,
    curve: bool = False,
    full_curve: bool = False,
    held_out: int | None = None,
) -> dict[str, Any]:
    """Run the benchmark (module docstring); ``data_dir`` is unused (the data are synthetic).
    Returns {"rows": [...], "sizes": {...}, "markdown": str}."""
    if (curve or full_curve) and split != "valid":
        raise ValueError(
            "curve and full_curve score epochs on the evaluation part: use split='valid'."
        )
    with tempfile.TemporaryDirectory(prefix="recall_scale_") as tmp:
        folder = Path(out or tmp) / f"recall_scale_{split}"
        sizes = write_split(folder, split)
        rows = []
        for name in models:
            row = _spawn(name, folder, params, timeout, curve, full_curve, held_out)
            log.info("recall_scale: %s", row)
            print(json.dumps(row, default=str), flush=True)
            rows.append(row)
    return {"rows": rows, "sizes": sizes, "markdown": markdown(rows, sizes, split)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--split", choices=("test", "valid"), default="test")
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per model")
    ap.add_argument("--docs", default=None, help="markdown file to update")
    ap.add_argument("--out", default=None, help="folder for the split files (default: temp)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--params", default=None, help="JSON: parameters for every model run")
    ap.add_argument("--curve", action="store_true", help="per-epoch validation (--split valid)")
    ap.add_argument("--full-curve", action="store_true", help="per-epoch Recall@20 (--split valid)")
    ap.add_argument("--held-out", type=int, default=None, help="torch_base.HELD_OUT_ROWS")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        log_epochs_to_env_file()
        params = json.loads(args.params) if args.params else None
        row = run_child(
            args.child, Path(args.folder), params, args.curve, args.full_curve, args.held_out
        )
        print(json.dumps(row, default=str))
        return
    result = run(
        models=tuple(m for m in args.models.split(",") if m),
        split=args.split,
        timeout=args.timeout,
        out=args.out,
        params=json.loads(args.params) if args.params else None,
        curve=args.curve,
        full_curve=args.full_curve,
        held_out=args.held_out,
    )
    print(result["markdown"])
    if args.docs:
        from benchmarks.recall_zoo import update_docs

        print(f"updated {update_docs(result['markdown'], args.docs)}")


if __name__ == "__main__":
    main()
