"""CTR ranking quality: every registered ranker on Frappe and MovieLens 100K, with
DeepCTR-Torch's version of the same model trained side by side on the same split.

Protocol
--------
* **Frappe** (``frappe-partial``: the public validation + test files, 86,582 rows, 10
  categorical fields user, item, daytime, weekday, isweekend, homework, cost, weather,
  country, city; label +1/-1 -> 1/0): both files concatenated, then re-split 8:1:1 by
  ``numpy.random.default_rng(2024).permutation`` (first 80 % train, next 10 % validation,
  last 10 % test). The BARS Frappe_x1 numbers use a training file that is not here and
  cannot be compared.
* **MovieLens 100K as CTR**: one row per rating, label = rating >= 4; features user id,
  item id, age bucket (<18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+), gender, occupation,
  genres (multi-valued, mean-pooled) and release year (categorical); the same 8:1:1 split
  with seed 2024.
* Every model: features encoded by ``FeatureEncoder`` fitted on train (unseen values -> 0);
  training with early stopping on validation AUC (``PATIENCE`` epochs, best weights
  restored, at most ``EPOCHS`` epochs); test AUC and logloss reported once.
* Torch models on both sides share: embedding size ``EMBEDDING_DIM``, MLP ``HIDDEN`` with
  ReLU, no dropout / batch norm / L2 (DeepCTR-Torch's ``l2_reg_*`` set to 0), Adam with
  lr ``LR``, batch ``BATCH_SIZE``, the same epoch budget and patience, seed 0 for our side
  (DeepCTR-Torch seeds its own layers with ``seed=1024``), ``THREADS`` torch threads. The
  DeepCTR-Torch models receive exactly our encoded integer codes (``SparseFeat`` per
  categorical field, ``VarLenSparseFeat`` with mean pooling for genres) and are trained one
  epoch at a time by their own ``fit`` with the same early stopping logic.

Run it::

    python -m benchmarks.ctr_quality --data-dir ../shared/data --docs docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import logging
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from recforge import metrics, models
from recforge.data.features import FeatureEncoder

log = logging.getLogger(__name__)

SEED = 2024
SPLIT = (0.8, 0.1, 0.1)
EMBEDDING_DIM = 16
HIDDEN = (256, 128)
LR = 1e-3
BATCH_SIZE = 1024
EPOCHS = 8
PATIENCE = 2
THREADS = 1
SECTION = "## Ranking quality"
COMMAND = "python -m benchmarks.ctr_quality --data-dir ../shared/data --docs docs/BENCHMARKS.md"
FRAPPE_FIELDS = (
    "user",
    "item",
    "daytime",
    "weekday",
    "isweekend",
    "homework",
    "cost",
    "weather",
    "country",
    "city",
)
AGE_EDGES = (18, 25, 35, 45, 50, 56)  # MovieLens-1M's age groups
AGE_NAMES = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")

# Our models' own hyperparameters for the bench (the shared ones come from ``common``).
# ``linear=True`` where DeepCTR-Torch's version of the model adds a first-order term.
OURS: dict[str, dict[str, Any]] = {
    "lr": {},
    "fm": {},
    "ffm": {"embedding_dim": 4},
    "deepfm": {"hidden": HIDDEN},
    "wide_deep": {"hidden": HIDDEN},
    "fnn": {"hidden": HIDDEN},
    "ipnn": {"hidden": HIDDEN},
    "opnn": {"hidden": HIDDEN},
    "dcn": {"hidden": HIDDEN, "n_cross": 3, "linear": True},
    "dcnv2": {"hidden": HIDDEN, "n_cross": 3, "low_rank": 32, "n_experts": 4, "linear": True},
    "xdeepfm": {"hidden": HIDDEN, "cin_layers": (128, 128)},
    "autoint": {
        "hidden": HIDDEN,
        "n_layers": 3,
        "n_heads": 2,
        "head_dim": EMBEDDING_DIM // 2,
        "linear": True,
    },
    "nfm": {"hidden": HIDDEN},
    "afm": {"attention_dim": 8},
    "mmoe": {"n_experts": 3, "expert_hidden": HIDDEN, "tower_hidden": (64,)},
    "lightgbm": {
        "n_estimators": 1000,
        "learning_rate": 0.05,
        "num_leaves": 63,
        "early_stopping_rounds": 30,
    },
    "gbdt_lr": {
        "n_estimators": 200,
        "learning_rate": 0.1,
        "num_leaves": 63,
        "early_stopping_rounds": 30,
    },
}

# DeepCTR-Torch class and arguments of the same architecture (None: no peer).
PEERS: dict[str, tuple[str, dict[str, Any]]] = {
    "lr": ("DeepFM", {"use_fm": False, "dnn_hidden_units": ()}),
    "fm": ("DeepFM", {"use_fm": True, "dnn_hidden_units": ()}),
    "deepfm": ("DeepFM", {"dnn_hidden_units": HIDDEN}),
    "wide_deep": ("WDL", {"dnn_hidden_units": HIDDEN}),
    "ipnn": ("PNN", {"dnn_hidden_units": HIDDEN, "use_inner": True, "use_outter": False}),
    "opnn": ("PNN", {"dnn_hidden_units": HIDDEN, "use_inner": False, "use_outter": True}),
    "dcn": (
        "DCN",
        {"dnn_hidden_units": HIDDEN, "cross_num": 3, "cross_parameterization": "vector"},
    ),
    "dcnv2": (
        "DCNMix",
        {"dnn_hidden_units": HIDDEN, "cross_num": 3, "low_rank": 32, "num_experts": 4},
    ),
    "xdeepfm": (
        "xDeepFM",
        {"dnn_hidden_units": HIDDEN, "cin_layer_size": (128, 128), "cin_split_half": True},
    ),
    "autoint": (
        "AutoInt",
        {"dnn_hidden_units": HIDDEN, "att_layer_num": 3, "att_head_num": 2, "att_res": True},
    ),
    "nfm": ("NFM", {"dnn_hidden_units": HIDDEN}),
    "afm": ("AFM", {"attention_factor": 8}),
}


# ---------------------------------------------------------------------------- data
def split(frame: pd.DataFrame, seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Random 8:1:1 train/valid/test by ``default_rng(seed).permutation``."""
    perm = np.random.default_rng(seed).permutation(len(frame))
    a, b = int(SPLIT[0] * len(frame)), int((SPLIT[0] + SPLIT[1]) * len(frame))
    parts = (perm[:a], perm[a:b], perm[b:])
    return tuple(frame.iloc[p].reset_index(drop=True) for p in parts)  # type: ignore[return-value]


