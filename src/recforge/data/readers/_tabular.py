"""Delimited text read by pyarrow as strings, checked row by row, with exact line numbers.

Every delimited reader in this package goes through :func:`read_strings`: pyarrow parses the
file with all columns typed as strings (so no value is silently coerced) and drops records
with a wrong number of fields through an invalid-row handler that only counts them. Callers
then validate columns vectorised (:func:`numeric`, :func:`empty`, ...) and hand the bad-row
masks to :func:`resolve_bad_rows`, which either raises a :class:`DataError` at the first bad
record in file order or drops the bad records and reports them.

Line numbers are found only when something is wrong, by a line-aware pass with Python's
``csv`` module that stops as soon as it has what it needs; a clean file is never scanned.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recforge.exceptions import DataError

logger = logging.getLogger(__name__)

MAX_SKIPPED_LINES = 10  # line numbers of the first skipped rows kept in meta["skipped_lines"]


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A data file or dataset folder does not exist (also a ``FileNotFoundError``)."""


def require_file(path: str | Path, what: str = "data file") -> Path:
    """``path`` as a Path; raises DataFileNotFoundError naming it when it is not a file."""
    path = Path(path)
    if not path.is_file():
        hint = " (it is a directory)" if path.is_dir() else ""
        raise DataFileNotFoundError(f"{what} not found{hint}.", path=str(path))
    return path


@dataclass(frozen=True)
class Dialect:
    """How a delimited file is laid out; shared by pyarrow and the line-aware pass."""

    delimiter: str = ","
    has_header: bool = True
    quote_char: str | None = '"'  # None: quotes are ordinary characters
    encoding: str = "utf-8"
    max_lines: int | None = None  # read only this many physical lines (header included)

    def csv_reader(self, lines: Iterator[str]) -> Iterator[list[str]]:
        if self.quote_char is None:
            return csv.reader(lines, delimiter=self.delimiter, quoting=csv.QUOTE_NONE)
        return csv.reader(lines, delimiter=self.delimiter, quotechar=self.quote_char)

    def open_text(self, path: Path) -> io.TextIOWrapper:
        enc = (
            "utf-8-sig"
            if self.encoding.lower().replace("_", "-") in ("utf-8", "utf8")
            else self.encoding
        )
        return open(path, encoding=enc, newline="")  # noqa: SIM115 - the caller closes it


class RowSource:
    """Rows read from one file, and a way to find the line of each row when one is bad.

    ``events()`` yields ``(where, kept_row_index, problem)`` in file order: ``where`` is the
    1-based line (or row, see ``unit``); ``kept_row_index`` is the row's position in the
    parsed frame, or None for a record the parser already dropped, then described by
    ``problem``.
    """

    path: Path
    n_invalid: int = 0  # records dropped by the parser (wrong field count, bad JSON, ...)
    unit: str = "line"  # "line" for text files, "row" for parquet
    meta: dict

    def events(self) -> Iterator[tuple[int, int | None, str]]:
        raise NotImplementedError


@dataclass
class StringTable(RowSource):
    """A delimited file as strings: one row per well-formed record, every column ``str``."""

    frame: pd.DataFrame
    path: Path
    dialect: Dialect
    n_fields: int  # fields per record (from the header or the first record)
    n_invalid: int = 0  # records dropped by pyarrow for a wrong number of fields
    unit: str = "line"
    meta: dict = field(default_factory=dict)

    def events(self) -> Iterator[tuple[int, int | None, str]]:
        """Mirror what pyarrow kept, with 1-based physical line numbers."""
        d = self.dialect
        with d.open_text(self.path) as f:
            lines = f if d.max_lines is None else islice(f, d.max_lines)
            reader = d.csv_reader(lines)
            prev_line, kept, header_seen = 0, 0, not d.has_header
            for rec in reader:
                line, prev_line = prev_line + 1, reader.line_num
                if not rec:
                    continue
                if not header_seen:
                    header_seen = True
                    continue
                if len(rec) == self.n_fields:
                    yield line, kept, ""
                    kept += 1
                else:
                    yield (
                        line,
                        None,
                        f"expected {self.n_fields} fields separated by {d.delimiter!r}, "
                        f"found {len(rec)}",
                    )


