"""Sequential recall on Amazon Beauty under the S3-Rec protocol: SASRec, GRU4Rec, BERT4Rec
with their defaults.

Protocol (``amazon-beauty/`` README, S3-Rec's "all-rank"): per user, the last item is the
test target, the second to last the validation target, the rest the training history.
Each model trains on the histories and keeps the epoch with the best validation NDCG@10
(``fit(train, valid=valid)``). For the test, the model reads the history *and* the
validation item (everything before the target), scores every item, the items of that
history get -inf, and the target is ranked among the rest (HR@10, NDCG@10 over all
22,363 users; a target the model never saw in training counts as a miss).

Models run with their registered defaults (``PARAMS`` only sets threads and the seed),
since a user's data is not Beauty. Timings are wall-clock on ``THREADS`` torch threads;
the machine's load average is recorded with them.

Run it::

    python -m benchmarks.seq_beauty --docs docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
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
from recforge import models as registry
from recforge.data.interactions import Interactions
from recforge.data.readers.sequences import read_sequences
from recforge.data.sequences import sequence_matrix
from recforge.data.splits import leave_one_out
from recforge.models.retrieval.sequential import (
    SequentialRecommender,
    rank_metrics,
    target_ranks,
)

log = logging.getLogger(__name__)

SECTION = "## Recall"
SUBSECTION = "### Sequential recall on Amazon Beauty (S3-Rec protocol)"
COMMAND = "nice -n 10 python -m benchmarks.seq_beauty --docs docs/BENCHMARKS.md"
THREADS = int(os.environ.get("RECFORGE_BENCH_THREADS", "2"))
MODELS = ("sasrec", "gru4rec", "bert4rec")
# S3-Rec paper (all-rank) and the goals: (HR@10, NDCG@10)
PUBLISHED = {"sasrec": (0.0605, 0.0318), "gru4rec": (0.0283, 0.0137), "bert4rec": (0.0347, 0.0170)}
GOALS = {"sasrec": (0.092, 0.052), "gru4rec": (0.057, 0.027), "bert4rec": (0.0605, 0.0318)}


def load(data_dir: Path) -> tuple[Interactions, Interactions, Interactions]:
    """Beauty.txt split leave-one-out: (train, valid, test); cold rows kept."""
    inter = read_sequences(Path(data_dir) / "amazon-beauty" / "Beauty.txt")
    train, valid, test = leave_one_out(inter, valid=True, filter_cold=False)
    return train, valid, test


def test_ranks(
    model: SequentialRecommender, history: Interactions, test: Interactions
) -> np.ndarray:
    """0-based rank of each test user's target among every item, from the model reading
    ``history`` (train + valid); history items -inf; unknown users/targets rank n_items.
    Query vectors for every user in length-bucketed batches, then ``target_ranks`` (one
    matmul per block of users, -inf scattered on the history's indices, the rank as a
    count of higher scores)."""
    seqs = sequence_matrix(
        history, model.user_vocab_, model.item_vocab_, int(model.max_len), model.align
    )
    seen = history.to_csr(model.user_vocab_, model.item_vocab_)
    users = model.user_vocab_.index(test.frame["user"].to_numpy(), unknown="mask")
    items = model.item_vocab_.index(test.frame["item"].to_numpy(), unknown="mask")
    ranks = np.full(len(users), model.n_items, dtype=np.int64)
    ok = np.flatnonzero((users >= 0) & (items >= 0))
    q = torch.from_numpy(model.query_vectors(seqs[users[ok]]))  # (n, D)
    table = torch.from_numpy(model.item_factors_)  # (n_items, D)
    ranks[ok] = target_ranks(q, table, items[ok], seen, users[ok])
    return ranks


def run_one(name: str, seed: int, train, valid, test, params: dict[str, Any]) -> dict[str, Any]:
    model = registry.get(name, seed=seed, num_threads=THREADS, **params)
    t0 = time.perf_counter()
    model.fit(train, valid=valid)
    fit_s = time.perf_counter() - t0
    load_fit = os.getloadavg()[0]
    phases = model.phase_histories_  # BERT4Rec: Cloze, then final-position fine-tuning
    history = Interactions(pd.concat([train.frame, valid.frame], ignore_index=True))
    t0, c0 = time.perf_counter(), time.process_time()
    ranks = test_ranks(model, history, test)
    eval_s, eval_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    out = {
        "model": name,
        "label": ", ".join(f"{k}={v}" for k, v in params.items() if k != "time_limit_s"),
        "params": params,
        "seed": seed,
        "fit_s": fit_s,
        "eval_s": eval_s,
        "eval_cpu_s": eval_cpu_s,
        "epochs_run": "+".join(str(len(h.train_loss)) for h in phases),
        "best_epoch": "+".join(str((h.best_epoch or 0) + 1) for h in phases),
        "valid_ndcg@10": max(h.best_value or 0.0 for h in phases),
        "valid_curve": [v.get("ndcg@10") for h in phases for v in h.valid],
        "loss": model.loss_,
        "load_avg": load_fit,
        "n_users": len(ranks),
        **{f"test_{k}": v for k, v in rank_metrics(ranks, 10).items()},
    }
    log.info("%s", out)
    return out


def run(
    data_dir: str | Path,
    out: str | Path | None = None,
    models: tuple[str, ...] = MODELS,
    seeds: tuple[int, ...] = (0, 1, 2),
    params: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train and test each model on each seed; returns rows and the markdown section."""
    torch.set_num_threads(THREADS)
    train, valid, test = load(Path(data_dir))
    rows = []
    for name in models:
        for seed in seeds:
            rows.append(run_one(name, seed, train, valid, test, (params or {}).get(name, {})))
    result = {
        "date": _dt.date.today().isoformat(),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": str(THREADS),
        },
        "rows": rows,
    }
    result["markdown"] = to_markdown(result)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "seq_beauty.json").write_text(json.dumps(result, indent=2, default=str))
        (out / "seq_beauty.md").write_text(result["markdown"])
    return result