def load_frappe(data_dir: str | Path) -> pd.DataFrame:
    """Frappe validation + test files as one frame: ``label`` (0/1) and the 10 fields."""
    from recforge.data.readers import read_frappe

    frame = read_frappe(Path(data_dir) / "frappe-partial")
    return frame[["label", *FRAPPE_FIELDS]].reset_index(drop=True)


def load_movielens_ctr(data_dir: str | Path) -> pd.DataFrame:
    """MovieLens 100K ratings with user/item side features; ``label`` = rating >= 4."""
    from recforge.data.readers import read_movielens_100k

    data = read_movielens_100k(Path(data_dir) / "ml-100k")
    ratings = data.frame
    users, items = data.user_features, data.item_features
    age = users["age"].reindex(ratings["user"]).to_numpy()
    year = items["year"].reindex(ratings["item"])
    return pd.DataFrame(
        {
            "label": (ratings["rating"].to_numpy() >= 4).astype(np.int64),
            "user": ratings["user"].to_numpy(),
            "item": ratings["item"].to_numpy(),
            "age": np.asarray(AGE_NAMES, dtype=object)[
                np.searchsorted(AGE_EDGES, age, side="right")
            ],
            "gender": users["gender"].reindex(ratings["user"]).to_numpy(),
            "occupation": users["occupation"].reindex(ratings["user"]).to_numpy(),
            "genres": items["genres"].reindex(ratings["item"]).to_list(),
            "year": year.fillna(0).astype(np.int64).to_numpy(),
        }
    )


DATASETS: dict[str, Callable[[str | Path], pd.DataFrame]] = {
    "frappe": load_frappe,
    "ml100k": load_movielens_ctr,
}


