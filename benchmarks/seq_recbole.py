"""RecBole's SASRec next to recforge's on the same Beauty split, in the same process:
training throughput (next-item targets per CPU second and per wall second) and test
HR@10 / NDCG@10 after the same number of epochs.

Both read ``amazon-beauty/Beauty.txt`` under the S3-Rec protocol (last item test, second
to last validation, the rest training; every item ranked, history items excluded). RecBole
1.2.0 gets the file as an atomic ``.inter`` (the position in the line as timestamp) and
``eval_args = {split: {LS: valid_and_test}, order: TO, mode: full}``, its leave-one-out
with full ranking, and its SASRec defaults (2 blocks, 2 heads, D 64, FFN 256, dropout 0.5,
CE over every item, batch 2048 augmented prefixes, Adam 1e-3); recforge's SASRec runs at
its defaults (CE, batch 128 sequences, every position a target). A "sample" is one
next-item target: a RecBole training row (one prefix, its next item) or one position of a
recforge sequence (one recforge row under ``prefix_rows=True``). Metrics are each library's own full-ranking evaluation on its test
split. RecBole is imported without ``recbole.quick_start`` (which needs ray), and given the
three NumPy 1 names its config still assigns (``numpy2_shim``).

Run it (``pip install --no-deps recbole==1.2.0 thop`` and ``colorlog colorama texttable
tensorboard``; ``make bench`` installs them)::

    nice -n 10 python -m benchmarks.seq_recbole --epochs 1
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks import report
from recforge import models as registry
from recforge.data.interactions import Interactions
from recforge.data.sequences import sequence_lengths, sequence_matrix

log = logging.getLogger(__name__)

SECTION = "## Recall"
SUBSECTION = "### SASRec against RecBole on Amazon Beauty"
THREADS = int(os.environ.get("RECFORGE_BENCH_THREADS", "1"))


def write_atomic(beauty_txt: Path, folder: Path) -> None:
    """Beauty.txt -> ``folder/beauty/beauty.inter`` (user, item, position as timestamp)."""
    rows = []
    for line in beauty_txt.read_text().splitlines():
        user, *items = line.split()
        rows += [f"{user}\t{item}\t{t}" for t, item in enumerate(items)]
    (folder / "beauty").mkdir(parents=True, exist_ok=True)
    header = "user_id:token\titem_id:token\ttimestamp:float\n"
    (folder / "beauty" / "beauty.inter").write_text(header + "\n".join(rows) + "\n")


def numpy2_shim() -> None:
    """RecBole 1.2.0's ``Config`` re-creates the NumPy 1 aliases (``np.float = np.float_``,
    ``np.complex_``, ``np.unicode_``), names NumPy 2 removed; give it those three, in this
    process only."""
    for old, new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if old not in np.__dict__:
            setattr(np, old, new)


def run_recbole(data_dir: Path, epochs: int, seed: int) -> dict[str, Any]:
    numpy2_shim()
    data_dir = Path(data_dir).resolve()  # before the chdir below
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    # RecBole writes log_tensorboard/ (and saved/) under the working directory: run in tmp
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        write_atomic(data_dir / "amazon-beauty" / "Beauty.txt", Path(tmp))
        config = Config(
            model="SASRec",
            dataset="beauty",
            config_dict={
                "data_path": tmp,
                "checkpoint_dir": str(Path(tmp) / "saved"),
                "device": "cpu",
                "use_gpu": False,
                "seed": seed,
                "epochs": epochs,
                "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
                "MAX_ITEM_LIST_LENGTH": 50,
                "loss_type": "CE",
                "train_neg_sample_args": None,
                "eval_args": {
                    "split": {"LS": "valid_and_test"},
                    "order": "TO",
                    "mode": "full",
                    "group_by": "user",
                },
                "metrics": ["Hit", "NDCG"],
                "topk": [10],
                "valid_metric": "NDCG@10",
                "show_progress": False,
                "worker": 0,
            },
        )
        init_seed(seed, True)
        torch.set_num_threads(THREADS)
        dataset = create_dataset(config)
        train_data, _valid, test_data = data_preparation(config, dataset)
        model = SASRec(config, train_data._dataset)
        trainer = Trainer(config, model)
        samples = len(train_data._dataset)
        cpu, wall = 0.0, 0.0
        for epoch in range(epochs):
            c0, t0 = time.process_time(), time.perf_counter()
            trainer._train_epoch(train_data, epoch_idx=epoch)
            cpu += time.process_time() - c0
            wall += time.perf_counter() - t0
        result = trainer.evaluate(test_data, load_best_model=False)
        torch.set_num_threads(THREADS)  # RecBole's init may have changed it
    return {
        "model": "RecBole SASRec",
        "samples_per_epoch": samples,
        "train_cpu_s": cpu,
        "train_wall_s": wall,
        "test_hr@10": float(result["hit@10"]),
        "test_ndcg@10": float(result["ndcg@10"]),
    }


def run_ours(data_dir: Path, epochs: int, seed: int) -> dict[str, Any]:
    from benchmarks.seq_beauty import load, test_ranks
    from recforge.models.retrieval.sequential import rank_metrics

    train, valid, test = load(data_dir)
    model = registry.get("sasrec", seed=seed, num_threads=THREADS, epochs=epochs)
    c0, t0 = time.process_time(), time.perf_counter()
    model.fit(train)  # no validation: the same work per epoch as RecBole's _train_epoch
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    if model.prefix_rows:  # one row per prefix, one target each
        samples = len(model._training_rows(train)[1])
    else:
        seqs = sequence_matrix(train, model.user_vocab_, model.item_vocab_, model.max_len + 1)
        samples = int(np.maximum(sequence_lengths(seqs) - 1, 0).sum())  # positions with a target
    history = Interactions(pd.concat([train.frame, valid.frame], ignore_index=True))
    metrics = rank_metrics(test_ranks(model, history, test), 10)
    return {
        "model": "recforge SASRec",
        "samples_per_epoch": samples,
        "train_cpu_s": cpu,
        "train_wall_s": wall,
        "test_hr@10": metrics["hr@10"],
        "test_ndcg@10": metrics["ndcg@10"],
    }


def run(
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    epochs: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    from benchmarks import resolve_data_dir

    data_dir = Path(resolve_data_dir(data_dir))
    torch.set_num_threads(THREADS)
    rows = []
    for fn in (run_recbole, run_ours):
        load_before = os.getloadavg()[0]
        try:
            row = fn(data_dir, epochs, seed)
        except Exception as e:  # a failing peer must not lose the other's numbers
            log.exception("seq_recbole: %s failed", fn.__name__)
            row = {"model": fn.__name__, "error": f"{type(e).__name__}: {e}"}
        row.update(epochs=epochs, load_avg=f"{load_before:.1f}-{os.getloadavg()[0]:.1f}")
        rows.append(row)
        log.info("%s", row)
    result = {
        "date": _dt.date.today().isoformat(),
        "environment": {"python": platform.python_version(), "torch": torch.__version__},
        "threads": THREADS,
        "rows": rows,
    }
    result["markdown"] = to_markdown(result)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "seq_recbole.json").write_text(json.dumps(result, indent=2))
    return result


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        SUBSECTION,
        "",
        f"Run on {result['date']} (python {result['environment']['python']}, torch "
        f"{result['environment']['torch']}, {result['threads']} torch thread) with:",
        "",
        f"    nice -n 10 python -m benchmarks.seq_recbole --epochs {result['rows'][0]['epochs']}",
        "",
        "| library | samples / epoch | train CPU s | samples / CPU s | train wall s | "
        "samples / wall s | test HR@10 | test NDCG@10 | epochs | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {r['error']} |||||||||")
            continue
        n = r["samples_per_epoch"] * r["epochs"]
        lines.append(
            f"| {r['model']} | {r['samples_per_epoch']} | {r['train_cpu_s']:.0f} | "
            f"{n / r['train_cpu_s']:.0f} | {r['train_wall_s']:.0f} | {n / r['train_wall_s']:.0f} | "
            f"{r['test_hr@10']:.4f} | {r['test_ndcg@10']:.4f} | {r['epochs']} | {r['load_avg']} |"
        )
    lines += [
        "",
        "See `benchmarks/seq_recbole.py` for the protocol (RecBole's SASRec defaults against "
        "recforge's; a sample is one next-item target). The test metrics are each library's "
        "own evaluation after the same number of epochs, not converged models.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder holding amazon-beauty/")
    parser.add_argument("--out", default=None, help="folder for seq_recbole.json")
    parser.add_argument("--docs", default=None, help="markdown file to update")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run(args.data_dir, out=args.out, epochs=args.epochs, seed=args.seed)
    report(result, args.docs, SECTION)


if __name__ == "__main__":
    main()
