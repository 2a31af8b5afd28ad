"""Multi-task ranking, click -> conversion: ESMM, PLE and MMoE against single-task DeepFMs,
per-task AUC on MovieLens 100K and the synthetic log.

Protocol
--------
* **Impressions.** The log is split at random into train / validation / test rows (80/10/10,
  ``random_split`` seed ``SEED``, cold rows dropped). Each part becomes impressions with
  ``make_ctr_frame(part, n_negatives=NEG, known=whole log, conversion_min_rating=4)``: every
  logged row is a click (label 1) next to ``NEG`` unclicked items drawn by exposure
  (label 0); ``conversion`` is 1 on a click whose rating is >= 4 (MovieLens: the user's
  rating; synthetic: the generator's rating, which follows the user's utility) and 0
  elsewhere. Features: user, item, user and item side columns (MovieLens: age, gender,
  occupation, genres, release year; synthetic: age, gender, city, category, brand, price,
  tags, device).
* **Models.** ``esmm``, ``ple``, ``mmoe`` fit both labels at once. Single-task baselines:
  DeepFM on click, DeepFM on conversion over all impressions (pCTCVR directly), and the
  "naive CVR" DeepFM trained on clicked rows only (the sample-selection-biased model ESMM
  is meant to fix; its pCTCVR = pCTR(single) · pCVR(naive)). Every torch model: embedding
  ``DIM``, MLP/experts ``HIDDEN``, Adam lr ``LR``, batch ``BATCH``, at most ``EPOCHS``
  epochs with the epoch chosen on validation AUC (mean of the tasks for multi-task ones),
  seed 0, ``THREADS`` threads.
* **Metrics** on test impressions: AUC of click, AUC of conversion (pCTCVR over every
  impression), and CVR AUC on the clicked test rows only (each model's p(conversion |
  click): ESMM's CVR tower; pCTCVR / pCTR for MMoE and PLE; the naive model's output).

Run it::

    python -m benchmarks.multitask --data-dir ../shared/data --docs docs/BENCHMARKS.md
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
from recforge.data.splits import random_split
from recforge.data.synth import SIZES, make_ctr_frame, make_synthetic
from recforge.metrics import auc

log = logging.getLogger(__name__)

SECTION = "## Ranking quality"
SUBSECTION = "### Multi-task: click -> conversion (ESMM, PLE, MMoE vs single-task)"
COMMAND = "python -m benchmarks.multitask --data-dir ../shared/data --docs docs/BENCHMARKS.md"
SEED = 2024
NEG = 2
DIM = 16
HIDDEN = (64, 32)
LR = 5e-3
BATCH = 2048
EPOCHS = 3
THREADS = 2
MULTI = ("esmm", "ple", "mmoe")


def load_ml100k(data_dir: str | Path) -> Interactions:
    """MovieLens 100K with age, gender, occupation and genres, release year (title and zip
    dropped: free text / near-unique)."""
    from recforge.data.readers import read_movielens_100k

    data = read_movielens_100k(Path(data_dir) / "ml-100k")
    items = data.item_features.drop(columns=["title"]).copy()
    items["year"] = items["year"].fillna(0).astype(np.int64).astype(str)
    users = data.user_features.drop(columns=["zip"]).copy()
    users["age"] = (users["age"] // 10 * 10).astype(str)  # decade bands
    return Interactions(data.frame, users, items, name="ml-100k")


def load_synth(_data_dir: str | Path | None = None) -> Interactions:
    return make_synthetic(**{**SIZES["small"], "n_interactions": 40_000}, seed=SEED)


DATASETS = {"ml100k": load_ml100k, "synth": load_synth}


def frames(inter: Interactions) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train / validation / test impressions with ``label`` (click) and ``conversion``."""
    train, valid, test = random_split(inter, 0.1, 0.1, seed=SEED)
    out = []
    for k, part in enumerate((train, valid, test)):
        f = make_ctr_frame(part, n_negatives=NEG, seed=SEED + k, known=inter,
                           conversion_min_rating=4)  # fmt: skip
        out.append(f.drop(columns=[c for c in ("timestamp", "rating") if c in f]))
    return out[0], out[1], out[2]


def _params(name: str) -> dict[str, Any]:
    common = dict(embedding_dim=DIM, lr=LR, batch_size=BATCH, epochs=EPOCHS, patience=1,
                  seed=0, num_threads=THREADS, progress=False)  # fmt: skip
    own = {
        "esmm": {"hidden": HIDDEN},
        "ple": {"expert_hidden": HIDDEN, "tower_hidden": (16,), "n_levels": 2},
        "mmoe": {"expert_hidden": HIDDEN, "tower_hidden": (16,), "n_experts": 3},
        "deepfm": {"hidden": HIDDEN},
    }[name]
    return {**common, **own}


