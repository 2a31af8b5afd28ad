"""Batch inference throughput: every user's top 100 into Parquet, 1 and 2 processes.

ALS (32 factors) fitted on a synthetic log of 100k users and ~50k items, then
``recforge.serving.batch.batch_recommend`` for all users with k = 100 in chunks of 10,000
(full scoring of every item per user, seen items excluded), with 1 and with 2 worker
processes. Rows written, seconds and users/s, beside the load average.

    nice -n 10 python -m benchmarks.batch_inference --docs docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SECTION = "## Serving"
COMMAND = "nice -n 10 python -m benchmarks.batch_inference --docs docs/BENCHMARKS.md"
SIZE = {"n_users": 100_000, "n_items": 90_000, "n_interactions": 1_000_000, "n_categories": 50}


def run(
    data_dir: Any = None, out: str | Path | None = None, size: dict | None = None, processes=(1, 2)
) -> dict[str, Any]:
    from recforge import models
    from recforge.data.synth import make_synthetic
    from recforge.serving.batch import batch_recommend

    size = size or SIZE
    work = Path(out) if out else Path(tempfile.mkdtemp(prefix="recforge-batch-bench-"))
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    inter = make_synthetic(**size, dim=16, seed=0)
    model = models.get("als", factors=32, iterations=5, num_threads=1).fit(inter)
    path = model.save(work / "als")
    build_s = time.perf_counter() - t0
    runs = []
    for p in processes:
        target = work / f"recs-{p}.parquet"
        shutil.rmtree(target, ignore_errors=True)
        r = batch_recommend(path, target, k=100, chunk_size=10_000, processes=p)
        runs.append(
            {"processes": p, **{k: r[k] for k in ("users", "rows", "seconds", "users_per_s")}}
        )
        log.info("batch %s processes: %s", p, runs[-1])
    result = {
        "users": model.n_users, "items": model.n_items, "build_s": round(build_s, 1),
        "runs": runs, "loadavg_before": round(load_before, 2),
        "loadavg_after": round(os.getloadavg()[0], 2), "date": _dt.date.today().isoformat(),
    }  # fmt: skip
    result["markdown"] = markdown(result)
    return result


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "### Batch inference: top 100 for every user into Parquet",
        "",
        f"`{COMMAND}` ({r['date']}, load average {r['loadavg_before']} before / "
        f"{r['loadavg_after']} after). ALS, 32 factors, {r['users']:,} users x "
        f"{r['items']:,} items, every item scored per user, chunks of 10,000 users.",
        "",
        "| processes | users | rows | seconds | users/s |",
        "|---|---|---|---|---|",
    ]
    for x in r["runs"]:
        lines.append(
            f"| {x['processes']} | {x['users']:,} | {x['rows']:,} | {x['seconds']} | {x['users_per_s']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None)
    p.add_argument("--docs", default=None)
    p.add_argument("--small", action="store_true", help="10k users (a quick check)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    size = (
        {"n_users": 10_000, "n_items": 20_000, "n_interactions": 100_000, "n_categories": 20}
        if a.small
        else None
    )
    r = run(out=a.out, size=size)
    print(r["markdown"])
    if a.docs:
        from benchmarks.recall_zoo import update_docs

        print(f"updated {update_docs(r['markdown'], a.docs, SECTION)}")


if __name__ == "__main__":
    main()
