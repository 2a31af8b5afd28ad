"""Ranking speed: recforge DeepFM against DeepCTR-Torch's DeepFM on synthetic Criteo-shaped
data, plus training speed of every registered ranker, inference latency and peak memory.

Protocol:

* data: ``criteo_like(n)``: 26 categorical fields with vocabularies from 10 to 100,000
  (power-law value frequencies), 13 standardised numeric fields, a label drawn from a
  logistic model with per-value effects on 10 fields, two field-pair interactions and
  numeric slopes (~25 % clicks, like Criteo). Train rows ``N_TRAIN``, test rows ``N_TEST``.
* same process, ``torch.set_num_threads(2)``, the same hyperparameters for both: embedding
  16, MLP 400-400-400 ReLU, no dropout / batch norm / L2, Adam lr 1e-3, batch 4096, one
  epoch, shuffled; numeric columns as DeepCTR-Torch's ``DenseFeat`` (recforge
  ``numeric="dense"``: straight into the DNN input and the linear part, FM over the 26
  categorical fields). DeepCTR gets the label-encoded integer arrays it expects (no encoding
  cost); recforge's time is the whole ``fit(frame)`` including ``FeatureEncoder`` (train-loop
  samples/s are reported too). Dense and sparse (``sparse=True``: SparseAdam on the touched
  table rows) recforge embeddings are both measured.
* test AUC of both after the epoch; samples/s = train rows / wall seconds.
* every torch ranker that DeepCTR-Torch also has, side by side with it on the same
  train/test rows (``benchmarks.ctr_pairs``: same settings, one epoch each, back to back,
  the 1-min load average beside each figure); the DeepFM row is the headline run above.
  Rankers without a counterpart (FFM, FNN, OPNN, LR) are timed alone.
* inference: ``predict_proba`` of a 200-row frame (encoding included), 200 calls, p50/p99.
* memory: peak RSS (``VmHWM``) of a fresh process that builds 2,000,000 rows and trains
  DeepFM 1 epoch.

Run it::

    python -m benchmarks.ctr_speed --docs docs/BENCHMARKS.md
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
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks import REPO, peak_rss_kib

log = logging.getLogger(__name__)

N_TRAIN, N_TEST, N_RSS = 300_000, 50_000, 2_000_000
THREADS = 2
DIM, HIDDEN, BATCH, LR = 16, (400, 400, 400), 4096, 1e-3
SECTION = "## Ranking speed"
COMMAND = "python -m benchmarks.ctr_speed --docs docs/BENCHMARKS.md"
N_CAT, N_NUM = 26, 13


def vocab_sizes() -> list[int]:
    """26 vocabulary sizes from 100,000 down to 10 (log-spaced)."""
    return [int(v) for v in np.round(np.logspace(5, 1, N_CAT))]


def warm_up_torch() -> None:
    """Import what the first ``torch.optim`` optimizer of a process imports lazily
    (``torch._dynamo``, ~1.4 CPU-s on this machine), before any timed fit: recforge builds
    its optimizer inside ``fit`` (timed) and DeepCTR-Torch before its ``fit`` (untimed),
    so without this the first recforge model of a run paid the import alone."""
    import torch._dynamo  # noqa: F401


def criteo_like(n: int, seed: int = 0) -> pd.DataFrame:
    """A Criteo-shaped frame: C1..C26 int64 categorical, I1..I13 float32, label 0/1."""
    rng = np.random.default_rng(seed)
    world = np.random.default_rng(12345)  # the same "true model" for every call
    sizes = vocab_sizes()
    cols: dict[str, np.ndarray] = {}
    logit = np.full(n, -1.6)
    for j, v in enumerate(sizes):
        c = np.minimum((v * rng.random(n) ** 2.5).astype(np.int64), v - 1)  # power law
        cols[f"C{j + 1}"] = c
        if j % 3 == 0 and j < 30:  # 9-10 fields carry per-value effects
            logit += world.normal(0, 0.6, v)[c]
    for a, b in ((1, 4), (7, 20)):
        effect = world.normal(0, 0.8, 997)
        logit += effect[(cols[f"C{a + 1}"] * 31 + cols[f"C{b + 1}"]) % 997]
    slopes = world.normal(0, 0.3, N_NUM)
    for j in range(N_NUM):
        x = rng.normal(size=n).astype(np.float32)
        cols[f"I{j + 1}"] = x
        logit += slopes[j] * x
    cols["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame(cols)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def bench_recforge_deepfm(
    train: pd.DataFrame, test: pd.DataFrame, *, sparse: bool
) -> dict[str, Any]:
    from benchmarks.ctr_pairs import PAIRS
    from recforge import models
    from recforge.data.features import FeatureEncoder

    model = models.get(
        "deepfm",
        **PAIRS["deepfm"].params,  # hidden, numeric as DeepCTR-Torch's
        embedding_dim=DIM,
        epochs=1,
        batch_size=BATCH,
        lr=LR,
        sparse=sparse,
        seed=0,
        num_threads=THREADS,  # not the load-dependent default: DeepCTR-Torch gets THREADS too
        progress=False,
    )
    load = round(os.getloadavg()[0], 1)
    t0 = time.perf_counter()
    model.fit(train, label="label")
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    FeatureEncoder().fit(train, "label").transform(train)
    encode_s = time.perf_counter() - t0
    p = model.predict_proba(test)
    return {
        "fit_seconds": round(fit_s, 2),
        "samples_per_s": round(len(train) / fit_s),
        "train_loop_samples_per_s": round(len(train) / max(1e-9, fit_s - encode_s)),
        "test_auc": round(_auc(test["label"].to_numpy(), p), 4),
        "load": load,
        "model": model,
    }


def bench_deepctr_deepfm(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, Any]:
    """DeepCTR-Torch's DeepFM under the same settings (``ctr_pairs.PAIRS["deepfm"]``)."""
    from benchmarks.ctr_pairs import PAIRS, fit_deepctr

    r = fit_deepctr("DeepFM", PAIRS["deepfm"].peer_params, train, test)
    return {
        "fit_seconds": r["fit_s"],
        "samples_per_s": r["samples_per_s"],
        "test_auc": r["auc"],
        "load": r["load"],
    }


