"""CTR with behaviour histories on Amazon Beauty: DIN, DIEN, DSIN, BST next to DeepFM
without history and DeepCTR-Torch's DIN and DIEN, on the same samples in the same run.

Protocol
--------
* ``amazon-beauty/Beauty.txt`` (22,363 users, 12,101 items, chronological per user) read
  with ``read_sequences``; item attributes from ``Beauty_item2attributes.json`` (S3-Rec's
  list per item: the brand first when the item has one, then its categories from broad
  to specific). ``brand`` = the first attribute when that id never appears after the first
  place of any list (a brand id), else -1; ``cat`` = the last attribute that is not a brand
  (the most specific category).
* Samples: ``recforge.data.history.history_samples`` with one negative per positive, drawn
  uniformly from the items the user never interacted with; the history is the user's
  ``HISTORY_LEN`` most recent items (and their cat/brand) before the target. Each user's
  last item is the test target, the second-to-last the validation target, the
  ``TRAIN_TARGETS`` items before those the training targets (each with its own history).
  Beauty.txt has no timestamps, so DSIN's sessions are runs of ``SESSION_EVENTS``
  consecutive events.
* Features: user, item, cat, brand (+ the histories for the history models; DeepFM gets
  the same frame without them). Test AUC and GAUC (per-user AUC weighted by the user's
  rows: with one positive and one negative per user it is the share of users whose next
  item outscores the negative).
* Every model, ours and DeepCTR-Torch's alike: embedding size ``EMBEDDING_DIM``, Adam with
  lr ``LR``, batch ``BATCH_SIZE``, at most ``EPOCHS`` epochs, the epoch kept by validation
  AUC (``PATIENCE``), no L2, ``THREADS`` torch threads. Our models run with their default
  hyperparameters; DeepCTR-Torch's DIN/DIEN get the same attention and MLP widths, Dice in
  the attention, and receive exactly our encoded integer codes (histories sharing the
  target's embedding, their lengths as ``seq_length``; DIEN's negative histories are
  uniform random items with their attributes, as in DeepCTR's examples).

Run it (each invocation adds or replaces the rows of the models it ran)::

    nice -n 10 python -m benchmarks.ctr_history --docs docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks import report
from recforge import metrics, models
from recforge.data import Interactions
from recforge.data.history import history_samples
from recforge.data.readers.sequences import read_sequences

log = logging.getLogger(__name__)

HISTORY_LEN = 20
TRAIN_TARGETS = 2
SESSION_EVENTS = 5
EMBEDDING_DIM = 16
LR = 1e-3
BATCH_SIZE = 256
EPOCHS = 3
PATIENCE = 1
THREADS = 1
SEED = 0
ATTENTION_HIDDEN = (80, 40)
HIDDEN = (200, 80)
SECTION = "## Ranking quality"
SUBSECTION = "### CTR with behaviour histories on Amazon Beauty"
COMMAND = "nice -n 10 python -m benchmarks.ctr_history --docs docs/BENCHMARKS.md"
# how the figures in docs/BENCHMARKS.md were produced: three processes, then the table
COMMANDS_RUN = (
    "nice -n 10 python -m benchmarks.ctr_history --out runs/ctr_history "
    "--models deepfm,din,deepctr_din,bst &",
    "nice -n 10 python -m benchmarks.ctr_history --out runs/ctr_history --models dien,dsin &",
    "nice -n 10 python -m benchmarks.ctr_history --out runs/ctr_history --models deepctr_dien &",
    "wait; python -m benchmarks.ctr_history --out runs/ctr_history --models '' "
    "--docs docs/BENCHMARKS.md",
)
OURS = ("deepfm", "din", "dien", "dsin", "bst")
PEERS = ("deepctr_din", "deepctr_dien")
HISTORY = {"hist_item": "item", "hist_cat": "cat", "hist_brand": "brand"}


# ---------------------------------------------------------------------------- data
def load_beauty(data_dir: Path) -> Interactions:
    """Beauty with ``cat`` and ``brand`` item features (see the module docstring)."""
    folder = Path(data_dir) / "amazon-beauty"
    inter = read_sequences(folder / "Beauty.txt", folder / "Beauty_item2attributes.json")
    attrs = inter.item_features["attributes"]
    later = {a for v in attrs for a in v[1:]}  # ids seen after the first place: categories
    brand = attrs.map(lambda v: v[0] if len(v) and v[0] not in later else -1)
    cat = attrs.map(lambda v: next((a for a in reversed(v) if a in later), -1))
    itf = pd.DataFrame(
        {"cat": cat.astype(np.int64), "brand": brand.astype(np.int64)}, index=attrs.index
    )
    return Interactions(inter.frame, item_features=itf, name="beauty")


def make_splits(
    inter: Interactions, *, train_targets: int = TRAIN_TARGETS, seed: int = SEED
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, valid, test) sample frames: last item test, second-to-last validation, the
    ``train_targets`` before them training (0 = all)."""
    df = history_samples(
        inter,
        attributes=["cat", "brand"],
        max_len=HISTORY_LEN,
        n_negatives=1,
        session_max_events=SESSION_EVENTS,
        seed=seed,
    )
    after = df.pop("events_after").to_numpy()
    train_mask = after >= 2 if not train_targets else (after >= 2) & (after < 2 + train_targets)
    parts = [df[m].reset_index(drop=True) for m in (train_mask, after == 1, after == 0)]
    return parts[0], parts[1], parts[2]