# ---------------------------------------------------------------------------- our side
def common_params(name: str) -> dict[str, Any]:
    """Shared torch hyperparameters plus the bench's per-model ones, restricted to what the
    model accepts."""
    cls = models.get_class(name)
    valid = set(cls.param_names())
    shared = {
        "embedding_dim": EMBEDDING_DIM,
        "epochs": EPOCHS,
        "batch_size": BATCH_SIZE,
        "lr": LR,
        "optimizer": "adam",
        "patience": PATIENCE,
        "seed": 0,
        "num_threads": THREADS,
    }
    params = {k: v for k, v in shared.items() if k in valid}
    params.update({k: v for k, v in OURS.get(name, {}).items() if k in valid})
    if name in ("lightgbm", "gbdt_lr"):
        params["num_threads"] = THREADS
    return params


def evaluate_ours(
    name: str, train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame
) -> dict[str, Any]:
    params = common_params(name)
    model = models.get(name, **params)
    t0 = time.perf_counter()
    model.fit(train, label="label", valid=valid)
    fit_s = time.perf_counter() - t0
    p = np.asarray(model.predict_proba(test), dtype=np.float64)
    hist = getattr(model, "train_history_", None)
    epochs = len(hist.train_loss) if hist is not None else None
    return {
        "auc": metrics.auc(test["label"], p),
        "logloss": metrics.log_loss(test["label"], np.clip(p, 1e-7, 1 - 1e-7)),
        "epochs": epochs,
        "fit_s": fit_s,
    }


# ---------------------------------------------------------------------------- DeepCTR-Torch
def _deepctr_inputs(
    encoder: FeatureEncoder, frames: tuple[pd.DataFrame, ...]
) -> tuple[list[Any], list[dict[str, np.ndarray]]]:
    """DeepCTR-Torch feature columns for our encoder's fields and inputs for each frame."""
    from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat

    columns: list[Any] = []
    for f in encoder.fields_:
        if f.type == "categorical":
            columns.append(
                SparseFeat(f.name, vocabulary_size=f.vocab_size, embedding_dim=EMBEDDING_DIM)
            )
        elif f.type == "multi":
            sparse = SparseFeat(f.name, vocabulary_size=f.vocab_size, embedding_dim=EMBEDDING_DIM)
            columns.append(VarLenSparseFeat(sparse, maxlen=f.max_len, combiner="mean"))
        else:
            raise ValueError(f"ctr_quality: numeric field {f.name!r} has no DeepCTR mapping here.")
    inputs = []
    for frame in frames:
        x = encoder.transform(frame)
        cat = [f.name for f in encoder.fields_of("categorical")]
        d = {name: x.categorical[:, j] for j, name in enumerate(cat)}
        d.update(x.multi)
        inputs.append(d)
    return columns, inputs


def evaluate_deepctr(
    name: str, train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame
) -> dict[str, Any]:
    """DeepCTR-Torch's model for ``name``, same data, same hyperparameters, same early stopping."""
    import inspect

    import deepctr_torch.models as dm
    from sklearn.metrics import roc_auc_score

    cls_name, kwargs = PEERS[name]
    cls = getattr(dm, cls_name)
    encoder = FeatureEncoder().fit(train, label="label")
    columns, (xtr, xva, xte) = _deepctr_inputs(encoder, (train, valid, test))
    ytr = train["label"].to_numpy(dtype=np.float32)
    yva = valid["label"].to_numpy()
    accepted = inspect.signature(cls).parameters
    zero_l2 = {k: 0.0 for k in accepted if k.startswith("l2_reg")}
    args = {**zero_l2, **kwargs, "task": "binary", "device": "cpu"}
    torch.manual_seed(0)
    if "linear_feature_columns" in accepted:
        model = cls(columns, columns, **args)
    else:
        model = cls(columns, **args)
    model.compile(torch.optim.Adam(model.parameters(), lr=LR), "binary_crossentropy", metrics=[])
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
        "auc": metrics.auc(test["label"], p),
        "logloss": metrics.log_loss(test["label"], np.clip(p, 1e-7, 1 - 1e-7)),
        "epochs": epochs,
        "fit_s": fit_s,
    }


def deepctr_available() -> bool:
    try:
        import deepctr_torch.models  # noqa: F401
    except ImportError as e:
        log.warning(
            "DeepCTR-Torch not importable (%s): peers skipped; `make bench` installs it.", e
        )
        return False
    return True


