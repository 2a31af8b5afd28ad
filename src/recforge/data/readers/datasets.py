"""Named public datasets, found under a data directory (never shipped with recforge)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from recforge.config import suggest
from recforge.data.interactions import Interactions
from recforge.data.readers._tabular import DataFileNotFoundError
from recforge.data.readers.libfm import read_frappe
from recforge.data.readers.movielens import read_movielens_100k, read_movielens_latest
from recforge.data.readers.sequences import read_sequences
from recforge.exceptions import ConfigError

ENV_VAR = "RECFORGE_DATA_DIR"


def _frappe(folder: Path) -> Interactions:
    frame = read_frappe(folder)
    meta = dict(frame.attrs)
    frame.attrs = {}
    return Interactions(frame, name="frappe", meta=meta)


def _beauty(folder: Path) -> Interactions:
    attrs = folder / "Beauty_item2attributes.json"
    inter = read_sequences(folder / "Beauty.txt", attrs if attrs.exists() else None)
    inter.name = "amazon-beauty"
    return inter


def _ml_latest(folder: Path) -> Interactions:
    inter = read_movielens_latest(folder)
    inter.name = "ml-latest-small"
    return inter


# name -> (folder names to try, reader of that folder)
DATASETS: dict[str, tuple[tuple[str, ...], Callable[[Path], Interactions]]] = {
    "ml-100k": (("ml-100k",), read_movielens_100k),
    "ml-latest-small": (("ml-latest-small",), _ml_latest),
    "amazon-beauty": (("amazon-beauty",), _beauty),
    "frappe": (("frappe", "frappe-partial"), _frappe),
}


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """``data_dir``, else ``$RECFORGE_DATA_DIR``, else ``../shared/data`` from the CWD."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path.cwd().parent / "shared" / "data"


def load_dataset(name: str, data_dir: str | Path | None = None) -> Interactions:
    """Load a named public dataset from the data directory.

    Args:
        name: "ml-100k", "ml-latest-small", "amazon-beauty" or "frappe".
        data_dir: folder holding the dataset folders; default ``$RECFORGE_DATA_DIR``, else
            ``../shared/data`` relative to the current directory.

    Returns:
        Interactions. ml-100k: ratings with user and item features; ml-latest-small:
        ratings with item features (title, year, genres); amazon-beauty: sequences with a
        positional ``timestamp`` and item ``attributes``; frappe: the CTR frame (``label``
        0/1, ``user``, ``item``, 8 context fields, ``split``) from ``frappe.*.libfm``.

    Raises:
        ConfigError: an unknown name (the valid names are listed).
        DataFileNotFoundError: the dataset folder is not there (says where it looked).
    """
    if name not in DATASETS:
        raise ConfigError(
            f"unknown dataset {name!r}{suggest(name, list(DATASETS))}; known: {sorted(DATASETS)}."
        )
    root = resolve_data_dir(data_dir)
    folders, reader = DATASETS[name]
    tried = [root / f for f in folders]
    for folder in tried:
        if folder.is_dir():
            return reader(folder)
    source = (
        "data_dir"
        if data_dir is not None
        else (f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "../shared/data")
    )
    raise DataFileNotFoundError(
        f"dataset {name!r} not found: looked for {[str(t) for t in tried]} (from {source}). "
        f"Pass data_dir= or set {ENV_VAR} to the folder that holds {folders[0]!r}."
    )
