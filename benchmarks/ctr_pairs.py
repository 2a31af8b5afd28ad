"""Every torch ranker that DeepCTR-Torch also has, side by side with it: same data, same
hyperparameters, one epoch each, back to back in one process.

Each pair trains recforge's model (``fit(frame)``, encoding included) and DeepCTR-Torch
0.3.0's counterpart (label-encoded integer arrays, no encoding cost) on the same rows, then
scores the same test rows. Shared settings: embedding 16, MLPs 400-400-400 ReLU wherever a
model has one, no dropout / batch norm / L2, Adam lr 1e-3, batch 4096, one shuffled epoch,
2 torch threads. Model-specific settings are set equal on both sides (``PAIRS``); where the
two implementations differ in maths that no setting aligns, ``PAIRS`` says so. Numeric
columns: DeepCTR-Torch feeds its ``DenseFeat`` values raw into the DNN input and the linear
part and keeps them out of the interaction layers, which see the 26 categorical fields;
every recforge model here runs with the same setting, ``numeric="dense"`` (``DENSE``).

Models with no DeepCTR-Torch counterpart (FFM, FNN, OPNN's superposition form, LR) are
timed alone in the same run (``SOLO``).

Used by ``benchmarks.ctr_speed`` (its "Ranking speed" section); alone::

    python -m benchmarks.ctr_pairs --train-rows 30000 --test-rows 10000 --models deepfm,nfm
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

log = logging.getLogger(__name__)

DIM, HIDDEN, BATCH, LR, THREADS = 16, (400, 400, 400), 4096, 1e-3, 2
NO_L2 = {"l2_reg_linear": 0.0, "l2_reg_embedding": 0.0}
DENSE = {"numeric": "dense"}  # numeric columns as DeepCTR-Torch's DenseFeat: see the docstring


@dataclass(frozen=True)
class Pair:
    """One recforge model and its DeepCTR-Torch counterpart under equal settings."""

    model: str  # recforge registry name
    params: dict[str, Any]  # recforge hyperparameters beyond the shared ones
    peer: str  # deepctr_torch.models class name
    peer_params: dict[str, Any]  # its keyword arguments beyond the feature columns
    settings: str  # the model-specific settings, in words, for the table
    note: str = ""  # what differs between the two implementations
    label: str = field(default="")  # the row's name (default: model)

    @property
    def settings_text(self) -> str:
        """``settings`` plus the recforge ``numeric`` setting, for the table."""
        mode = self.params.get("numeric")
        return f"{self.settings}; numeric={mode}" if mode else self.settings


PAIRS: dict[str, Pair] = {
    p.label or p.model: p
    for p in (
        Pair(
            "deepfm",
            {"hidden": HIDDEN, **DENSE},
            "DeepFM",
            {"dnn_hidden_units": HIDDEN, "l2_reg_dnn": 0.0, "dnn_dropout": 0.0, **NO_L2},
            "MLP 400x3",
        ),
        Pair(
            "fm",
            # the embedding init std equal on both sides (DeepCTR-Torch's default 1e-4;
            # recforge FM's 1e-2 cost 0.013 test AUC in this one-epoch run: see BENCHMARKS)
            {"init_std": 1e-4, **DENSE},
            "DeepFM",
            {"dnn_hidden_units": (), "init_std": 1e-4, **NO_L2},
            "linear + FM, embedding init std 1e-4",
            "DeepCTR-Torch has no FM class: its DeepFM without DNN",
        ),
        Pair(
            "nfm",
            {"hidden": HIDDEN, "bi_dropout": 0.0, **DENSE},
            "NFM",
            {"dnn_hidden_units": HIDDEN, "bi_dropout": 0.0, "l2_reg_dnn": 0.0, **NO_L2},
            "MLP 400x3 over the bi-interaction",
        ),
        Pair(
            "afm",
            {"attention_dim": 8, **DENSE},
            "AFM",
            {"attention_factor": 8, "l2_reg_att": 0.0, **NO_L2},
            "attention 8",
        ),
        Pair(
            "xdeepfm",
            {"cin_layers": (128, 128), "split_half": True, "hidden": HIDDEN, **DENSE},
            "xDeepFM",
            {
                "cin_layer_size": (128, 128),
                "cin_split_half": True,
                "dnn_hidden_units": HIDDEN,
                "l2_reg_dnn": 0.0,
                "l2_reg_cin": 0.0,
                **NO_L2,
            },
            "CIN 128-128 split half, MLP 400x3",
        ),
        Pair(
            "dcn",
            {"n_cross": 3, "hidden": HIDDEN, "linear": True, **DENSE},
            "DCN",
            {
                "cross_num": 3,
                "cross_parameterization": "vector",
                "dnn_hidden_units": HIDDEN,
                "l2_reg_cross": 0.0,
                "l2_reg_dnn": 0.0,
                **NO_L2,
            },
            "3 vector crosses, MLP 400x3, linear term",
        ),
        Pair(
            "dcnv2",
            {"n_cross": 3, "hidden": HIDDEN, "linear": True, **DENSE},
            "DCN",
            {
                "cross_num": 3,
                "cross_parameterization": "matrix",
                "dnn_hidden_units": HIDDEN,
                "l2_reg_cross": 0.0,
                "l2_reg_dnn": 0.0,
                **NO_L2,
            },
            "3 full-rank crosses, MLP 400x3, linear term",
        ),
        Pair(
            "dcnv2",
            {
                "n_cross": 3,
                "hidden": HIDDEN,
                "linear": True,
                "low_rank": 32,
                "n_experts": 4,
                **DENSE,
            },
            "DCNMix",
            {
                "cross_num": 3,
                "low_rank": 32,
                "num_experts": 4,
                "dnn_hidden_units": HIDDEN,
                "l2_reg_cross": 0.0,
                "l2_reg_dnn": 0.0,
                **NO_L2,
            },
            "3 crosses of 4 rank-32 experts, MLP 400x3, linear term",
            label="dcnv2 (mix)",
        ),
        Pair(
            "autoint",
            {
                "n_layers": 3,
                "n_heads": 2,
                "head_dim": 8,
                "hidden": HIDDEN,
                "linear": True,
                **DENSE,
            },
            "AutoInt",
            {
                "att_layer_num": 3,
                "att_head_num": 2,
                "att_res": True,
                "dnn_hidden_units": HIDDEN,
                "l2_reg_dnn": 0.0,
                "l2_reg_embedding": 0.0,
            },
            "3 layers x 2 heads of 8, MLP 400x3 (AutoInt+), linear term",
            "DeepCTR-Torch attends without 1/sqrt(d) scaling",
        ),
        Pair(
            "ipnn",
            {"hidden": HIDDEN, **DENSE},
            "PNN",
            {
                "dnn_hidden_units": HIDDEN,
                "use_inner": True,
                "use_outter": False,
                "l2_reg_dnn": 0.0,
                "l2_reg_embedding": 0.0,
            },
            "inner products, MLP 400x3",
        ),
        Pair(
            "wide_deep",
            {"hidden": HIDDEN, **DENSE},
            "WDL",
            {"dnn_hidden_units": HIDDEN, "l2_reg_dnn": 0.0, "dnn_dropout": 0.0, **NO_L2},
            "linear + MLP 400x3",
        ),
    )
}

SOLO: dict[str, dict[str, Any]] = {
    "ffm": {"embedding_dim": 4},
    "fnn": {"hidden": HIDDEN, "fm_epochs": 1},
    "opnn": {"hidden": HIDDEN},
    "lr": {},
}


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def _load() -> float:
    return round(os.getloadavg()[0], 1)


def fit_recforge(
    name: str, params: dict[str, Any], train: pd.DataFrame, test: pd.DataFrame
) -> dict[str, Any]:
    """One epoch of recforge model ``name``: samples/s of ``fit(frame)`` (encoding
    included), test AUC, 1-min load average before the fit."""
    from recforge import models

    shared = {"embedding_dim": DIM, "epochs": 1, "batch_size": BATCH, "lr": LR, "seed": 0}
    model = models.get(name, **{**shared, "num_threads": THREADS, "progress": False, **params})
    load = _load()
    t0 = time.perf_counter()
    model.fit(train, label="label")
    s = time.perf_counter() - t0
    auc = _auc(test["label"].to_numpy(), model.predict_proba(test))
    return {
        "samples_per_s": round(len(train) / s),
        "fit_s": round(s, 2),
        "auc": round(auc, 4),
        "load": load,
    }


def _feature_columns() -> list[Any]:
    from deepctr_torch.inputs import DenseFeat, SparseFeat

    from benchmarks.ctr_speed import N_NUM, vocab_sizes

    feats: list[Any] = [
        SparseFeat(f"C{j + 1}", vocabulary_size=v, embedding_dim=DIM)
        for j, v in enumerate(vocab_sizes())
    ]
    return feats + [DenseFeat(f"I{j + 1}", 1) for j in range(N_NUM)]


def fit_deepctr(
    cls_name: str, kwargs: dict[str, Any], train: pd.DataFrame, test: pd.DataFrame
) -> dict[str, Any]:
    """One epoch of DeepCTR-Torch's ``cls_name`` on the label-encoded arrays."""
    import deepctr_torch.models as dm

    torch.set_num_threads(THREADS)
    feats = _feature_columns()
    torch.manual_seed(0)
    cls = getattr(dm, cls_name)
    if cls_name == "PNN":  # no linear part
        model = cls(feats, device="cpu", seed=0, **kwargs)
    elif cls_name == "AFM":  # dense fields only in the linear part (it refuses them else)
        sparse = [f for f in feats if hasattr(f, "vocabulary_size")]
        model = cls(feats, sparse, device="cpu", seed=0, **kwargs)
    else:
        model = cls(feats, feats, device="cpu", seed=0, **kwargs)
    model.compile(torch.optim.Adam(model.parameters(), lr=LR), "binary_crossentropy")
    names = [f.name for f in feats]  # criteo_like values are already 0..vocabulary-1
    x_train = {n: train[n].to_numpy() for n in names}
    x_test = {n: test[n].to_numpy() for n in names}
    load = _load()
    t0 = time.perf_counter()
    model.fit(x_train, train["label"].to_numpy(), batch_size=BATCH, epochs=1, verbose=0)
    s = time.perf_counter() - t0
    p = model.predict(x_test, batch_size=16384).ravel()
    auc = _auc(test["label"].to_numpy(), p)
    return {
        "samples_per_s": round(len(train) / s),
        "fit_s": round(s, 2),
        "auc": round(auc, 4),
        "load": load,
    }