# ---------------------------------------------------------------------------- the run
def run(
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    *,
    datasets: tuple[str, ...] = ("frappe", "ml100k"),
    model_names: tuple[str, ...] | None = None,
    peers: bool = True,
) -> dict[str, Any]:
    """Run the benchmark; returns ``{"datasets": {name: {"rows": [...], ...}}, "markdown": str, ...}``.

    data_dir: folder holding ``frappe-partial/`` and ``ml-100k/`` (default: see
        ``benchmarks.resolve_data_dir``).
    datasets: which of "frappe", "ml100k" to run.
    model_names: registered rankers to run (default: all).
    peers: train DeepCTR-Torch's models side by side.
    out: folder to write ``ctr_quality.json`` and ``ctr_quality.md`` into.
    """
    from benchmarks import resolve_data_dir

    data_dir = resolve_data_dir(data_dir)
    torch.set_num_threads(THREADS)
    names = list(model_names) if model_names else sorted(models.available("ranker"))
    peers = peers and deepctr_available()
    result: dict[str, Any] = {
        "bench": "ctr_quality",
        "date": _dt.date.today().isoformat(),
        "settings": {
            "seed": SEED,
            "split": "8:1:1",
            "embedding_dim": EMBEDDING_DIM,
            "hidden": list(HIDDEN),
            "lr": LR,
            "batch_size": BATCH_SIZE,
            "epochs": EPOCHS,
            "patience": PATIENCE,
            "threads": THREADS,
        },
        "datasets": {},
        "environment": _environment(),
    }
    t_start = time.perf_counter()
    for ds in datasets:
        frame = DATASETS[ds](data_dir)
        train, valid, test = split(frame)
        rows = []
        for name in names:
            row: dict[str, Any] = {"model": name}
            try:
                row["ours"] = evaluate_ours(name, train, valid, test)
            except Exception as e:  # a ranker that needs other inputs (e.g. a behaviour sequence)
                log.warning("%s on %s failed: %s", name, ds, e)
                row["ours"] = {"error": f"{type(e).__name__}: {e}"}
            if peers and name in PEERS:
                try:
                    row["deepctr"] = evaluate_deepctr(name, train, valid, test)
                except Exception as e:
                    log.warning("DeepCTR %s on %s failed: %s", PEERS[name][0], ds, e)
                    row["deepctr"] = {"error": f"{type(e).__name__}: {e}"}
            log.info("%s %s: %s", ds, name, row)
            rows.append(row)
        result["datasets"][ds] = {
            "n_train": len(train),
            "n_valid": len(valid),
            "n_test": len(test),
            "positive_rate": float(frame["label"].mean()),
            "rows": rows,
            "checks": _checks(ds, rows),
        }
    result["total_s"] = time.perf_counter() - t_start
    result["markdown"] = to_markdown(result)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "ctr_quality.json").write_text(
            json.dumps({k: v for k, v in result.items() if k != "markdown"}, indent=2)
        )
        (out / "ctr_quality.md").write_text(result["markdown"])
    return result