def without_history(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in frame.columns if c.startswith("hist_")])


# ---------------------------------------------------------------------------- ours
def common() -> dict[str, Any]:
    return {
        "embedding_dim": EMBEDDING_DIM,
        "lr": LR,
        "batch_size": BATCH_SIZE,
        "epochs": EPOCHS,
        "patience": PATIENCE,
        "seed": SEED,
        "num_threads": THREADS,
    }


def evaluate_ours(name: str, train, valid, test) -> dict[str, Any]:
    params = common()
    if name == "deepfm":
        train, valid, test = map(without_history, (train, valid, test))
        params["hidden"] = HIDDEN
    else:
        params.update(history=HISTORY, history_len=HISTORY_LEN)
    model = models.get(name, **params)
    t0 = time.perf_counter()
    model.fit(train, label="label", valid=valid)
    fit_s = time.perf_counter() - t0
    p = model.predict_proba(test).astype(np.float64)
    hist = model.train_history_
    return {
        **_scores(test, p),
        "epochs": len(hist.train_loss),
        "best_epoch": hist.best_epoch,
        "valid_auc": hist.best_value,
        "fit_s": fit_s,
    }


def _scores(test: pd.DataFrame, p: np.ndarray) -> dict[str, float]:
    y = test["label"].to_numpy()
    return {"auc": metrics.auc(y, p), "gauc": metrics.gauc(y, p, test["user"].to_numpy())}


# ---------------------------------------------------------------------------- DeepCTR-Torch
def _deepctr_inputs(train, valid, test):
    """Feature columns and input dicts for DeepCTR-Torch from OUR encoder's codes."""
    from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat

    ref = models.get("din", history=HISTORY, history_len=HISTORY_LEN)
    encoder = ref.make_encoder(train).fit(train, label="label")
    cats = [f.name for f in encoder.fields_of("categorical")]
    sizes = {f.name: f.vocab_size for f in encoder.fields_}
    columns: list[Any] = [SparseFeat(c, sizes[c], EMBEDDING_DIM) for c in cats]
    for prefix in ("hist_", "neg_hist_"):
        for target in HISTORY.values():
            sparse = SparseFeat(
                prefix + target, sizes[target], EMBEDDING_DIM, embedding_name=target
            )
            columns.append(VarLenSparseFeat(sparse, HISTORY_LEN, length_name="seq_length"))
    # item code -> its cat / brand codes, for DIEN's random negative histories
    x_all = encoder.transform(train)
    item_j = cats.index("item")
    attr_of = {t: np.zeros(sizes["item"], dtype=np.int64) for t in ("cat", "brand")}
    for t in attr_of:
        attr_of[t][x_all.categorical[:, item_j]] = x_all.categorical[:, cats.index(t)]
    rng = np.random.default_rng(SEED)
    inputs = []
    for frame in (train, valid, test):
        x = encoder.transform(frame)
        d = {c: x.categorical[:, j] for j, c in enumerate(cats)}
        known = np.stack([x.multi[h] for h in HISTORY]).any(0)  # (n, L)
        length = np.where(known, np.arange(HISTORY_LEN) + 1, 0).max(1)
        real = np.arange(HISTORY_LEN)[None, :] < length[:, None]
        d["seq_length"] = length.astype(np.int64)
        for h in HISTORY:
            d[h] = x.multi[h]
        neg_items = rng.integers(1, sizes["item"], (len(frame), HISTORY_LEN)) * real
        d["neg_hist_item"] = neg_items
        for t in ("cat", "brand"):
            d[f"neg_hist_{t}"] = attr_of[t][neg_items] * real
        inputs.append(d)
    return columns, inputs


