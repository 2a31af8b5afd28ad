"""Benchmarks of this repository (not part of the installed library).

Each benchmark is a module here with ``run(data_dir, out=None) -> dict`` (its result, with a
``"markdown"`` summary where it has one), registered in ``BENCHES`` as ``"module:function"``
and imported only when run, so peers needed by one benchmark do not slow down the others.
Each also runs alone and updates its section of ``docs/BENCHMARKS.md``:
``python -m benchmarks.NAME --docs docs/BENCHMARKS.md``.

From the repository root:

    python -m benchmarks            # list them
    python -m benchmarks NAME|all   # run one or all (``make bench`` runs all)

``recforge bench`` does the same when run inside a checkout.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]  # the repository root (children run from here)
# ``python -m benchmarks.NAME`` measures this checkout's package, also where another
# checkout's editable install is on the path (a git worktree beside the main checkout):
# the benchmarks that fit in-process would otherwise time and score that one's code
if (REPO / "src" / "recforge").is_dir() and str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from recforge.config import suggest  # noqa: E402
from recforge.exceptions import ConfigError  # noqa: E402

BENCHES: dict[str, str] = {
    "cf_ml100k": "benchmarks.cf_ml100k:run",
    "recall_zoo": "benchmarks.recall_zoo:run",
    "ann": "benchmarks.ann:run",
    "ctr_quality": "benchmarks.ctr_quality:run",
    "ctr_speed": "benchmarks.ctr_speed:run",
    "hard_negatives": "benchmarks.hard_negatives:run",
    "seq_beauty": "benchmarks.seq_beauty:run",
    "ctr_history": "benchmarks.ctr_history:run",
    "seq_recbole": "benchmarks.seq_recbole:run",
    "eval_memory": "benchmarks.eval_memory:run",
    "serving_latency": "benchmarks.serving_latency:run",
    "batch_inference": "benchmarks.batch_inference:run",
    "out_of_core": "benchmarks.out_of_core:run",
    "ddp_throughput": "benchmarks.ddp_throughput:run",
    "serving_feedback": "benchmarks.serving_feedback:run",
    "serving_swap": "benchmarks.serving_swap:run",
    "multitask": "benchmarks.multitask:run",
    "onnx_latency": "benchmarks.onnx_latency:run",
    "ltr_funnel": "benchmarks.ltr_funnel:run",
    "content_cold": "benchmarks.content_cold:run",
    "recall_scale": "benchmarks.recall_scale:run",
    "recall_defaults": "benchmarks.recall_defaults:run",
    "ease_memory": "benchmarks.ease_memory:run",
    "cf_steps": "benchmarks.cf_steps:run",
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


def _check_name(name: str) -> None:
    if name not in BENCHES:
        names = sorted(BENCHES)
        raise ConfigError(
            f"unknown benchmark {name!r}{suggest(name, names)}. Available: {', '.join(names)}, all."
        )


def get_bench(name: str) -> Callable[..., dict[str, Any]]:
    """The run function of benchmark ``name``."""
    _check_name(name)
    module, _, func = BENCHES[name].partition(":")
    return getattr(importlib.import_module(module), func)


def describe() -> dict[str, str]:
    """``{name: first paragraph of the module docstring, cut to 100 characters}``, read without importing the modules
    (some import torch and peers, which takes seconds)."""
    out = {}
    for name, target in BENCHES.items():
        module = target.partition(":")[0]
        path = REPO / (module.replace(".", "/") + ".py")
        doc = ast.get_docstring(ast.parse(path.read_text())) if path.exists() else None
        para = " ".join((doc or "").strip().split("\n\n")[0].split())
        out[name] = para if len(para) <= 100 else para[:97].rsplit(" ", 1)[0] + "..."
    return out


def listing() -> str:
    """The benchmarks, one a line, and how to run them."""
    desc = describe()
    width = max(map(len, desc))
    lines = ["Benchmarks (results and commands: docs/BENCHMARKS.md):", ""]
    lines += [f"  {n:<{width}}  {d}" for n, d in desc.items()]
    lines += ["", "Run one by name, or 'all' (about an hour on 2 cores)."]
    return "\n".join(lines)


def run_bench(
    name: str, data_dir: str | Path | None = None, out: str | Path | None = None
) -> dict[str, Any]:
    """Run benchmark ``name`` (or every one with ``"all"``); returns its result dict, or
    ``{bench_name: result}`` for ``"all"``. ``out``: folder where each bench writes files."""
    if name == "all":
        return {n: run_bench(n, data_dir, out) for n in BENCHES}
    fn = get_bench(name)
    return fn(resolve_data_dir(data_dir), out=out)


def report(result: dict[str, Any], docs: str | Path | None, section: str) -> None:
    """What every benchmark's ``main`` ends with: print the result's markdown and, with
    ``docs``, replace its ``### `` subsection inside ``section`` of that file."""
    from benchmarks.recall_zoo import update_docs

    print(result["markdown"])
    if docs:
        print(f"updated {update_docs(result['markdown'], docs, section)}")


def format_result(result: dict[str, Any]) -> str:
    """A result for a terminal: its ``markdown`` summary where it has one (the tables that
    go into docs/BENCHMARKS.md), else its fields as indented ``key: value`` lines."""
    if isinstance(result.get("markdown"), str):
        return result["markdown"].strip()
    lines: list[str] = []

    def walk(obj: Any, indent: int) -> None:
        pad = "  " * indent
        for key, value in obj.items():
            if isinstance(value, dict):
                lines.append(f"{pad}{key}:")
                walk(value, indent + 1)
            elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                lines.append(f"{pad}{key}:")
                for v in value:
                    lines.append(f"{pad}  - " + ", ".join(f"{k}={_short(x)}" for k, x in v.items()))
            else:
                lines.append(f"{pad}{key}: {_short(value)}")

    walk(result, 0)
    return "\n".join(lines)


def _short(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    text = x if isinstance(x, str) else json.dumps(x, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def peak_rss_kib() -> int:
    """This process's peak resident set (KiB): ``VmHWM`` of its own address space.

    Not ``getrusage().ru_maxrss``: on Linux that value survives ``execve`` and starts at the
    peak of the address space the child was forked/vforked from, i.e. it reports the
    *parent's* peak (here the benchmark process holding every earlier model and frame),
    which made the figure look like it grew with the benchmark's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


__all__ = [
    "BENCHES",
    "REPO",
    "describe",
    "format_result",
    "get_bench",
    "listing",
    "peak_rss_kib",
    "resolve_data_dir",
    "run_bench",
]
