"""Benchmark jobs behind ``recforge bench NAME`` / ``recforge bench all``.

Each benchmark is a function ``run(data_dir, out=None) -> dict`` registered below as
``"module:function"`` (imported only when run, so peers needed by one bench do not slow
down the others). Add yours to ``BENCHES``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recforge.config import suggest
from recforge.exceptions import ConfigError

BENCHES: dict[str, str] = {
    "cf_ml100k": "recforge.bench.cf_ml100k:run",
    "recall_zoo": "recforge.bench.recall_zoo:run",
    "ann": "recforge.bench.ann:run",
    "ctr_quality": "recforge.bench.ctr_quality:run",
    "ctr_speed": "recforge.bench.ctr_speed:run",
}


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """``data_dir``, else ``RECFORGE_DATA_DIR``, else ``../shared/data`` from the working
    directory; raises ConfigError naming what was tried when none exists."""
    tried = []
    for cand in (
        data_dir,
        os.environ.get("RECFORGE_DATA_DIR"),
        Path.cwd().parent / "shared" / "data",
    ):
        if cand is None or cand == "":
            continue
        path = Path(cand)
        if path.is_dir():
            return path
        tried.append(str(path))
    raise ConfigError(
        f"benchmark data directory not found (tried: {', '.join(tried) or 'nothing'}); "
        f"pass --data-dir or set RECFORGE_DATA_DIR to the folder holding ml-100k/ etc."
    )


def get_bench(name: str) -> Callable[..., dict[str, Any]]:
    """The run function of benchmark ``name``."""
    if name not in BENCHES:
        names = sorted(BENCHES)
        raise ConfigError(
            f"unknown benchmark {name!r}{suggest(name, names)}. Available: {', '.join(names)}, all."
        )
    module, _, func = BENCHES[name].partition(":")
    return getattr(importlib.import_module(module), func)


def run_bench(
    name: str, data_dir: str | Path | None = None, out: str | Path | None = None
) -> dict[str, Any]:
    """Run benchmark ``name`` (or every one with ``"all"``); returns its result dict, or
    ``{bench_name: result}`` for ``"all"``. ``out``: folder where each bench writes files."""
    if name == "all":
        return {n: run_bench(n, data_dir, out) for n in BENCHES}
    fn = get_bench(name)
    return fn(resolve_data_dir(data_dir), out=out)


__all__ = ["BENCHES", "get_bench", "resolve_data_dir", "run_bench"]
