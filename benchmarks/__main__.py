"""``python -m benchmarks [NAME|all] [--data-dir DIR] [--out DIR]``: list or run benchmarks."""

from __future__ import annotations

import argparse
import logging
import sys

from benchmarks import BENCHES, format_result, listing, run_bench
from recforge.exceptions import ConfigError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("name", nargs="?", help=f"one of {', '.join(BENCHES)}, or 'all'")
    p.add_argument("--data-dir", default=None, help="real datasets (default $RECFORGE_DATA_DIR)")
    p.add_argument("--out", default=None, help="folder where each benchmark writes its files")
    a = p.parse_args(argv)
    if a.name is None:
        print(listing())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        names = list(BENCHES) if a.name == "all" else [a.name]
        for n in names:
            print(f"== bench {n}", flush=True)
            print(format_result(run_bench(n, data_dir=a.data_dir, out=a.out)), flush=True)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