def evaluate_deepctr(name: str, train, valid, test) -> dict[str, Any]:
    """DeepCTR-Torch's DIN or DIEN on our codes, same budget and early stopping."""
    import deepctr_torch.models as dm
    from sklearn.metrics import roc_auc_score

    columns, (xtr, xva, xte) = _deepctr_inputs(train, valid, test)
    items = list(HISTORY.values())
    args = {"l2_reg_dnn": 0.0, "l2_reg_embedding": 0.0, "task": "binary", "device": "cpu"}
    torch.manual_seed(SEED)
    if name == "deepctr_din":
        cols = [c for c in columns if not c.name.startswith("neg_")]
        model = dm.DIN(
            cols,
            items,
            dnn_hidden_units=HIDDEN,
            att_hidden_size=ATTENTION_HIDDEN,
            att_activation="Dice",
            **args,
        )
    else:
        model = dm.DIEN(
            columns,
            items,
            gru_type="AUGRU",
            use_negsampling=True,
            dnn_hidden_units=HIDDEN,
            att_hidden_units=ATTENTION_HIDDEN,
            att_activation="dice",
            **args,
        )
    model.compile(torch.optim.Adam(model.parameters(), lr=LR), "binary_crossentropy", metrics=[])
    ytr = train["label"].to_numpy(dtype=np.float32)
    yva = valid["label"].to_numpy()
    best, best_state, best_epoch, epochs = -np.inf, None, 0, 0
    t0 = time.perf_counter()
    for epoch in range(EPOCHS):
        model.fit(xtr, ytr, batch_size=BATCH_SIZE, epochs=1, verbose=0, shuffle=True)
        epochs += 1
        score = roc_auc_score(yva, model.predict(xva, batch_size=16384).ravel())
        if score > best:
            best, best_state, best_epoch = score, copy.deepcopy(model.state_dict()), epoch
        elif epoch - best_epoch >= PATIENCE:
            break
    model.load_state_dict(best_state)
    fit_s = time.perf_counter() - t0
    p = model.predict(xte, batch_size=16384).ravel().astype(np.float64)
    return {
        **_scores(test, p),
        "epochs": epochs,
        "best_epoch": best_epoch,
        "valid_auc": float(best),
        "fit_s": fit_s,
    }


# ---------------------------------------------------------------------------- the run
def run(
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    *,
    model_names: tuple[str, ...] = OURS + PEERS,
    train_targets: int = TRAIN_TARGETS,
) -> dict[str, Any]:
    """Train and test every model in ``model_names``; one JSON per model under ``out``
    (default ``benchmarks/results/ctr_history``), and the markdown of every result there."""
    from benchmarks import resolve_data_dir

    torch.set_num_threads(THREADS)
    out = Path(out) if out else Path(__file__).resolve().parent / "results" / "ctr_history"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if model_names:  # none: only render the results already in ``out``
        train, valid, test = make_splits(
            load_beauty(resolve_data_dir(data_dir)), train_targets=train_targets
        )
        sizes = {"train": len(train), "valid": len(valid), "test": len(test)}
        log.info("ctr_history: %s rows, samples built in %.1f s", sizes, time.perf_counter() - t0)
    for name in model_names:
        load_before = os.getloadavg()[0]
        log.info("ctr_history: %s ...", name)
        fn = evaluate_deepctr if name in PEERS else evaluate_ours
        try:
            row = fn(name, train, valid, test)
        except Exception as e:  # a failing peer must not lose the others' numbers
            log.exception("ctr_history: %s failed", name)
            row = {"error": f"{type(e).__name__}: {e}"}
        row.update(
            model=name,
            sizes=sizes,
            train_targets=train_targets,
            date=_dt.date.today().isoformat(),
            load_before=round(load_before, 2),
            load_after=round(os.getloadavg()[0], 2),
            machine=f"{platform.machine()}, {os.cpu_count()} cores",
        )
        (out / f"{name}.json").write_text(json.dumps(row, indent=2))
        log.info("ctr_history: %s", row)
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    return {"bench": "ctr_history", "rows": rows, "markdown": to_markdown(rows)}


