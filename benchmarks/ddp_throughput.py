"""Data-parallel training throughput: DeepFM samples/s with 1 and 2 processes (torchrun,
gloo, one thread each) on the same synthetic job.

On a 2-core machine the honest expectation is about 1x: two processes split two cores that
one process with two threads could also use, and every step adds an all-reduce of the
gradients. The figure is here so that the overhead is known, not as a speed-up.

    nice -n 10 python -m benchmarks.ddp_throughput --docs docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from benchmarks import REPO

log = logging.getLogger(__name__)

SECTION = "## Scale-out"
JOB = {
    "data": {"source": "synth", "size": "small", "seed": 0},
    "split": {"method": "temporal", "test_ratio": 0.1},
    "model": {
        "name": "deepfm",
        "params": {"epochs": 2, "embedding_dim": 16, "hidden": [256, 128], "batch_size": 2048,
                   "num_threads": 1, "progress": False},
    },
}  # fmt: skip


def _train(work: Path, nproc: int) -> dict[str, Any]:
    job = {**JOB, "output": str(work / f"np{nproc}")}
    cfg = work / f"np{nproc}.yaml"
    cfg.write_text(yaml.safe_dump(job))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "recforge", "train", "--config", str(cfg), "--nproc", str(nproc),
           "--overwrite"]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    m = json.loads((work / f"np{nproc}" / "metrics.json").read_text())
    rows = json.loads((work / f"np{nproc}" / "manifest.json").read_text())
    return {"nproc": nproc, "fit_seconds": m["fit_seconds"], "auc": round(m["auc"], 4),
            "epochs": JOB["model"]["params"]["epochs"], "model": rows["name"]}  # fmt: skip


def run(data_dir: Any = None, out: str | Path | None = None) -> dict[str, Any]:
    from recforge.data.synth import SIZES, make_ctr_frame, make_synthetic

    work = Path(out) if out else Path(tempfile.mkdtemp(prefix="recforge-ddp-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    inter = make_synthetic(**SIZES["small"], seed=0)
    n_train = int(len(make_ctr_frame(inter, n_negatives=4)) * 0.9)  # the job's impressions
    runs = [_train(work, n) for n in (1, 2)]
    for r in runs:
        r["samples_per_s"] = round(n_train * r["epochs"] / r["fit_seconds"])
    res = {"runs": runs, "n_train": n_train, "date": _dt.date.today().isoformat(),
           "loadavg_before": round(load_before, 2), "loadavg_after": round(os.getloadavg()[0], 2)}  # fmt: skip
    res["markdown"] = markdown(res)
    return res


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "### Data-parallel DeepFM: 1 and 2 processes (torchrun, gloo)",
        "",
        f"`nice -n 10 python -m benchmarks.ddp_throughput` ({r['date']}, 2 cores, load average "
        f"{r['loadavg_before']} before / {r['loadavg_after']} after). About {r['n_train']:,} "
        "training impressions (synthetic small), 2 epochs, one thread per process; fit time "
        "includes encoding and validation.",
        "",
        "| processes | fit seconds | samples/s | test AUC |",
        "|---|---|---|---|",
    ]
    for x in r["runs"]:
        lines.append(f"| {x['nproc']} | {x['fit_seconds']} | {x['samples_per_s']:,} | {x['auc']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None)
    p.add_argument("--docs", default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    r = run(out=a.out)
    print(r["markdown"])
    if a.docs:
        from benchmarks.recall_zoo import update_docs

        print(f"updated {update_docs(r['markdown'], a.docs, SECTION)}")


if __name__ == "__main__":
    main()
