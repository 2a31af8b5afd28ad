"""Generic readers: CSV / TSV / Parquet / JSONL files with a column mapping.

``read_interactions`` turns any such file into an :class:`Interactions` by naming its
columns; ``read_table`` reads a feature table (user or item attributes) as a DataFrame.
Parsing is pyarrow's (``pyarrow.csv``, ``pyarrow.json``, ``pyarrow.parquet``); this module
only checks the values and maps the columns.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from recforge.config import suggest
from recforge.data.interactions import CANONICAL, Interactions
from recforge.data.readers._tabular import (
    Check,
    Dialect,
    RowSource,
    as_ids,
    empty,
    infer,
    integral,
    numeric,
    read_strings,
    require_file,
    resolve_bad_rows,
)
from recforge.exceptions import DataError

logger = logging.getLogger(__name__)

FORMATS = ("csv", "tsv", "parquet", "jsonl")
_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def infer_format(path: Path, format: str | None) -> str:
    """``format`` checked, or inferred from the suffix (``.csv .tsv .tab .parquet .pq .jsonl
    .ndjson .json``)."""
    if format is not None:
        if format not in FORMATS:
            raise DataError(
                f"unknown format {format!r}{suggest(format, list(FORMATS))}; use one of {list(FORMATS)}."
            )
        return format
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"cannot infer the format from the suffix {path.suffix!r}; pass format= one of {list(FORMATS)}.",
            path=str(path),
        )
    return fmt


@dataclass
class _FrameSource(RowSource):
    """Rows of a parquet file or a JSONL file parsed by pyarrow (row k on line ``lines[k]``)."""

    path: Path
    n_rows: int
    unit: str = "line"
    n_invalid: int = 0
    meta: dict = field(default_factory=dict)
    dropped: list[tuple[int, int | None, str]] | None = None  # from the line-by-line JSON pass

    def events(self) -> Iterator[tuple[int, int | None, str]]:
        if self.dropped is not None:
            yield from self.dropped
        elif self.unit == "row":
            for k in range(self.n_rows):
                yield k + 1, k, ""
        else:  # pyarrow read every non-blank line as one row
            with open(self.path, encoding="utf-8") as f:
                k = 0
                for line_no, line in enumerate(f, start=1):
                    if line.strip():
                        yield line_no, k, ""
                        k += 1


def _read_jsonl(path: Path) -> tuple[pd.DataFrame, _FrameSource]:
    """JSON lines via pyarrow; when pyarrow refuses the file (bad JSON, or a column whose
    type changes between rows) a line-by-line pass finds the bad lines and parses the rest."""
    try:
        frame = pajson.read_json(str(path)).to_pandas()
        return frame, _FrameSource(path, len(frame))
    except pa.ArrowInvalid as e:
        logger.debug(
            "%s: pyarrow could not read the JSON lines (%s); reading line by line", path, e
        )
    records, events, n_invalid = [], [], 0
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                events.append((line_no, None, f"not valid JSON ({e.msg} at character {e.colno})"))
                n_invalid += 1
                continue
            if not isinstance(rec, dict):
                events.append(
                    (line_no, None, f"expected a JSON object, found {type(rec).__name__}")
                )
                n_invalid += 1
                continue
            events.append((line_no, len(records), ""))
            records.append(rec)
    frame = pd.DataFrame.from_records(records)
    return frame, _FrameSource(path, len(frame), n_invalid=n_invalid, dropped=events)


def _read_any(
    path: str | Path,
    *,
    format: str | None,
    delimiter: str | None,
    has_header: bool,
    column_names: Sequence[str] | None,
    encoding: str = "utf-8",
    quote_char: str | None = '"',
) -> tuple[pd.DataFrame, RowSource]:
    """Parse a file of any supported format; delimited text comes back as strings."""
    path = require_file(path)
    fmt = infer_format(path, format)
    if fmt == "parquet":
        try:
            frame = pq.read_table(str(path)).to_pandas()
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"not a readable parquet file: {e}", path=str(path)) from None
        if column_names is not None:
            frame.columns = list(column_names)
        return frame, _FrameSource(path, len(frame), unit="row")
    if fmt == "jsonl":
        frame, source = _read_jsonl(path)
        return frame, source
    sep = delimiter if delimiter is not None else ("\t" if fmt == "tsv" else ",")
    dialect = Dialect(
        delimiter=sep, has_header=has_header, quote_char=quote_char, encoding=encoding
    )
    table = read_strings(path, dialect, column_names)
    return table.frame, table


def _missing_columns(path: Path, wanted: dict[str, str], frame: pd.DataFrame) -> None:
    found = list(frame.columns)
    for role, col in wanted.items():
        if col not in found:
            raise DataError(
                f"{role} column {col!r} not found{suggest(str(col), [str(c) for c in found])}; "
                f"the columns are {found}. Pass {role}_col= with one of them.",
                path=str(path),
                column=col,
            )


def read_interactions(
    path: str | Path,
    *,
    format: str | None = None,
    user_col: str = "user",
    item_col: str = "item",
    timestamp_col: str | None = None,
    rating_col: str | None = None,
    label_col: str | None = None,
    weight_col: str | None = None,
    delimiter: str | None = None,
    has_header: bool = True,
    column_names: Sequence[str] | None = None,
    skip_bad_rows: bool = False,
) -> Interactions:
    """Read an interaction log from a CSV, TSV, Parquet or JSON-lines file.

    Args:
        path: the file.
        format: "csv", "tsv", "parquet" or "jsonl"; None infers it from the suffix.
        user_col, item_col: columns holding the raw user / item ids (required).
        timestamp_col, rating_col, label_col, weight_col: optional columns, renamed to
            ``timestamp`` / ``rating`` / ``label`` / ``weight``. A column already named so takes that
            role unless another column is mapped to it (then the clash is an error).
            Every other column is kept as a context column (numbers when every value is
            one, else strings).
        delimiter: field separator for text files (default "," for csv, tab for tsv).
        has_header: text files only; False when the first line is data.
        column_names: names for the columns, in file order (renames the header if any).
        skip_bad_rows: False raises on the first malformed row; True drops malformed rows,
            logs their count at WARNING and stores it in ``meta["skipped_rows"]`` with the
            first line numbers in ``meta["skipped_lines"]``.

    Returns:
        Interactions with one row per good record. Raw ids are kept: int64 when every id is
        a canonical integer ("42", not "042"), strings otherwise. ``rating`` and ``weight``
        are float64; ``timestamp`` int64/float64 (numbers) or datetime64 (ISO strings);
        ``label`` int64 when whole numbers. ``meta`` holds ``source`` (the path) and the
        skip counts.

    Raises:
        DataError: naming the file, 1-based line (``row`` for parquet) and column of the
            first malformed row (wrong field count, empty id, non-numeric rating /
            timestamp / label / weight, bad JSON), a missing column (listing those found),
            or a missing file (DataFileNotFoundError, also a FileNotFoundError).
    """
    path = Path(path)
    frame, source = _read_any(
        path, format=format, delimiter=delimiter, has_header=has_header, column_names=column_names
    )
    roles = {"user": user_col, "item": item_col}
    optional = {
        "timestamp": timestamp_col,
        "rating": rating_col,
        "label": label_col,
        "weight": weight_col,
    }
    roles.update({k: v for k, v in optional.items() if v is not None})
    _missing_columns(path, roles, frame)
    for role in CANONICAL:  # an unmapped column already named "rating" etc. is that role
        if role in frame.columns and role not in roles and role not in roles.values():
            roles[role] = role
    for col in frame.columns:
        if col in CANONICAL and col not in roles.values():
            raise DataError(
                f"column {col!r} would clash with the {col!r} taken from column {roles[col]!r}; "
                f"rename or drop one of them.",
                path=str(path),
                column=col,
            )

    checks: list[Check] = []
    converted: dict[str, pd.Series] = {}
    for role, col in roles.items():
        values = frame[col]
        if role in ("user", "item"):
            checks.append(Check(col, empty(values), values, f"is not a valid {role} id"))
        elif role == "timestamp":
            ts, bad = _timestamps(values)
            converted[role] = ts
            checks.append(Check(col, bad, values, "is not a number or an ISO date-time"))
        else:
            num, bad = numeric(values)
            converted[role] = num
            checks.append(Check(col, bad, values, "is not a number"))
    keep = resolve_bad_rows(source, len(frame), checks, skip_bad_rows=skip_bad_rows)

    out = {}
    for role, col in roles.items():
        if role in ("user", "item"):
            out[role] = as_ids(frame[col][keep])
        elif role in ("timestamp", "label"):
            out[role] = integral(converted[role][keep])
        else:
            out[role] = converted[role][keep].astype(np.float64)
    for col in frame.columns:
        if col not in roles.values():
            out[str(col)] = infer(frame[col][keep])
    df = pd.DataFrame(out).reset_index(drop=True)
    meta = {"source": str(path), **source.meta}
    return Interactions(df, name=path.stem, meta=meta)


def _timestamps(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Numbers (seconds), or ISO date-times when most values are not numbers."""
    if values.dtype.kind == "M":
        return values, values.isna().to_numpy()
    num, bad = numeric(values)
    if len(values) and bad.mean() > 0.5:
        dt = pd.to_datetime(values.astype(str).str.strip(), errors="coerce", format="ISO8601")
        return dt, dt.isna().to_numpy()
    return num, bad


