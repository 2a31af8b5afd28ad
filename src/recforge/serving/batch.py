"""Batch inference: top-k for every user, in chunks, on several processes, resumable.

    recforge batch-recommend --model runs/als --users all --k 100 --out recs.parquet

``out`` is a Parquet dataset directory: ``part-00000.parquet``, ... (columns ``user``,
``rank``, ``item``, ``score``; raw ids), ``_job.json`` (what was asked) and ``_SUCCESS``
when every chunk is written. A chunk is written to a temporary name and renamed, so a
killed run leaves only whole chunks; run the same command again and the chunks already
there are skipped. ``pyarrow.dataset`` / pandas / DuckDB read the directory as one table.

The source is a retrieval model directory (its batched ``recommend``), a recall pipeline
directory (its merged candidates) or a serving bundle (the whole funnel, one user at a
time). Worker processes each load the source themselves from disk; only user ids and
chunk numbers travel between processes.

``recforge serve --bundle DIR --precomputed OUT`` answers plain requests from a finished
job's lists while they are fresh (``serving/precomputed.py``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recforge.exceptions import ConfigError

log = logging.getLogger(__name__)

JOB = "_job.json"
SUCCESS = "_SUCCESS"


def _kind(path: Path) -> str:
    if (path / "bundle.json").is_file():
        return "bundle"
    if (path / "recall.json").is_file():
        return "pipeline"
    if (path / "manifest.json").is_file():
        return "model"
    raise ConfigError(
        f"{path}: not a model, recall pipeline or bundle directory (no manifest.json, "
        f"recall.json or bundle.json)."
    )


class _Source:
    """The loaded source of a worker: ``recommend(users, k) -> frame``."""

    def __init__(self, path: Path, exclude_seen: bool) -> None:
        self.kind = _kind(path)
        self.exclude_seen = exclude_seen
        if self.kind == "bundle":
            from recforge.serving.core import Recommender

            self.obj = Recommender.load(path)
        elif self.kind == "pipeline":
            from recforge.pipeline import RecallPipeline

            self.obj = RecallPipeline.load(path)
        else:
            from recforge import models

            self.obj = models.load(path)
            if self.obj.kind != "retrieval":
                raise ConfigError(
                    f"{path} holds a {self.obj.kind} ({self.obj.name}); batch-recommend needs a "
                    f"retrieval model, a recall pipeline or a bundle."
                )

    def users(self) -> list[Any]:
        if self.kind == "bundle":
            pipe = self.obj.pipeline
        elif self.kind == "pipeline":
            pipe = self.obj
        else:
            return self.obj.user_vocab_.raw_ids.tolist()
        ids = np.concatenate([c.model.user_vocab_.raw_ids for c in pipe.channels])
        return pd.unique(ids).tolist()

    def recommend(self, users: list[Any], k: int) -> pd.DataFrame:
        if self.kind == "model":
            known = self.obj.user_vocab_.index(users, unknown="mask")
            keep = [u for u, i in zip(users, known) if i >= 0]
            idx, scores = self.obj.recommend_idx(
                known[known >= 0], k=k, exclude_seen=self.exclude_seen
            )
            ok = np.isfinite(scores)
            rows, ranks = np.nonzero(ok)
            return pd.DataFrame(
                {
                    "user": np.asarray(keep, dtype=object)[rows],
                    "rank": ranks.astype(np.int32),
                    "item": self.obj.item_vocab_.ids(idx[rows, ranks]),
                    "score": scores[rows, ranks].astype(np.float32),
                }
            )
        if self.kind == "pipeline":
            f = self.obj.recommend(users, k=k).frame
            return pd.DataFrame(
                {
                    "user": f["user"],
                    "rank": f["rank"].astype(np.int32),
                    "item": f["item"],
                    "score": f["score"].astype(np.float32),
                }
            )
        parts = []
        for u in users:
            r = self.obj.recommend(u, k=k)
            parts.append(
                pd.DataFrame(
                    {
                        "user": [r.user] * len(r.items),
                        "rank": np.arange(len(r.items), dtype=np.int32),
                        "item": r.items,
                        "score": np.asarray(r.scores, dtype=np.float32),
                    }
                )
            )
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


_WORKER: dict[str, Any] = {}


def _init_worker(path: str, exclude_seen: bool, threads: int) -> None:
    from recforge.threads import set_default_threads

    set_default_threads(threads)
    _WORKER["source"] = _Source(Path(path), exclude_seen)


def _run_chunk(chunk: int, users: list[Any], k: int, out: str) -> tuple[int, int, float]:
    t0 = time.perf_counter()
    frame = _WORKER["source"].recommend(users, k)
    _write_part(Path(out), chunk, frame)
    return chunk, len(frame), time.perf_counter() - t0


def _part(out: Path, chunk: int) -> Path:
    return out / f"part-{chunk:05d}.parquet"


def _write_part(out: Path, chunk: int, frame: pd.DataFrame) -> None:
    final = _part(out, chunk)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    frame = frame.copy()
    for col in ("user", "item"):  # mixed int/str ids become strings, not a failed write
        if frame[col].dtype == object and frame[col].map(type).nunique() > 1:
            frame[col] = frame[col].astype(str)
    frame.to_parquet(tmp, index=False)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def batch_recommend(
    source: str | Path,
    out: str | Path,
    *,
    users: str | list[Any] = "all",
    k: int = 100,
    chunk_size: int = 10_000,
    processes: int = 1,
    exclude_seen: bool = True,
    echo: Any = None,
) -> dict[str, Any]:
    """Write top-``k`` recommendations of ``users`` ("all": every user the source knows)
    to the Parquet dataset directory ``out`` (module docstring). Chunks already written by
    an earlier run of the same job are skipped. Returns {"out", "chunks", "written",
    "skipped", "rows", "users", "seconds", "users_per_s"}."""
    say = echo or (lambda msg: log.info("%s", msg))
    source, out = Path(source), Path(out)
    if k < 1 or chunk_size < 1 or processes < 1:
        raise ConfigError("batch-recommend: k, chunk_size and processes must be >= 1.")
    t0 = time.perf_counter()
    probe = _Source(source, exclude_seen)
    ids = probe.users() if isinstance(users, str) and users == "all" else list(users)
    if not ids:
        raise ConfigError("batch-recommend: no users to recommend for.")
    job = {
        "source": str(source.resolve()),
        "kind": probe.kind,
        "k": int(k),
        "chunk_size": int(chunk_size),
        "n_users": len(ids),
        "exclude_seen": bool(exclude_seen),
    }
    out.mkdir(parents=True, exist_ok=True)
    jfile = out / JOB
    if jfile.exists():
        before = json.loads(jfile.read_text())
        if before != job:
            raise ConfigError(
                f"{out}: holds the output of another batch job ({before}); choose another "
                f"--out or remove it."
            )
    else:
        jfile.write_text(json.dumps(job, indent=2))
    chunks = [ids[s : s + chunk_size] for s in range(0, len(ids), chunk_size)]
    todo = [c for c in range(len(chunks)) if not _part(out, c).exists()]
    skipped = len(chunks) - len(todo)
    if skipped:
        say(f"batch-recommend: {skipped} of {len(chunks)} chunks already written, skipped")
    rows = 0
    if processes == 1 or len(todo) <= 1:
        _WORKER["source"] = probe
        for c in todo:
            _, n, s = _run_chunk(c, chunks[c], k, str(out))
            rows += n
            say(f"chunk {c + 1}/{len(chunks)}: {len(chunks[c]):,} users in {s:.1f}s")
    else:
        threads = max(1, (os.cpu_count() or 1) // processes)
        with ProcessPoolExecutor(
            max_workers=processes,
            mp_context=get_context("spawn"),
            initializer=_init_worker,
            initargs=(str(source), exclude_seen, threads),
        ) as pool:
            futures = [pool.submit(_run_chunk, c, chunks[c], k, str(out)) for c in todo]
            for f in futures:
                c, n, s = f.result()
                rows += n
                say(f"chunk {c + 1}/{len(chunks)}: {len(chunks[c]):,} users in {s:.1f}s")
    (out / SUCCESS).write_text("")
    seconds = time.perf_counter() - t0
    done_users = sum(len(chunks[c]) for c in todo)
    return {
        "out": str(out),
        "chunks": len(chunks),
        "written": len(todo),
        "skipped": skipped,
        "rows": rows,
        "users": len(ids),
        "seconds": round(seconds, 2),
        "users_per_s": round(done_users / seconds, 1) if seconds > 0 else None,
    }