def to_markdown(result: dict[str, Any]) -> str:
    env = ", ".join(f"{k} {v}" for k, v in result["environment"].items())
    frame = pd.DataFrame(result["rows"])
    lines = [
        SUBSECTION,
        "",
        f"Run on {result['date']} ({env}) with:",
        "",
        f"    {COMMAND}",
        "",
        "22,363 users, 12,101 items; last item test, second to last validation, the rest "
        "history; every item scored, history items -inf; the epoch with the best validation "
        "NDCG@10 kept; nothing tuned on the test split. A row without a label is the "
        "registered defaults; a label lists what that row overrides.",
        "",
        "| Model | loss | seeds | HR@10 | NDCG@10 | valid NDCG@10 | published HR@10 / NDCG@10 | "
        "goal | best / run epochs | fit (s) | full-ranking eval (s) | eval CPU s | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    frame["model"] = [
        f"{r['model']} ({r['label']})" if r.get("label") else r["model"] for r in result["rows"]
    ]
    for name, g in frame.groupby("model", sort=False):
        base = name.split(" ")[0]
        pub, goal = PUBLISHED.get(base), GOALS.get(base)
        lines.append(
            f"| {name} | {g['loss'].iloc[0]} | {len(g)} | "
            f"{g['test_hr@10'].mean():.4f} ± {g['test_hr@10'].std(ddof=0):.4f} | "
            f"{g['test_ndcg@10'].mean():.4f} ± {g['test_ndcg@10'].std(ddof=0):.4f} | "
            f"{g['valid_ndcg@10'].mean():.4f} | "
            f"{f'{pub[0]} / {pub[1]}' if pub else '-'} | {f'{goal[0]} / {goal[1]}' if goal else '-'} | "
            f"{', '.join(f'{b} / {r}' for b, r in zip(g['best_epoch'], g['epochs_run']))} | "
            f"{g['fit_s'].mean():.0f} | "
            f"{g['eval_s'].mean():.2f} | {eval_cpu(g)} | {g['load_avg'].mean():.1f} |"
        )
    lines += [
        "",
        "HR@10 / NDCG@10: test, mean ± std over the seeds run. *valid NDCG@10*: the best "
        "epoch's, which chose the weights. *best / run epochs*: per training phase "
        "(BERT4Rec: Cloze + final-position fine-tuning). *fit*: wall-clock seconds of "
        "training including the per-epoch validation; *full-ranking eval*: query vectors "
        "from every user's history, scores of every item seen in training (12,068 of "
        "12,101; a target outside them counts as a miss), history masking and the target's "
        "rank, for 22,363 users (wall clock, and CPU seconds of this process: on a loaded "
        "machine the CPU figure is what one free core would take).",
    ]
    if "notes" in result:
        lines += ["", *result["notes"]]
    return "\n".join(lines) + "\n"


def eval_cpu(rows: pd.DataFrame) -> str:
    """Mean CPU seconds of the full-ranking evaluation ("-" for rows run before it was kept)."""
    if "eval_cpu_s" not in rows or rows["eval_cpu_s"].isna().all():
        return "-"
    return f"{rows['eval_cpu_s'].mean():.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder holding amazon-beauty/")
    parser.add_argument("--out", default=None, help="folder for seq_beauty.json / .md")
    parser.add_argument("--docs", default=None, help="markdown file to update")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--params", default="{}", help='JSON {"model": {param: value}} for experiments'
    )
    parser.add_argument(
        "--combine",
        nargs="*",
        default=None,
        help="seq_beauty.json files of separate runs to report together (nothing is trained)",
    )
    parser.add_argument("--notes", default=None, help="with --combine: a text file of notes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from benchmarks import resolve_data_dir

    if args.combine:
        parts = [json.loads(Path(p).read_text()) for p in args.combine]
        result = {**parts[0], "rows": [r for p in parts for r in p["rows"]]}
        if args.notes:
            result["notes"] = Path(args.notes).read_text().strip().splitlines()
        result["markdown"] = to_markdown(result)
        report(result, args.docs, SECTION)
        return
    result = run(
        resolve_data_dir(args.data_dir),
        out=args.out,
        models=tuple(args.models.split(",")),
        seeds=tuple(int(s) for s in args.seeds.split(",")),
        params=json.loads(args.params),
    )
    report(result, args.docs, SECTION)


if __name__ == "__main__":
    main()