def _deepfm_pair(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """The headline DeepFM run (dense recforge vs DeepCTR-Torch) as a ``ctr_pairs`` row."""
    from benchmarks.ctr_pairs import PAIRS

    def side(v: dict[str, Any]) -> dict[str, Any]:
        return {
            "samples_per_s": v["samples_per_s"],
            "fit_s": v["fit_seconds"],
            "auc": v["test_auc"],
            "load": v["load"],
        }

    pair = PAIRS["deepfm"]
    return {
        "peer": pair.peer,
        "settings": pair.settings_text,
        "note": pair.note,
        "recforge": side(ours),
        "deepctr": side(theirs),
        "ratio": round(ours["samples_per_s"] / theirs["samples_per_s"], 2),
        "auc_diff": round(ours["test_auc"] - theirs["test_auc"], 4),
    }


def bench_latency(model: Any, test: pd.DataFrame, n_calls: int = 200) -> dict[str, float]:
    frame = test.drop(columns=["label"]).iloc[:200].reset_index(drop=True)
    model.predict_proba(frame)  # warm-up
    times = []
    for _ in range(n_calls):
        t0 = time.perf_counter()
        model.predict_proba(frame)
        times.append((time.perf_counter() - t0) * 1000)
    return {
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p99_ms": round(float(np.percentile(times, 99)), 2),
    }


def _rss_child(n: int) -> None:
    """Run in a fresh process: build n rows, train DeepFM one epoch, print peak RSS (MiB)."""
    torch.set_num_threads(THREADS)
    from recforge import models

    frame = criteo_like(n, seed=7)
    models.get("deepfm", embedding_dim=DIM, hidden=HIDDEN, epochs=1, batch_size=BATCH, lr=LR).fit(
        frame
    )
    print(json.dumps({"peak_rss_mib": round(peak_rss_kib() / 1024), "rows": n}))


def bench_peak_rss(n: int = N_RSS) -> dict[str, Any]:
    code = f"from benchmarks.ctr_speed import _rss_child; _rss_child({n})"
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=REPO
    )
    if res.returncode != 0:
        return {"error": res.stderr[-500:]}
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def run(
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    *,
    quick: bool = False,
    train_rows: int | None = None,
    test_rows: int | None = None,
    zoo_rows: int | None = None,
    rss_rows: int | None = None,
    models: list[str] | None = None,
    solo: list[str] | None = None,
    repeats: int = 1,
    command: str = COMMAND,
) -> dict[str, Any]:
    """Run the whole benchmark; ``data_dir`` is unused (synthetic data). ``quick`` shrinks
    every size 10x (a smoke run); ``*_rows`` override single sizes (same data shape, fewer
    rows, for a slow machine; ``zoo_rows``: the train rows of the side-by-side table, all
    of them by default; ``rss_rows=0`` skips the memory run). ``models`` / ``solo``: the
    ``ctr_pairs.PAIRS`` / ``SOLO`` keys to run (default all). ``repeats`` > 1: the
    side-by-side rows (DeepFM's too, then run again in the table) are the median of that
    many alternating rounds (``ctr_pairs.bench_pairs``). Writes ``ctr_speed.json`` under
    ``out`` when given."""
    torch.set_num_threads(THREADS)
    scale = 10 if quick else 1
    n_train = train_rows or N_TRAIN // scale
    n_test = test_rows or N_TEST // scale
    warm_up_torch()
    data = criteo_like(n_train + n_test, seed=0)
    train, test = (
        data.iloc[:n_train].reset_index(drop=True),
        data.iloc[n_train:].reset_index(drop=True),
    )
    result: dict[str, Any] = {
        "command": command,
        "date": _dt.date.today().isoformat(),
        "threads": THREADS,
        "rows": {
            "train": len(train),
            "test": len(test),
            "click_rate": round(float(data["label"].mean()), 4),
        },
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "load_average_start": round(os.getloadavg()[0], 1),
        "torch": torch.__version__,
    }
    # warm-up, untimed: the first fit in a process pays torch's one-time start-up costs
    bench_recforge_deepfm(train.iloc[:2048], test.iloc[:512], sparse=False)
    bench_deepctr_deepfm(train.iloc[:2048], test.iloc[:512])
    ours_dense = bench_recforge_deepfm(train, test, sparse=False)
    ours_sparse = bench_recforge_deepfm(train, test, sparse=True)
    theirs = bench_deepctr_deepfm(train, test)
    best = (
        ours_sparse if ours_sparse["samples_per_s"] >= ours_dense["samples_per_s"] else ours_dense
    )
    result["latency_200"] = bench_latency(best.pop("model"), test)
    ours_dense.pop("model", None)
    ours_sparse.pop("model", None)
    result["deepfm"] = {
        "recforge_dense": ours_dense,
        "recforge_sparse": ours_sparse,
        "deepctr_torch": theirs,
    }
    result["speedup_vs_deepctr"] = {
        "dense": round(ours_dense["samples_per_s"] / theirs["samples_per_s"], 2),
        "sparse": round(ours_sparse["samples_per_s"] / theirs["samples_per_s"], 2),
    }
    from benchmarks.ctr_pairs import PAIRS, bench_pairs

    zoo = train.iloc[: zoo_rows or n_train].reset_index(drop=True)
    result["rows"]["zoo"] = len(zoo)
    names = list(models if models is not None else PAIRS)
    headline = repeats <= 1 and "deepfm" in names and len(zoo) == len(train)
    if headline:  # the headline run above is the DeepFM row
        names.remove("deepfm")
    pairs = bench_pairs(zoo, test, names, solo, repeats)
    if headline:
        pairs["pairs"] = {"deepfm": _deepfm_pair(ours_dense, theirs), **pairs["pairs"]}
    result["zoo"] = pairs
    n_rss = N_RSS // scale if rss_rows is None else rss_rows
    result["peak_rss"] = bench_peak_rss(n_rss) if n_rss else {}
    result["load_average_end"] = round(os.getloadavg()[0], 1)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "ctr_speed.json").write_text(json.dumps(result, indent=2))
    return result


