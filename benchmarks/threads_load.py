"""Training speed against torch thread count, on an idle and on a loaded machine.

    nice -n 10 python benchmarks/threads_load.py --load 3 [--docs docs/BENCHMARKS.md]

Each measurement is a fresh process (torch's thread pool is process-wide) that fits one
model once with ``num_threads`` 1, 2 or None (the ``recforge.threads`` auto default) and
reports the fit's wall time:

* DeepFM, one epoch over 60,000 impressions of the synthetic "small" log (batch 2048);
* LightGCN, one epoch on MovieLens-100K ratings >= 4 (the model's defaults otherwise).

"as found" is the machine with whatever else runs on it (the load average is printed);
"+N busy" adds ``--load`` busy-looping processes (at the same niceness) for the duration
of those runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CASES = ("deepfm", "lightgcn")
SETTINGS = ("1", "2", "auto")


def _child(case: str, threads: str, data_dir: str) -> None:
    from recforge import models

    n = None if threads == "auto" else int(threads)
    if case == "deepfm":
        from recforge.data.synth import SIZES, make_ctr_frame, make_synthetic

        frame = make_ctr_frame(make_synthetic(**SIZES["small"], seed=0), n_negatives=4, seed=1)
        frame = frame.iloc[:60_000].reset_index(drop=True)
        model = models.get(
            "deepfm", epochs=1, batch_size=2048, hidden=(128, 64), num_threads=n, progress=False
        )
        t0 = time.perf_counter()
        model.fit(frame, label="label")
    else:
        from recforge.data.readers import load_dataset
        from recforge.jobs import positives

        data = positives(load_dataset("ml-100k", data_dir), 4.0)
        model = models.get("lightgcn", epochs=1, num_threads=n, progress=False)
        t0 = time.perf_counter()
        model.fit(data)
    import torch

    print(
        json.dumps({"seconds": time.perf_counter() - t0, "torch_threads": torch.get_num_threads()})
    )


def _measure(case: str, threads: str, data_dir: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", case, threads, "--data-dir", data_dir],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(load: int, data_dir: str, repeats: int = 1) -> list[dict]:
    rows = []
    for label, n_busy in (("as found", 0), (f"+{load} busy", load)):
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n_busy)]
        try:
            if n_busy:
                time.sleep(20)  # let the 1-minute load average see the busy loops
            for case in CASES:
                for threads in SETTINGS:
                    load_before = os.getloadavg()[0]
                    best = min(
                        (_measure(case, threads, data_dir) for _ in range(repeats)),
                        key=lambda r: r["seconds"],
                    )
                    rows.append(
                        {
                            "machine": label,
                            "model": case,
                            "num_threads": threads,
                            "torch_threads": best["torch_threads"],
                            "seconds": round(best["seconds"], 2),
                            "load": round(load_before, 2),
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            for p in busy:
                p.kill()
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| machine | model | num_threads | torch threads used | fit (s) | load average (1 min) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['machine']} | {r['model']} | {r['num_threads']} | {r['torch_threads']} | "
            f"{r['seconds']} | {r['load']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=2)
    ap.add_argument("--load", type=int, default=3, help="busy processes for the loaded runs")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(
        "--data-dir", default=os.environ.get("RECFORGE_DATA_DIR", str(Path("../shared/data")))
    )
    args = ap.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], args.data_dir)
    else:
        print(f"cpus {os.cpu_count()}, load before {os.getloadavg()}", flush=True)
        print(table(run(args.load, args.data_dir, args.repeats)))
