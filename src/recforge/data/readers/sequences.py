"""Sequence files, one user per line: ``user item1 item2 ...`` oldest first (S3-Rec's
Amazon Beauty ``Beauty.txt``), with an optional item -> attributes JSON."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from recforge.data.interactions import Interactions
from recforge.data.readers._tabular import MAX_SKIPPED_LINES, as_ids, require_file
from recforge.exceptions import DataError

logger = logging.getLogger(__name__)


def read_sequences(
    path: str | Path,
    item_attributes: str | Path | None = None,
    *,
    skip_bad_rows: bool = False,
) -> Interactions:
    """Read whitespace-separated sequences, one user per line, items in time order.

    Args:
        path: the sequence file; blank lines are ignored.
        item_attributes: optional JSON object mapping an item id to a list of attribute ids
            (``Beauty_item2attributes.json``).
        skip_bad_rows: drop lines with a user but no items instead of raising.

    Returns:
        Interactions with ``user``, ``item`` (int64 when every id is a canonical integer,
        else str) and ``timestamp`` = the item's 0-based position in its line, so sorting by
        time keeps the file's order. With ``item_attributes``, ``item_features`` is indexed
        by ``item`` with an ``attributes`` list column (attribute ids as given).

    Raises:
        DataError: a line with no items (file and line named), attributes that are not an
            object of lists, or a missing file.
    """
    path = require_file(path, "sequence file")
    users: list[str] = []
    items: list[str] = []
    positions: list[np.ndarray] = []
    skipped_lines: list[int] = []
    n_skipped = 0
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            tokens = line.split()
            if not tokens:
                continue
            if len(tokens) < 2:
                if not skip_bad_rows:
                    raise DataError(
                        f"user {tokens[0]!r} has no items; expected 'user item1 item2 ...'. "
                        f"Remove the line or pass skip_bad_rows=True.",
                        path=str(path),
                        line=line_no,
                        column="item",
                    )
                n_skipped += 1
                if len(skipped_lines) < MAX_SKIPPED_LINES:
                    skipped_lines.append(line_no)
                continue
            users.extend([tokens[0]] * (len(tokens) - 1))
            items.extend(tokens[1:])
            positions.append(np.arange(len(tokens) - 1, dtype=np.int64))
    if n_skipped:
        logger.warning(
            "%s: skipped %d line(s) without items, the first at line(s) %s",
            path,
            n_skipped,
            skipped_lines,
        )
    frame = pd.DataFrame(
        {
            "user": as_ids(pd.Series(users, dtype=object)),
            "item": as_ids(pd.Series(items, dtype=object)),
            "timestamp": np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64),
        }
    )
    item_features = None
    if item_attributes is not None:
        item_features = _read_item_attributes(
            Path(item_attributes), int_ids=frame["item"].dtype.kind == "i"
        )
    meta = {"source": str(path), "skipped_rows": n_skipped, "skipped_lines": skipped_lines}
    return Interactions(frame, None, item_features, name=path.stem, meta=meta)


def _read_item_attributes(path: Path, *, int_ids: bool) -> pd.DataFrame:
    """``{"item": [attr, ...]}`` -> DataFrame indexed by item with an ``attributes`` column."""
    require_file(path, "item attributes file")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON: {e.msg}.", path=str(path), line=e.lineno) from None
    if not isinstance(data, dict):
        raise DataError(
            f"expected a JSON object mapping item ids to attribute lists, found {type(data).__name__}.",
            path=str(path),
        )
    for key, value in data.items():
        if not isinstance(value, list):
            raise DataError(
                f"attributes of item {key!r} should be a list, found {type(value).__name__}.",
                path=str(path),
                column=key,
            )
    keys = pd.Series(list(data.keys()), dtype=object)
    index = as_ids(keys) if int_ids else keys
    return pd.DataFrame(
        {"attributes": list(data.values())}, index=pd.Index(index.to_numpy(), name="item")
    )