def to_markdown(r: dict[str, Any], note: str | None = None) -> str:
    d = r["deepfm"]
    lines = [SECTION, ""]
    if note:
        lines += [note, ""]
    lines += [
        f"Reproduce: `{r.get('command', COMMAND)}` ({r['date']}; {r['threads']} torch threads; torch {r['torch']}; "
        f"{r['machine']}, {r.get('cpus', '?')} CPUs, 1-min load average "
        f"{r.get('load_average_start', '?')} at the start and {r.get('load_average_end', '?')} "
        f"at the end).",
        "",
        f"Synthetic Criteo-shaped data (26 categorical fields, vocabularies 10-100k, 13 numeric; "
        f"{r['rows']['train']:,} train / {r['rows']['test']:,} test rows, click rate "
        f"{r['rows']['click_rate']}). DeepFM, embedding 16, MLP 400-400-400, Adam 1e-3, batch "
        f"4096, one epoch, same process; numeric columns dense on both sides (recforge "
        f'`numeric="dense"`, DeepCTR-Torch `DenseFeat`: into the MLP input and the linear '
        f"part, FM over the 26 categorical fields). recforge's time includes encoding the "
        f"DataFrame.",
        "",
        "| DeepFM | samples/s | test AUC | fit s |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (
        ("recforge_sparse", "recforge (sparse=True, SparseAdam on table)"),
        ("recforge_dense", "recforge (dense Adam)"),
        ("deepctr_torch", "DeepCTR-Torch 0.3.0"),
    ):
        v = d[key]
        lines.append(f"| {label} | {v['samples_per_s']:,} | {v['test_auc']} | {v['fit_seconds']} |")
    s = r["speedup_vs_deepctr"]
    lines += [
        "",
        f"Speed-up over DeepCTR-Torch: {s['sparse']}x (sparse), {s['dense']}x (dense). "
        f"Train-loop only (encoding excluded): "
        f"{d['recforge_sparse']['train_loop_samples_per_s']:,} / {d['recforge_dense']['train_loop_samples_per_s']:,} samples/s.",
        "",
        f"Inference, `predict_proba` on 200 candidates (encoding included): p50 "
        f"{r['latency_200']['p50_ms']} ms, p99 {r['latency_200']['p99_ms']} ms.",
    ]
    rss = r["peak_rss"]
    if "peak_rss_mib" in rss:
        lines.append(
            f"Peak RSS building {rss['rows']:,} rows and training DeepFM one epoch: "
            f"{rss['peak_rss_mib']:,} MiB ({rss['seconds']} s)."
        )
    from benchmarks import ctr_pairs

    lines += [
        "",
        f"Every torch ranker that DeepCTR-Torch 0.3.0 also has, side by side with it: "
        f"{r['rows']['zoo']:,} train rows, the same {r['rows']['test']:,} test rows, one "
        f"epoch each, recforge then DeepCTR-Torch back to back in this process (load = the "
        f"1-min load average before each fit, recforge's then DeepCTR-Torch's). Shared: "
        f"embedding 16, MLP 400-400-400 wherever the model has one, no dropout/L2, Adam 1e-3, "
        f"batch 4096; the settings column is set equal on both sides "
        f"(`benchmarks/ctr_pairs.py`). ratio = recforge samples/s / DeepCTR-Torch's.",
        "",
        ctr_pairs.to_markdown(r["zoo"]).rstrip("\n"),
    ]
    return "\n".join(lines) + "\n"


