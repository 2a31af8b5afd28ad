"""Out-of-core training: DeepFM from a Criteo-shaped Parquet log larger than the in-memory
path could hold, with peak RSS and throughput beside the in-memory path.

The log (``ctr_speed.criteo_like``: 26 categorical fields with vocabularies from 10 to
100,000, 13 numeric, a label) is written to Parquet in chunks of 1M rows (row groups of
64k), never held whole. Each measurement runs in a fresh process whose own peak RSS
(``VmHWM``) is reported:

- the comparison, at ``--compare-rows`` (a size where the in-memory path fits): DeepFM for
  one epoch from ``ParquetSource`` (one streaming pass fits the encoder, then a shuffled
  epoch through a 256k-row buffer) and the same model on the same rows as one DataFrame,
  run stream, memory, memory, stream (the mean of each pair, so that a change of the
  machine's load during the run weighs on both alike);
- the large run: DeepFM streaming one epoch over ``--rows`` rows (0: skip);
- the data path alone over ``--data-rows`` rows (0: skip): the encoder's streaming pass and
  one shuffled epoch read and encoded, no training (what grows with the rows, if anything).

Results accumulate in ``--out``/results.json (one invocation may run the comparison, another
the large run); ``--docs`` writes the section from what is there.

    nice -n 10 python -m benchmarks.out_of_core --rows 20000000 --compare-rows 1000000 \
        --out runs/ooc --docs docs/BENCHMARKS.md
    # what docs/BENCHMARKS.md holds (a loaded 2-core machine): three runs, one --out
    nice -n 10 python -m benchmarks.out_of_core --rows 0 --compare-rows 300000 --out runs/ooc
    nice -n 10 python -m benchmarks.out_of_core --rows 2000000 --compare-rows 0 --out runs/ooc
    nice -n 10 python -m benchmarks.out_of_core --rows 0 --compare-rows 0 \
        --data-rows 20000000 --out runs/ooc --docs docs/BENCHMARKS.md
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

    t0, c0 = time.perf_counter(), time.process_time()
    model = models.get("deepfm", **PARAMS)
    extra: dict[str, Any] = {}
    if mode == "data":  # the data path alone: the encoder's streaming pass + a shuffled epoch
        src = ParquetSource(path)
        n = src.n_rows
        encoder = model.make_encoder(next(src.frames())).fit_stream(src.frames(), "label")
        extra["encoder_fit_s"] = round(time.perf_counter() - t0, 1)
        for block in src.shuffled(0):
            model.encode(encoder, block)
    elif mode == "stream":
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
    cpu = time.process_time() - c0  # this process's CPU seconds: what the load cannot inflate
    extra.update(cpu_s=round(cpu, 1), samples_per_cpu_s=round(n / cpu))
    print(json.dumps({"mode": mode, "rows": n, "seconds": round(s, 1), **extra,
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
    compare_rows: int = 1_000_000,
    data_rows: int = 0,
) -> dict[str, Any]:
    work = Path(out) if out else Path(tempfile.mkdtemp(prefix="recforge-ooc-"))
    work.mkdir(parents=True, exist_ok=True)
    rfile = work / "results.json"
    r: dict[str, Any] = json.loads(rfile.read_text()) if rfile.exists() else {}
    load = [round(os.getloadavg()[0], 2)]
    if compare_rows:
        path = _log_file(work, compare_rows)
        runs = [_measure(m, path, compare_rows) for m in ("stream", "memory", "memory", "stream")]
        for mode in ("stream", "memory"):
            pair = [x for x in runs if x["mode"] == mode]
            r[f"compare_{mode}"] = {
                "rows": compare_rows,
                "samples_per_s": round(sum(x["samples_per_s"] for x in pair) / 2),
                "runs_samples_per_s": [x["samples_per_s"] for x in pair],
                "seconds": [x["seconds"] for x in pair],
                "peak_rss_mib": max(x["peak_rss_mib"] for x in pair),
                "cpu_s": [x["cpu_s"] for x in pair],
                "samples_per_cpu_s": round(sum(x["samples_per_cpu_s"] for x in pair) / 2),
            }
        load.append(round(os.getloadavg()[0], 2))
        r["compare_load"] = load[-2:]
        r["compare_date"] = _dt.date.today().isoformat()
    if rows:
        t0 = time.perf_counter()
        path = _log_file(work, rows)
        write_s = round(time.perf_counter() - t0, 1)
        load = [round(os.getloadavg()[0], 2)]
        big = _measure("stream", path, rows)
        load.append(round(os.getloadavg()[0], 2))
        r["large"] = {**big, "write_s": write_s, "parquet_mib": round(path.stat().st_size / 2**20),
                      "load": load, "date": _dt.date.today().isoformat()}  # fmt: skip
    if data_rows:
        path = _log_file(work, data_rows)
        load = [round(os.getloadavg()[0], 2)]
        r["data"] = {**_measure("data", path, data_rows), "load": load,
                     "parquet_mib": round(path.stat().st_size / 2**20),
                     "date": _dt.date.today().isoformat()}  # fmt: skip
        r["data"]["load"].append(round(os.getloadavg()[0], 2))
    rfile.write_text(json.dumps(r, indent=2))
    r["markdown"] = markdown(r)
    return r


def _log_file(work: Path, rows: int) -> Path:
    path = work / f"criteo_like_{rows}.parquet"
    if not path.exists():
        tmp = path.with_name(f".{path.name}.tmp")
        write_log(tmp, rows)
        tmp.replace(path)
    return path


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "### Out-of-core DeepFM",
        "",
        "A Criteo-shaped Parquet log (26 categorical fields, vocabularies 10-100k, 13 numeric; "
        "row groups of 64k rows). DeepFM, embedding 16, MLP 400x3, batch 4096, one epoch, one "
        "thread, each run in a fresh process; peak RSS is that process's VmHWM. The streaming "
        "time includes its encoder-fitting pass over the file; the in-memory time includes "
        "reading the file into one DataFrame and encoding it.",
        "",
    ]
    if "compare_stream" in r:
        s, m = r["compare_stream"], r["compare_memory"]
        n = s["rows"]
        lines += [
            f"Comparison (`nice -n 10 python -m benchmarks.out_of_core --rows 0 --compare-rows "
            f"{n}`, {r['compare_date']}, load average {r['compare_load'][0]} before / "
            f"{r['compare_load'][1]} after, on the shared 2-core machine): runs in the order "
            f"stream, memory, memory, stream; samples/s the mean of each pair.",
            "",
            "| path | rows | samples/s (runs) | wall seconds | samples per CPU-second | CPU seconds | peak RSS (MiB) |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| {label} | {n:,} | {x['samples_per_s']:,} ({', '.join(f'{v:,}' for v in x['runs_samples_per_s'])}) | {', '.join(map(str, x['seconds']))} | {x['samples_per_cpu_s']:,} | {', '.join(map(str, x['cpu_s']))} | {x['peak_rss_mib']:,} |"
                for label, x in (("ParquetSource (streaming)", s), ("in memory (DataFrame)", m))
            ),
            "",
            f"Streaming throughput: {s['samples_per_cpu_s'] / m['samples_per_cpu_s']:.2f}x the "
            f"in-memory path's per CPU-second ({s['samples_per_s'] / m['samples_per_s']:.2f}x by "
            f"wall clock, which the machine's other jobs move by a factor of 2 or more between "
            f"runs) at the same size.",
            "",
        ]  # fmt: skip
    if "large" in r:
        g = r["large"]
        lines += [
            f"Large run (`nice -n 10 python -m benchmarks.out_of_core --rows {g['rows']} "
            f"--compare-rows 0`, {g['date']}, load average {g['load'][0]} before / "
            f"{g['load'][1]} after): {g['rows']:,} rows ({g['parquet_mib']:,} MiB of Parquet, "
            f"written in {g['write_s']} s), streamed one epoch in {g['seconds']:,} s: "
            f"**{g['samples_per_s']:,} samples/s, peak RSS {g['peak_rss_mib']:,} MiB** "
            f"({g.get('samples_per_cpu_s', 0):,} samples per CPU-second, {g.get('cpu_s')} CPU s).",
            "",
        ]
    if "large" in r and r["large"]["rows"] < 20_000_000 and r["large"].get("samples_per_cpu_s"):
        g = r["large"]
        cpu_min = 20_000_000 / g["samples_per_cpu_s"] / 60
        share = g["cpu_s"] / g["seconds"]
        lines += [
            f"**Not run: the DeepFM epoch over 20,000,000 rows.** At {g['samples_per_cpu_s']:,} "
            f"samples per CPU-second it needs about {cpu_min:.0f} CPU-minutes; the large run "
            f"above got {share:.0%} of a core on average (the machine's load average was "
            f"{g['load'][0]}-{g['load'][1]} on 2 cores), so 20M rows would have taken about "
            f"{cpu_min / share / 60:.1f} hours here. The training step's memory does not "
            f"depend on the number of rows; the data path (the encoder's streaming pass and "
            f"the shuffled reader, the parts that touch every row) is measured alone over "
            f"20M rows where that run is present (`--data-rows`).",
            "",
        ]
    if "data" in r:
        d = r["data"]
        lines += [
            f"The data path alone at {d['rows']:,} rows (`nice -n 10 python -m "
            f"benchmarks.out_of_core --rows 0 --compare-rows 0 --data-rows {d['rows']}`, "
            f"{d['date']}, load average {d['load'][0]} before / {d['load'][1]} after; "
            f"{d['parquet_mib']:,} MiB of Parquet): the encoder's streaming pass "
            f"({d['encoder_fit_s']:,} s) and one shuffled epoch read and encoded without "
            f"training, {d['seconds']:,} s in all: **{d['samples_per_s']:,} rows/s, peak RSS "
            f"{d['peak_rss_mib']:,} MiB** ({d.get('samples_per_cpu_s', 0):,} rows per CPU-second).",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=20_000_000)
    p.add_argument("--compare-rows", type=int, default=1_000_000)
    p.add_argument("--data-rows", type=int, default=0, help="the data path alone, no training")
    p.add_argument("--out", default=None)
    p.add_argument("--docs", default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    r = run(out=a.out, rows=a.rows, compare_rows=a.compare_rows, data_rows=a.data_rows)
    print(r["markdown"])
    if a.docs:
        from benchmarks.recall_zoo import update_docs

        print(f"updated {update_docs(r['markdown'], a.docs, SECTION)}")


if __name__ == "__main__":
    main()
