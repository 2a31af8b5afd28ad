"""Out-of-core training: DeepFM from a Criteo-shaped Parquet log larger than the in-memory
path could hold, with peak RSS and throughput beside the in-memory path.

The log (``ctr_speed.criteo_like``: 26 categorical fields with vocabularies from 10 to
100,000, 13 numeric, a label) is written to Parquet in chunks of 1M rows (row groups of
64k), never held whole. Each measurement runs in a fresh process whose own peak RSS
(``VmHWM``) is reported: (a) DeepFM for one epoch from ``ParquetSource`` (one streaming
pass fits the encoder, then a shuffled epoch through a 256k-row buffer), (b) the same model
in memory on the first ``--mem-rows`` rows (what fits comfortably), both as samples/s.

    nice -n 10 python -m benchmarks.out_of_core --rows 20000000 --docs docs/BENCHMARKS.md
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
import time
from pathlib import Path
from typing import Any

from benchmarks import REPO, peak_rss_kib

log = logging.getLogger(__name__)

SECTION = "## Scale-out"
PARAMS = {"embedding_dim": 16, "hidden": (400, 400, 400), "batch_size": 4096, "epochs": 1,
          "num_threads": 1, "progress": False}  # fmt: skip


def write_log(path: Path, rows: int, chunk: int = 1_000_000) -> None:
    """A Criteo-shaped log of ``rows`` rows as one Parquet file, written chunk by chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.ctr_speed import criteo_like

    writer = None
    for i, start in enumerate(range(0, rows, chunk)):
        frame = criteo_like(min(chunk, rows - start), seed=i)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(str(path), table.schema)
        writer.write_table(table, row_group_size=65_536)
    if writer is not None:
        writer.close()


def _child(mode: str, path: str, rows: int) -> None:
    """Runs in a fresh process: train, print one JSON line."""
    import pandas as pd

    from recforge import models
    from recforge.data.stream import ParquetSource

    t0 = time.perf_counter()
    model = models.get("deepfm", **PARAMS)
    if mode == "stream":
        src = ParquetSource(path)
        n = src.n_rows
        model.fit(src, label="label")
    else:
        src = ParquetSource(path)
        frames, n = [], 0
        for f in src.frames():
            frames.append(f)
            n += len(f)
            if n >= rows:
                break
        frame = pd.concat(frames, ignore_index=True).iloc[:rows]
        n = len(frame)
        model.fit(frame, label="label")
    s = time.perf_counter() - t0
    print(json.dumps({"mode": mode, "rows": n, "seconds": round(s, 1),
                      "samples_per_s": round(n / s), "peak_rss_mib": round(peak_rss_kib() / 1024)}))  # fmt: skip


def _measure(mode: str, path: Path, rows: int) -> dict[str, Any]:
    code = f"import benchmarks.out_of_core as b; b._child({mode!r}, {str(path)!r}, {rows})"
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(
    data_dir: Any = None,
    out: str | Path | None = None,
    rows: int = 20_000_000,
    mem_rows: int = 2_000_000,
) -> dict[str, Any]:
    work = Path(out) if out else Path(tempfile.mkdtemp(prefix="recforge-ooc-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / "criteo_like.parquet"
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    if not path.exists():
        write_log(path, rows)
    write_s = time.perf_counter() - t0
    stream = _measure("stream", path, rows)
    memory = _measure("memory", path, min(mem_rows, rows))
    r = {"rows": rows, "write_s": round(write_s, 1), "stream": stream, "memory": memory,
         "parquet_mib": round(path.stat().st_size / 2**20), "date": _dt.date.today().isoformat(),
         "loadavg_before": round(load_before, 2), "loadavg_after": round(os.getloadavg()[0], 2)}  # fmt: skip
    r["markdown"] = markdown(r)
    return r


def markdown(r: dict[str, Any]) -> str:
    s, m = r["stream"], r["memory"]
    ratio = s["samples_per_s"] / m["samples_per_s"]
    return "\n".join([
        "### Out-of-core DeepFM: a Criteo-shaped Parquet log",
        "",
        f"`nice -n 10 python -m benchmarks.out_of_core --rows {r['rows']}` ({r['date']}, load "
        f"average {r['loadavg_before']} before / {r['loadavg_after']} after; Parquet "
        f"{r['parquet_mib']:,} MiB). DeepFM, emb 16, MLP 400x3, batch 4096, 1 epoch, 1 thread.",
        "",
        "| path | rows | seconds | samples/s | peak RSS (MiB) |",
        "|---|---|---|---|---|",
        f"| ParquetSource (streaming encoder fit + shuffled epoch) | {s['rows']:,} | {s['seconds']} | {s['samples_per_s']:,} | {s['peak_rss_mib']:,} |",
        f"| in memory (DataFrame) | {m['rows']:,} | {m['seconds']} | {m['samples_per_s']:,} | {m['peak_rss_mib']:,} |",
        "",
        f"Streaming throughput is {ratio:.2f}x the in-memory path's (the stream's time includes "
        f"its encoder-fitting pass over the file).",
        "",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=20_000_000)
    p.add_argument("--mem-rows", type=int, default=2_000_000)
    p.add_argument("--out", default=None)
    p.add_argument("--docs", default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    r = run(out=a.out, rows=a.rows, mem_rows=a.mem_rows)
    print(r["markdown"])
    if a.docs:
        from benchmarks.recall_zoo import update_docs

        print(f"updated {update_docs(r['markdown'], a.docs, SECTION)}")


if __name__ == "__main__":
    main()
