"""Criteo display-advertising logs: label, 13 integer features, 26 hashed categoricals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recforge.data.readers._tabular import (
    Check,
    Dialect,
    first_record,
    numeric,
    read_strings,
    require_file,
    resolve_bad_rows,
)
from recforge.exceptions import DataError

CRITEO_INT = tuple(f"I{i}" for i in range(1, 14))
CRITEO_CAT = tuple(f"C{i}" for i in range(1, 27))
CRITEO_COLUMNS = ("label", *CRITEO_INT, *CRITEO_CAT)


def read_criteo(
    path: str | Path, nrows: int | None = None, *, skip_bad_rows: bool = False
) -> pd.DataFrame:
    """Read a Criteo file: the original tab-separated layout without a header, or a
    comma-separated file with a ``label,I1,...,C26`` header (the common sample layout).
    The delimiter and header are detected from the first line.

    Args:
        nrows: read only the first ``nrows`` data rows (cheap on the multi-GB originals).
        skip_bad_rows: drop malformed rows instead of raising (``df.attrs``).

    Returns:
        DataFrame (n_rows, 40) with columns ``label`` (int64 0/1), ``I1..I13`` (float64,
        NaN when empty) and ``C1..C26`` (str; an empty value is NaN, which
        ``FeatureEncoder`` maps to its missing slot).

    Raises:
        DataError: naming the file, line and column of a wrong field count, a label that is
            not 0/1 or a non-numeric integer feature.
    """
    path = require_file(path, "Criteo file")
    probe = Dialect(delimiter="\t", has_header=False, quote_char=None)
    first, _ = first_record(path, probe)
    delimiter = "\t" if len(first) > 1 else ","
    has_header = (first if delimiter == "\t" else first[0].split(","))[0].strip() == "label"
    n_header = 1 if has_header else 0
    dialect = Dialect(
        delimiter=delimiter,
        has_header=has_header,
        quote_char=None,
        max_lines=None if nrows is None else nrows + n_header,
    )
    table = read_strings(path, dialect)
    frame = table.frame
    if table.n_fields != len(CRITEO_COLUMNS):
        raise DataError(
            f"expected {len(CRITEO_COLUMNS)} fields (label, I1-I13, C1-C26), found {table.n_fields}.",
            path=str(path),
            line=1,
        )
    frame.columns = list(CRITEO_COLUMNS)
    checks = [
        Check(
            "label",
            ~frame["label"].str.strip().isin(["0", "1"]).to_numpy(),
            frame["label"],
            "is not 0 or 1",
        )
    ]
    ints = {}
    for col in CRITEO_INT:
        blank = frame[col].str.strip().eq("").to_numpy()
        values, bad = numeric(frame[col])
        checks.append(Check(col, bad & ~blank, frame[col]))
        ints[col] = values
    keep = resolve_bad_rows(table, len(frame), checks, skip_bad_rows=skip_bad_rows)
    out: dict[str, np.ndarray | pd.Series] = {
        "label": frame["label"][keep].str.strip().astype(np.int64).to_numpy()
    }
    for col in CRITEO_INT:
        out[col] = ints[col][keep].to_numpy(dtype=np.float64)
    for col in CRITEO_CAT:
        s = frame[col][keep].str.strip()
        out[col] = s.astype(object).mask(s.eq(""), np.nan).to_numpy()
    df = pd.DataFrame(out)
    df.attrs.update(source=str(path), **table.meta)
    return df