def write_docs(path: str | Path, r: dict[str, Any], note: str | None = None) -> None:
    """Replace (or append) this benchmark's section of the docs file (``note``: a paragraph
    printed under the heading, e.g. about the machine)."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = to_markdown(r, note)
    if SECTION in text:
        start = text.index(SECTION)
        # up to the next heading: "### ..." subsections are other benchmarks' (ONNX latency)
        ends = [text.find(h, start + len(SECTION)) for h in ("\n## ", "\n### ")]
        nxt = min([e for e in ends if e != -1], default=-1)
        text = text[:start] + section + ("\n" + text[nxt + 1 :] if nxt != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def _without_note(argv: list[str]) -> list[str]:
    """The command-line arguments less ``--note TEXT`` (the note is prose, not a setting)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--note":
            skip = True
        elif not arg.startswith("--note="):
            out.append(arg)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="folder for ctr_speed.json")
    p.add_argument(
        "--docs", default=None, help="update this markdown file's '## Ranking speed' section"
    )
    p.add_argument("--quick", action="store_true", help="10x smaller sizes (smoke run)")
    for name, default in (
        ("train", f"{N_TRAIN:,}"),
        ("test", f"{N_TEST:,}"),
        ("zoo", "all train rows (the side-by-side table)"),
        ("rss", f"{N_RSS:,}; 0 skips the memory run"),
    ):
        p.add_argument(f"--{name}-rows", type=int, default=None, help=f"default {default}")
    p.add_argument("--models", default=None, help="comma-separated ctr_pairs.PAIRS keys")
    p.add_argument("--solo", default=None, help="comma-separated ctr_pairs.SOLO keys ('' none)")
    p.add_argument("--note", default=None, help="a paragraph under the docs heading")
    p.add_argument(
        "--repeats", type=int, default=1, help="alternating rounds per side-by-side pair"
    )
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    r = run(
        out=a.out,
        quick=a.quick,
        train_rows=a.train_rows,
        test_rows=a.test_rows,
        zoo_rows=a.zoo_rows,
        rss_rows=a.rss_rows,
        models=a.models.split(",") if a.models else None,
        solo=[s for s in a.solo.split(",") if s] if a.solo is not None else None,
        repeats=a.repeats,
        command="python -m benchmarks.ctr_speed " + " ".join(_without_note(sys.argv[1:])),
    )
    print(json.dumps(r, indent=2))
    if a.docs:
        write_docs(a.docs, r, a.note)


if __name__ == "__main__":
    main()