def read_table(
    path: str | Path,
    *,
    format: str | None = None,
    index_col: str | None = None,
    delimiter: str | None = None,
    has_header: bool = True,
    column_names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    quote_char: str | None = '"',
    skip_bad_rows: bool = False,
) -> pd.DataFrame:
    """Read a feature table (user or item attributes) from CSV/TSV/Parquet/JSONL.

    Columns whose every non-blank value is a number become numeric (int64 when whole and
    none blank, else float64 with NaN); others stay strings with blanks as None. Values
    with a leading zero (zip codes) stay strings.

    Args:
        index_col: a column of raw ids to use as the index (int64 ids when canonical
            integers); an empty id is a malformed row.
        encoding, quote_char: text files only; ``quote_char=None`` treats quotes as text.
        Others as in :func:`read_interactions`.

    Returns:
        DataFrame (n_rows, n_columns); ``df.attrs`` holds ``source``, ``skipped_rows`` and
        ``skipped_lines``.
    """
    path = Path(path)
    frame, source = _read_any(
        path,
        format=format,
        delimiter=delimiter,
        has_header=has_header,
        column_names=column_names,
        encoding=encoding,
        quote_char=quote_char,
    )
    checks = []
    if index_col is not None:
        _missing_columns(path, {"index": index_col}, frame)
        checks.append(
            Check(index_col, empty(frame[index_col]), frame[index_col], "is not a valid id")
        )
    keep = resolve_bad_rows(source, len(frame), checks, skip_bad_rows=skip_bad_rows)
    frame = frame[keep] if not keep.all() else frame
    out = pd.DataFrame({str(c): infer(frame[c]) for c in frame.columns}).reset_index(drop=True)
    if index_col is not None:
        out.index = pd.Index(as_ids(frame[index_col]).to_numpy(), name=index_col)
        out = out.drop(columns=[index_col])
    out.attrs.update(source=str(path), **source.meta)
    return out