def to_markdown(rows: list[dict[str, Any]]) -> str:
    order = {n: i for i, n in enumerate(OURS + PEERS)}
    rows = sorted(rows, key=lambda r: order.get(r["model"], 99))
    sizes = rows[0]["sizes"] if rows else {}
    lines = [
        SUBSECTION,
        "",
        "Each user's next item against one sampled item the user never clicked; history = the "
        f"{HISTORY_LEN} most recent items (with cat/brand) before the target; last item test, "
        f"second-to-last validation, the {rows[0]['train_targets'] if rows else TRAIN_TARGETS} before them training "
        f"({sizes.get('train')} / {sizes.get('valid')} / {sizes.get('test')} rows). "
        f"Embedding {EMBEDDING_DIM}, Adam lr {LR}, batch {BATCH_SIZE}, at most {EPOCHS} epochs, "
        f"epoch chosen on validation AUC, {THREADS} thread, one seed. Our models at their "
        "defaults (DIN/DIEN/DSIN: Dice, DIN with softmax-normalised attention; BST: leaky ReLU; DeepFM: MLP (200, 80) ReLU). "
        "DeepCTR-Torch 0.3.0 gets our encoded codes, the same attention (80, 40) with Dice "
        "and MLP (200, 80) widths, its default ReLU in the MLP (its Dice there expects 3-D "
        "input), AUGRU and negative sampling for DIEN. GAUC = share of users whose next item "
        "outscores their negative. See `benchmarks/ctr_history.py` for the protocol.",
        "",
        f"All models in one process: `{COMMAND}`. The figures below ran as three processes "
        "at once on the shared 2-core machine (fit times are several times an idle "
        "machine's; the load average is the 1-minute one before and after each fit):",
        "",
        *[f"    {c}" for c in COMMANDS_RUN],
        "",
        "| model | history | test AUC | test GAUC | valid AUC | epochs (best) | fit s | load avg | date |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = r["model"]
        label = f"DeepCTR-Torch {name.split('_')[1].upper()}" if name in PEERS else name.upper()
        if "error" in r:
            lines.append(f"| {label} | | failed: {r['error'][:80]} | | | | | | {r['date']} |")
            continue
        hist = "no" if name == "deepfm" else "yes"
        best = "" if r.get("best_epoch") is None else f" ({r['best_epoch'] + 1})"
        lines.append(
            f"| {label} | {hist} | {r['auc']:.4f} | {r['gauc']:.4f} | {r['valid_auc']:.4f} | "
            f"{r['epochs']}{best} | {r['fit_s']:.0f} | {r['load_before']:.1f}-{r['load_after']:.1f}"
            f" | {r['date']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    global EPOCHS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder holding amazon-beauty/")
    parser.add_argument("--out", default=None, help="folder for the per-model JSON results")
    parser.add_argument("--docs", default=None, help="markdown file to update")
    parser.add_argument(
        "--models", default=",".join(OURS + PEERS), help="comma-separated, default: all"
    )
    parser.add_argument("--train-targets", type=int, default=TRAIN_TARGETS)
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="epoch budget per model")
    args = parser.parse_args(argv)
    EPOCHS = args.epochs
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    names = tuple(n for n in args.models.split(",") if n)
    result = run(args.data_dir, args.out, model_names=names, train_targets=args.train_targets)
    report(result, args.docs, SECTION)


if __name__ == "__main__":
    main()
