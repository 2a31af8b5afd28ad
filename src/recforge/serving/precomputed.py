"""Precomputed recommendations: what ``recforge batch-recommend`` wrote, answered while fresh.

    recforge batch-recommend --model runs/bundle --users all --k 100 --out recs
    recforge serve --bundle runs/bundle --precomputed recs --precomputed-max-age 86400

The server then answers a plain ``recommend(user, k)`` from the stored list when the list is
fresh (the batch job finished less than ``max_age_s`` seconds ago), the user has one and
``k`` is at most the job's k. Everything else takes the live funnel: a request with history
(which includes the feedback store's events for the user), context, filters, exclude or
explain; runtime parameters in force (a reload changes what the lists would be); a stale
store; a user the job did not cover. A batch job over another bundle version than the one
served is refused at start: its lists came from another model.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recforge.exceptions import ConfigError

log = logging.getLogger(__name__)


class Precomputed:
    """User -> (items, scores) from one finished batch job (``serving/batch.py`` layout)."""

    def __init__(
        self,
        frame: pd.DataFrame,
        *,
        k: int,
        written_at: float,
        max_age_s: float,
        job: dict[str, Any],
    ) -> None:
        """``frame``: the job's rows (user, rank, item, score). Held as two arrays in user,
        rank order plus each user's row span: no Python object per stored item."""
        if max_age_s < 0:
            raise ConfigError(f"precomputed max age: {max_age_s} is negative; give seconds >= 0.")
        frame = frame.sort_values(["user", "rank"], kind="stable")
        self.items = frame["item"].to_numpy()
        self.scores = frame["score"].to_numpy(dtype=np.float64)
        users = frame["user"].to_numpy()
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else []
        ends = np.r_[starts[1:], len(users)] if len(users) else []
        self.spans = {u.item() if isinstance(u, np.generic) else u: (int(a), int(b))
                      for u, a, b in zip(users[starts], starts, ends)}  # fmt: skip
        self.k, self.written_at, self.max_age_s, self.job = k, written_at, max_age_s, job

    @classmethod
    def load(cls, path: str | Path, max_age_s: float = 86_400.0) -> Precomputed:
        from recforge.serving.batch import JOB, SUCCESS

        path = Path(path)
        if not (path / JOB).is_file():
            raise ConfigError(f"{path}: no {JOB}; not the output of `recforge batch-recommend`.")
        if not (path / SUCCESS).is_file():
            raise ConfigError(
                f"{path}: the batch job is not finished (no {SUCCESS}); run the same "
                f"`recforge batch-recommend` command again to complete it."
            )
        job = json.loads((path / JOB).read_text())
        parts = sorted(path.glob("part-*.parquet"))
        frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
        written_at = (path / SUCCESS).stat().st_mtime
        store = cls(frame, k=int(job["k"]), written_at=written_at, max_age_s=max_age_s, job=job)
        log.info("precomputed: %d users x top %d from %s", len(store.spans), store.k, path)
        return store

    def check_source(self, version: str) -> None:
        """Refuse lists computed from another bundle version than ``version``."""
        if self.job.get("kind") != "bundle":
            return  # a model or pipeline directory: the operator's choice of lists
        manifest = Path(self.job["source"]) / "bundle.json"
        theirs = json.loads(manifest.read_text()).get("version") if manifest.is_file() else None
        if theirs != version:
            raise ConfigError(
                f"precomputed: the batch job ran over bundle {theirs!r} "
                f"({self.job['source']}), the server serves {version!r}; rerun "
                f"`recforge batch-recommend` over the bundle you serve."
            )

    def fresh(self, now: float | None = None) -> bool:
        return ((time.time() if now is None else now) - self.written_at) <= self.max_age_s

    def get(self, user: Any, k: int) -> tuple[list[Any], list[float]] | None:
        """The stored top ``k`` of ``user``, or None (stale, k too large, user not covered)."""
        if k > self.k or not self.fresh():
            return None
        span = self.spans.get(user)
        if span is None:
            return None
        a, b = span[0], min(span[1], span[0] + k)
        return self.items[a:b].tolist(), self.scores[a:b].tolist()

    def describe(self) -> dict[str, Any]:
        return {
            "users": len(self.spans),
            "k": self.k,
            "age_s": round(time.time() - self.written_at, 1),
            "max_age_s": self.max_age_s,
            "fresh": self.fresh(),
            "source": self.job.get("source"),
        }