def _checks(ds: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The goals: ours within 0.003 AUC of DeepCTR-Torch; LR < FM < DeepFM on Frappe."""
    out: dict[str, Any] = {"behind_peer_by_more_than_0.003": []}
    for r in rows:
        a, b = r.get("ours", {}).get("auc"), r.get("deepctr", {}).get("auc")
        if a is not None and b is not None and a < b - 0.003:
            out["behind_peer_by_more_than_0.003"].append(r["model"])
    aucs = {r["model"]: r.get("ours", {}).get("auc") for r in rows}
    if ds == "frappe" and all(aucs.get(m) is not None for m in ("lr", "fm", "deepfm")):
        out["lr<fm<deepfm"] = bool(aucs["lr"] < aucs["fm"] < aucs["deepfm"])
    return out


def _environment() -> dict[str, str]:
    import lightgbm

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightgbm": lightgbm.__version__,
    }
    try:
        import deepctr_torch

        env["deepctr-torch"] = deepctr_torch.__version__
    except ImportError:
        pass
    return env


def _fmt(x: Any, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def to_markdown(result: dict[str, Any]) -> str:
    """The docs section: protocol, command, date and one table per dataset."""
    s = result["settings"]
    env = ", ".join(f"{k} {v}" for k, v in result["environment"].items())
    lines = [
        SECTION,
        "",
        f"Run on {result['date']} ({env}; {s['threads']} torch threads; "
        f"{result['total_s'] / 60:.1f} min of compute in all) with:",
        "",
        *(f"    {c}" for c in result.get("commands", [COMMAND])),
        "",
        "Frappe (`frappe-partial`: validation + test files, 86,582 rows, 10 categorical fields) and "
        "MovieLens 100K as CTR (label = rating >= 4; user, item, age bucket, gender, occupation, "
        "genres (multi-valued, mean-pooled), release year), each re-split 8:1:1 at random with "
        f"`numpy.random.default_rng({s['seed']})`. Every model: early stopping on validation AUC "
        f"(patience {s['patience']}, at most {s['epochs']} epochs, best weights restored), test "
        "split used once. Shared torch settings on both sides: embedding "
        f"{s['embedding_dim']}, MLP {tuple(s['hidden'])} ReLU, no dropout/BN/L2, Adam lr {s['lr']}, "
        f"batch {s['batch_size']}. DeepCTR-Torch gets our encoded integer codes and the same "
        "architecture settings (e.g. `DeepFM(use_fm=False, dnn_hidden_units=())` for LR, "
        "`DeepFM(dnn_hidden_units=())` for FM, `DCNMix(low_rank=32, num_experts=4)` for dcnv2). "
        "Fit times are wall-clock on a shared 2-core machine.",
        "",
    ]
    if result.get("note"):
        lines += [result["note"], ""]
    for ds, d in result["datasets"].items():
        lines += [
            f"### {ds} ({d['n_train']} train / {d['n_valid']} valid / {d['n_test']} test rows, "
            f"{d['positive_rate']:.1%} positive)",
            "",
            "| Model | AUC | Logloss | DeepCTR-Torch AUC | DeepCTR-Torch logloss | ΔAUC | Epochs (ours/peer) | Fit s (ours/peer) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in d["rows"]:
            o, p = r.get("ours", {}), r.get("deepctr", {})
            if "error" in o:
                lines.append(f"| {r['model']} | n/a: {o['error'][:80]} | | | | | | |")
                continue
            peer = "deepctr" in r and "error" not in p
            delta = _fmt(o["auc"] - p["auc"], 4) if peer else "-"
            ep = f"{o.get('epochs') or '-'}/{p.get('epochs', '-') if peer else '-'}"
            fit = f"{o['fit_s']:.0f}/{p['fit_s']:.0f}" if peer else f"{o['fit_s']:.0f}/-"
            lines.append(
                f"| {r['model']} | {_fmt(o['auc'])} | {_fmt(o['logloss'])} | "
                f"{_fmt(p.get('auc')) if peer else '-'} | {_fmt(p.get('logloss')) if peer else '-'} | "
                f"{delta} | {ep} | {fit} |"
            )
        c = d["checks"]
        behind = ", ".join(c["behind_peer_by_more_than_0.003"]) or "none"
        lines += ["", f"Behind DeepCTR-Torch by more than 0.003 AUC: {behind}."]
        if "lr<fm<deepfm" in c:
            lines.append(f"LR < FM < DeepFM by AUC: {'yes' if c['lr<fm<deepfm'] else 'no'}.")
        lines.append("")
    return "\n".join(lines)


def update_docs(markdown: str, path: str | Path) -> Path:
    """Replace this bench's section in ``path`` (or append it); other sections are kept."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.rstrip() == SECTION), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + markdown.rstrip("\n") + "\n"
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        new = (
            "\n".join(
                [*lines[:start], *markdown.rstrip("\n").splitlines(), "", *lines[end:]]
            ).rstrip("\n")
            + "\n"
        )
    path.write_text(new)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", default=None, help="folder holding frappe-partial/ and ml-100k/"
    )
    parser.add_argument("--out", default=None, help="folder for ctr_quality.json / .md")
    parser.add_argument("--docs", default=None, help="markdown file whose section to update")
    parser.add_argument(
        "--datasets", default="frappe,ml100k", help="comma-separated: frappe,ml100k"
    )
    parser.add_argument(
        "--models", default=None, help="comma-separated ranker names (default: all)"
    )
    parser.add_argument("--no-peers", action="store_true", help="skip DeepCTR-Torch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    result = run(
        args.data_dir,
        args.out,
        datasets=tuple(args.datasets.split(",")),
        model_names=tuple(args.models.split(",")) if args.models else None,
        peers=not args.no_peers,
    )
    print(result["markdown"])
    if args.docs:
        print(f"updated {update_docs(result['markdown'], args.docs)}")


if __name__ == "__main__":
    main()