def bench_pairs(
    train: pd.DataFrame,
    test: pd.DataFrame,
    names: list[str] | None = None,
    solo: list[str] | None = None,
    repeats: int = 1,
) -> dict[str, Any]:
    """Every pair in ``names`` (default: all of ``PAIRS``), recforge then DeepCTR-Torch, and
    the ``solo`` models (default: all of ``SOLO``) alone.

    ``repeats`` > 1: each pair runs that many rounds back to back, the order of the two
    sides alternating (recforge first in rounds 1, 3, ...; DeepCTR-Torch first in 2, 4,
    ...); the row shows the round with the median ratio (odd ``repeats``: a real round)
    and lists every round's ratio. On a VM whose speed drifts by up to 2x within minutes
    one pair is one draw; the median of alternating rounds is robust to one slow spell."""
    from benchmarks.ctr_speed import warm_up_torch

    warm_up_torch()  # no side pays torch's lazy optimizer import in its timing
    out: dict[str, Any] = {"pairs": {}, "solo": {}}
    for key in names if names is not None else list(PAIRS):
        pair = PAIRS[key]
        row: dict[str, Any] = {
            "peer": pair.peer,
            "settings": pair.settings_text,
            "note": pair.note,
        }
        sides = (
            ("recforge", fit_recforge, (pair.model, pair.params)),
            ("deepctr", fit_deepctr, (pair.peer, pair.peer_params)),
        )
        rounds = []
        for r in range(max(1, repeats)):
            done: dict[str, Any] = {}
            for side, fn, args in sides if r % 2 == 0 else sides[::-1]:
                try:
                    done[side] = fn(*args, train, test)
                except Exception as e:  # noqa: BLE001 - one failing model must not hide others
                    log.warning("%s %s failed: %s", key, side, e)
                    done[side] = {"error": f"{type(e).__name__}: {e}"}
            if "samples_per_s" in done["recforge"] and "samples_per_s" in done["deepctr"]:
                done["ratio"] = round(
                    done["recforge"]["samples_per_s"] / done["deepctr"]["samples_per_s"], 2
                )
            rounds.append(done)
            if "ratio" not in done:
                break  # an error: no more rounds of this pair
        timed = sorted((d for d in rounds if "ratio" in d), key=lambda d: d["ratio"])
        median = timed[(len(timed) - 1) // 2] if timed else rounds[-1]
        row["recforge"], row["deepctr"] = median["recforge"], median["deepctr"]
        if "ratio" in median:
            row["ratio"] = median["ratio"]
            row["auc_diff"] = round(row["recforge"]["auc"] - row["deepctr"]["auc"], 4)
        if len(rounds) > 1:
            row["ratios"] = [d.get("ratio") for d in rounds]
            row["rounds_samples_per_s"] = [
                [d[side].get("samples_per_s") for side in ("recforge", "deepctr")] for d in rounds
            ]
        log.info("%s: %s", key, json.dumps(row))
        out["pairs"][key] = row
    for name in solo if solo is not None else list(SOLO):
        try:
            out["solo"][name] = fit_recforge(name, SOLO[name], train, test)
        except Exception as e:  # noqa: BLE001
            out["solo"][name] = {"error": f"{type(e).__name__}: {e}"}
    return out


def to_markdown(r: dict[str, Any]) -> str:
    """The side-by-side table (and the solo models') as markdown lines."""
    lines = [
        "| model | DeepCTR-Torch | settings | recforge samples/s | DeepCTR-Torch samples/s "
        "| ratio | recforge AUC | DeepCTR-Torch AUC | load avg |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    notes = []
    for key, row in r["pairs"].items():
        ours, theirs = row["recforge"], row["deepctr"]
        if "samples_per_s" not in ours or "samples_per_s" not in theirs:
            err = ours.get("error") or theirs.get("error")
            lines.append(f"| {key} | {row['peer']} | {row['settings']} | error: {err} | | | | | |")
            continue
        ratio = f"**{row['ratio']:.2f}x**"
        if row.get("ratios"):  # repeats: the median round's figures, every round's ratio
            ratio += " (" + ", ".join(f"{x:.2f}" for x in row["ratios"] if x is not None) + ")"
        lines.append(
            f"| {key} | {row['peer']} | {row['settings']} | {ours['samples_per_s']:,} | "
            f"{theirs['samples_per_s']:,} | {ratio} | {ours['auc']:.4f} | "
            f"{theirs['auc']:.4f} | {ours['load']}, {theirs['load']} |"
        )
        if row.get("note"):
            notes.append(f"{key}: {row['note']}")
    if notes:
        lines += ["", "Differences no setting aligns: " + "; ".join(notes) + "."]
    if r.get("solo"):
        lines += [
            "",
            "No DeepCTR-Torch counterpart, same run and data: "
            + ", ".join(
                f"{name} {v['samples_per_s']:,} samples/s (AUC {v['auc']:.4f}, load {v['load']})"
                if "samples_per_s" in v
                else f"{name} error: {v.get('error')}"
                for name, v in r["solo"].items()
            )
            + f" ({', '.join(f'{k}: {SOLO[k]}' for k in r['solo'] if SOLO[k])}).",
        ]
    return "\n".join(lines) + "\n"


# the default-setting models compared by ``numeric_validation`` (own defaults, not PAIRS')
NUMERIC_MODELS = ("fm", "afm", "nfm", "deepfm", "xdeepfm", "dcn", "dcnv2", "autoint", "ipnn")
NUMERIC_MODELS += ("wide_deep",)


def numeric_validation(
    n_train: int, n_valid: int, epochs: int, names: list[str] | None = None
) -> dict[str, Any]:
    """Validation AUC of each model with its default hyperparameters under
    ``numeric="field"`` and ``numeric="dense"``: train on the first ``n_train`` rows of
    ``criteo_like(seed=1)``, validate on the next ``n_valid`` (not the speed table's test
    rows, which come from seed 0), ``epochs`` epochs, 1 torch thread. Returns
    {model: {mode: {"auc", "cpu_s"}}}."""
    from benchmarks.ctr_speed import criteo_like
    from recforge import models

    torch.set_num_threads(1)
    data = criteo_like(n_train + n_valid, seed=1)
    train, valid = data.iloc[:n_train], data.iloc[n_train:]
    out: dict[str, Any] = {}
    for name in names or NUMERIC_MODELS:
        out[name] = {}
        for mode in ("field", "dense"):
            model = models.get(
                name, numeric=mode, epochs=epochs, seed=0, num_threads=1, progress=False
            )
            c0 = time.process_time()
            model.fit(train, label="label")
            auc = _auc(valid["label"].to_numpy(), model.predict_proba(valid))
            out[name][mode] = {"auc": round(auc, 4), "cpu_s": round(time.process_time() - c0, 1)}
        log.info("%s: %s", name, out[name])
    return out


def numeric_markdown(r: dict[str, Any]) -> str:
    lines = [
        "| model (own defaults) | AUC, numeric=field | AUC, numeric=dense | dense - field "
        "| CPU s field | CPU s dense |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, v in r.items():
        f, d = v["field"], v["dense"]
        lines.append(
            f"| {name} | {f['auc']:.4f} | {d['auc']:.4f} | {d['auc'] - f['auc']:+.4f} "
            f"| {f['cpu_s']} | {d['cpu_s']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    from benchmarks.ctr_speed import criteo_like

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-rows", type=int, default=30_000)
    p.add_argument("--test-rows", type=int, default=10_000)
    p.add_argument("--models", default=None, help=f"comma-separated among {', '.join(PAIRS)}")
    p.add_argument("--solo", default=None, help=f"comma-separated among {', '.join(SOLO)}")
    p.add_argument(
        "--repeats", type=int, default=1, help="alternating rounds per pair; the median shown"
    )
    p.add_argument(
        "--numeric-validation",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="instead: validation AUC of numeric='field' vs 'dense' (own defaults, EPOCHS "
        "epochs, --train-rows / --test-rows as train / validation rows, --models)",
    )
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if a.numeric_validation:
        names = a.models.split(",") if a.models else None
        r = numeric_validation(a.train_rows, a.test_rows, a.numeric_validation, names)
        print(json.dumps(r))
        print(numeric_markdown(r))
        return
    torch.set_num_threads(THREADS)
    data = criteo_like(a.train_rows + a.test_rows, seed=0)
    train = data.iloc[: a.train_rows].reset_index(drop=True)
    test = data.iloc[a.train_rows :].reset_index(drop=True)
    names = a.models.split(",") if a.models else None
    solo = a.solo.split(",") if a.solo is not None else None
    r = bench_pairs(
        train, test, names, [s for s in solo if s] if solo is not None else None, a.repeats
    )
    print(to_markdown(r))


if __name__ == "__main__":
    main()