def first_record(path: Path, dialect: Dialect) -> tuple[list[str], int]:
    """The first non-empty record of ``path`` (the header when there is one) and the
    1-based physical line it ends on."""
    with dialect.open_text(path) as f:
        reader = dialect.csv_reader(f)
        for rec in reader:
            if rec:
                return rec, reader.line_num
    raise DataError("file is empty.", path=str(path))


def read_strings(
    path: str | Path,
    dialect: Dialect,
    column_names: Sequence[str] | None = None,
) -> StringTable:
    """Parse ``path`` with pyarrow, every column as ``str``; records with a wrong field count
    are dropped and counted (``n_invalid``), not raised, so the caller can report them in
    file order together with bad values.

    Column names: the header when ``dialect.has_header`` (``column_names`` then renames
    them), else ``column_names``, else ``f0..f{n-1}``.
    """
    path = require_file(path)
    first, header_end = first_record(path, dialect)
    n_fields = len(first)
    if dialect.has_header:
        file_names = list(first)
        if len(set(file_names)) != len(file_names):
            dup = sorted({c for c in file_names if file_names.count(c) > 1})
            raise DataError(f"header has duplicate column names {dup}.", path=str(path), line=1)
    else:
        file_names = [f"f{i}" for i in range(n_fields)]
    if column_names is not None:
        if len(column_names) != n_fields:
            raise DataError(
                f"{len(column_names)} column_names given ({list(column_names)}) but the "
                f"file has {n_fields} fields per row.",
                path=str(path),
            )
        names = list(column_names)
    else:
        names = file_names

    counter = {"n": 0}

    def on_invalid(row: pacsv.InvalidRow) -> str:
        counter["n"] += 1
        return "skip"

    read_opts = pacsv.ReadOptions(
        column_names=names,
        skip_rows=header_end if dialect.has_header else 0,
        encoding=dialect.encoding,
    )
    parse_opts = pacsv.ParseOptions(
        delimiter=dialect.delimiter,
        quote_char=dialect.quote_char if dialect.quote_char is not None else False,
        invalid_row_handler=on_invalid,
    )
    convert_opts = pacsv.ConvertOptions(
        column_types={n: pa.string() for n in names},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    source: str | io.BytesIO = str(path)
    if dialect.max_lines is not None:
        with open(path, "rb") as f:
            source = io.BytesIO(b"".join(islice(f, dialect.max_lines)))
    try:
        table = pacsv.read_csv(source, read_opts, parse_opts, convert_opts)
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        raise DataError(
            f"could not be parsed as {dialect.encoding} text delimited by {dialect.delimiter!r}: {e}",
            path=str(path),
        ) from None
    frame = table.to_pandas()
    return StringTable(frame, path, dialect, n_fields, n_invalid=counter["n"])


# ---------------------------------------------------------------------- value checks
def empty(values: pd.Series) -> np.ndarray:
    """Mask of missing or blank values (``None``, NaN, ``""``, whitespace)."""
    if values.dtype.kind in "biufcmM":
        return values.isna().to_numpy()
    return (values.isna() | values.astype(str).str.strip().eq("")).to_numpy()


def numeric(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Values as float64 numbers and the mask of values that are not numbers (blanks and
    NaN included). A strict pyarrow cast handles clean columns fast; only a column with a
    blank or bad value takes the slower per-value path."""
    if values.dtype.kind in "biuf":
        return values, values.isna().to_numpy()
    try:
        out = pc.cast(pa.array(values, from_pandas=True), pa.float64()).to_numpy(
            zero_copy_only=False
        )
        return pd.Series(out, index=values.index), np.isnan(out)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        out = pd.to_numeric(values.astype(str).str.strip(), errors="coerce").astype(np.float64)
        return out, out.isna().to_numpy()


def integral(values: pd.Series) -> pd.Series:
    """A float series as int64 when every value is a whole number, else unchanged."""
    if (
        values.dtype.kind == "f"
        and len(values)
        and np.isfinite(values).all()
        and (values % 1 == 0).all()
    ):
        return values.astype(np.int64)
    return values


def as_ids(values: pd.Series) -> pd.Series:
    """Raw ids: int64 when every id is a canonical integer (so ``"007"`` or ``"+7"`` stays a
    string, as it was written), else str with surrounding blanks removed."""
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "f":  # e.g. parquet floats; keep whole numbers as ints
        return integral(values)
    s = values.astype(str).str.strip()
    try:
        arr = pa.array(s, type=pa.string())
        ints = pc.cast(arr, pa.int64())
        if len(s) and pc.all(pc.equal(pc.cast(ints, pa.string()), arr)).as_py():
            return pd.Series(ints.to_numpy(), index=values.index)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    return s.astype(object)


def infer(values: pd.Series) -> pd.Series:
    """A context/feature column read as strings -> numbers when every non-blank value is one
    (and none has a leading zero, like a zip code), else strings with blanks as None."""
    if values.dtype.kind not in "OUST" and str(values.dtype) not in ("str", "string"):
        return values
    s = values.astype(str).str.strip()
    blank = (s.eq("") | values.isna()).to_numpy()
    if len(s) and not blank.all():
        num, bad = numeric(s)
        if not (bad & ~blank).any() and not s[~blank].str.match(r"-?0\d").any():
            return integral(num) if not blank.any() else num
    return values.astype(object).mask(blank, None)


# ---------------------------------------------------------------------- bad rows
@dataclass
class Check:
    """A bad-row mask for one column and how to describe a bad value."""

    column: str
    bad: np.ndarray  # (n_rows,) bool
    values: pd.Series | None = None  # original values, to quote in the message
    reason: str = "is not a number"

    def message(self, i: int) -> str:
        if self.values is None:
            return self.reason
        v = self.values.iloc[i]
        shown = "empty" if v is None or (isinstance(v, str) and not v.strip()) else repr(v)
        return f"value {shown} {self.reason}"


def resolve_bad_rows(
    source: RowSource,
    n_rows: int,
    checks: Sequence[Check],
    *,
    skip_bad_rows: bool,
) -> np.ndarray:
    """Raise at the first bad record in file order, or drop the bad ones.

    Returns the (n_rows,) keep mask over the parsed rows. When skipping, sets
    ``source.meta["skipped_rows"]`` (count, dropped records included) and
    ``source.meta["skipped_lines"]`` (1-based line numbers of the first few) and logs a
    WARNING. Rows that pass every check are always kept.
    """
    bad_any = np.zeros(n_rows, dtype=bool)
    for c in checks:
        bad_any |= c.bad
    n_bad = int(bad_any.sum())
    source.meta.update(skipped_rows=0, skipped_lines=[])
    if n_bad == 0 and source.n_invalid == 0:
        return ~bad_any
    path = str(source.path)
    hint = "Fix or remove the row, or pass skip_bad_rows=True."

    def error(where: int, message: str, column: str | None = None) -> DataError:
        if source.unit == "line":
            return DataError(f"{message}. {hint}", path=path, line=where, column=column)
        return DataError(f"{source.unit} {where}: {message}. {hint}", path=path, column=column)

    wheres: list[int] = []
    for where, kept, problem in source.events():
        if kept is None:
            if not skip_bad_rows:
                raise error(where, problem)
        elif bad_any[kept]:
            if not skip_bad_rows:
                c = next(c for c in checks if c.bad[kept])
                raise error(where, c.message(kept), c.column)
        else:
            continue
        wheres.append(where)
        if len(wheres) >= MAX_SKIPPED_LINES:
            break
    total = n_bad + source.n_invalid
    if not skip_bad_rows:  # the line-aware pass disagreed with the parser: still refuse
        raise DataError(
            f"{total} malformed row(s) (their lines could not be located). {hint}", path=path
        )
    source.meta.update(skipped_rows=total, skipped_lines=wheres)
    logger.warning(
        "%s: skipped %d malformed row(s), the first at %s(s) %s", path, total, source.unit, wheres
    )
    return ~bad_any