def evaluate(name: str, train, valid, test, cache: dict[str, Any]) -> dict[str, Any]:
    """One row: fit time and the three test AUCs. ``cache`` keeps the single-task click
    DeepFM that both single-task rows use (its fit time is counted once, in the first)."""
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    click, conv = test["label"].to_numpy(), test["conversion"].to_numpy()
    clicked = click == 1
    if name in MULTI:
        model = models.get(name, **_params(name))
        model.fit(train, label=["label", "conversion"], valid=valid)
        p = model.predict_proba(test)
        p_ctr, p_ctcvr = p[:, 0], p[:, 1]
        p_cvr = model.predict_cvr(test) if name == "esmm" else p_ctcvr / np.maximum(p_ctr, 1e-9)
    else:  # single-task DeepFMs: click, conversion over all impressions, naive CVR
        if "ctr" not in cache:
            ctr = models.get("deepfm", **_params("deepfm")).fit(  # conversion is no feature
                train.drop(columns="conversion"), "label", valid.drop(columns="conversion")
            )
            cache["ctr"] = ctr.predict_proba(test)
        p_ctr = cache["ctr"]
        if name == "deepfm_single":
            ctcvr = models.get("deepfm", **_params("deepfm")).fit(
                train.drop(columns="label"), "conversion", valid.drop(columns="label")
            )
            p_ctcvr = ctcvr.predict_proba(test)
            p_cvr = p_ctcvr / np.maximum(p_ctr, 1e-9)
        else:  # deepfm_naive_cvr
            tr, va = train[train["label"] == 1], valid[valid["label"] == 1]
            cvr = models.get("deepfm", **_params("deepfm")).fit(
                tr.drop(columns="label"), "conversion", va.drop(columns="label")
            )
            p_cvr = cvr.predict_proba(test)
            p_ctcvr = p_ctr * p_cvr
    return {
        "model": name,
        "auc_click": auc(click, p_ctr),
        "auc_conversion": auc(conv, p_ctcvr),
        "auc_cvr_clicked": auc(conv[clicked], p_cvr[clicked]),
        "fit_s": time.perf_counter() - t0,
        "load": f"{load0:.1f}-{os.getloadavg()[0]:.1f}",
    }


def run(
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    *,
    datasets: tuple[str, ...] = ("ml100k", "synth"),
    model_names: tuple[str, ...] = (*MULTI, "deepfm_single", "deepfm_naive_cvr"),
) -> dict[str, Any]:
    """Every model on every dataset; returns ``{"rows": [...], "markdown": ...}``."""
    rows, sizes = [], {}
    for ds in datasets:
        train, valid, test = frames(DATASETS[ds](data_dir))
        sizes[ds] = {
            "rows": (len(train), len(valid), len(test)),
            "click": float(train["label"].mean()),
            "conv_given_click": float(train.loc[train["label"] == 1, "conversion"].mean()),
        }
        cache: dict[str, Any] = {}
        for name in model_names:
            log.info("multitask: %s on %s", name, ds)
            row = evaluate(name, train, valid, test, cache)
            rows.append({"dataset": ds, **row})
            log.info("%s", rows[-1])
    result = {"rows": rows, "sizes": sizes, "date": _dt.date.today().isoformat()}
    result["markdown"] = to_markdown(result)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "multitask.md").write_text(result["markdown"])
    return result


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        SUBSECTION,
        "",
        f"Impressions from each log: every row a click next to {NEG} exposure-sampled "
        "unclicked items; conversion = a click rated >= 4. Random 80/10/10 row split (seed "
        f"{SEED}); embedding {DIM}, MLP/experts {HIDDEN}, Adam lr {LR}, batch {BATCH}, at most "
        f"{EPOCHS} epochs chosen on validation AUC, {THREADS} threads, one seed. "
        "`deepfm_single`: one DeepFM per label over all impressions; `deepfm_naive_cvr`: "
        "DeepFM click model times a DeepFM CVR model trained on clicked rows only. CVR AUC "
        "is over the clicked test rows. See `benchmarks/multitask.py`.",
        "",
        f"    {COMMAND}",
        "",
    ]
    for ds, s in result["sizes"].items():
        lines += [
            f"**{ds}**: {s['rows'][0]} / {s['rows'][1]} / {s['rows'][2]} impressions, click "
            f"rate {s['click']:.3f}, conversion given click {s['conv_given_click']:.3f}.",
            "",
            "| model | click AUC | conversion AUC (all impressions) | CVR AUC (clicked) | fit s | load avg | date |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in result["rows"] if r["dataset"] == ds):
            lines.append(
                f"| {r['model']} | {r['auc_click']:.4f} | {r['auc_conversion']:.4f} | "
                f"{r['auc_cvr_clicked']:.4f} | {r['fit_s']:.0f} | {r['load']} | {result['date']} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder holding ml-100k/")
    parser.add_argument("--out", default=None)
    parser.add_argument("--docs", default=None, help="markdown file to update")
    parser.add_argument("--datasets", default="ml100k,synth")
    parser.add_argument("--models", default=None, help="comma-separated (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from benchmarks import resolve_data_dir

    kw = {"model_names": tuple(args.models.split(","))} if args.models else {}
    result = run(resolve_data_dir(args.data_dir), args.out,
                 datasets=tuple(args.datasets.split(",")), **kw)  # fmt: skip
    report(result, args.docs, SECTION)


if __name__ == "__main__":
    main()
