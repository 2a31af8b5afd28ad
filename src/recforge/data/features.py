"""Feature encoders for rankers: a DataFrame in, integer and float arrays out.

``FeatureEncoder`` learns, from a training frame, one ``Field`` per column:

* categorical (strings, ints, bools, categories): a vocabulary; index 0 is reserved for
  missing / out-of-vocabulary / rare values, known values get 1..vocab_size-1;
* numeric (floats, or ints named in ``numeric``): standardised with the training mean/std,
  missing -> 0 after standardising; optionally also bucketed into quantile buckets that
  become an extra categorical field ``<name>_bucket``;
* multi-valued (lists such as genres, tags or a behaviour history): each element encoded as
  a categorical value, padded with 0 / truncated to ``max_len``: a list keeps its first
  ``max_len`` values, a column named in ``keep_last`` (a behaviour history, oldest first)
  its last ones; either way the kept values stay in order, followed by the padding. A multi
  field can share the vocabulary of a categorical field (``share={"hist_items":
  "item_id"}``), so a behaviour sequence and the target item live in one index space.

The encoder is saved with a model (``to_json``/``from_json``) and reused at inference, where
unseen values map to 0. ``fields_`` is the data schema that ``nn`` layers size themselves from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recforge.config import suggest
from recforge.exceptions import ConfigError, DataError, NotFittedError

CATEGORICAL, NUMERIC, MULTI = "categorical", "numeric", "multi"


@dataclass
class Field:
    """One encoded input field: what an embedding layer needs to size itself."""

    name: str
    type: str  # "categorical" | "numeric" | "multi"
    vocab_size: int = 0  # categorical/multi: number of indices including 0 (padding/OOV)
    max_len: int = 0  # multi: padded length
    mean: float = 0.0  # numeric: training mean
    std: float = 1.0  # numeric: training std (1 if constant)
    share: str | None = None  # multi: name of the categorical field whose vocabulary it uses
    keep: str = "first"  # multi: which max_len values of a longer list to keep, first|last
    source: str | None = None  # bucket fields: the numeric column they come from
    boundaries: list[float] = field(default_factory=list)  # bucket fields: quantile edges


@dataclass
class EncodedFeatures:
    """Encoded rows. categorical (n, n_cat) int64; numeric (n, n_num) float32;
    multi: name -> (n, max_len) int64, 0 = padding."""

    categorical: np.ndarray
    numeric: np.ndarray
    multi: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.categorical)

    def take(self, idx: np.ndarray | slice) -> EncodedFeatures:
        """Rows ``idx`` (for mini-batches)."""
        return EncodedFeatures(
            self.categorical[idx], self.numeric[idx], {k: v[idx] for k, v in self.multi.items()}
        )


class FeatureEncoder:
    """Learns field types and vocabularies from a frame; encodes frames to arrays.

    Parameters (keyword-only)
    -------------------------
    categorical, numeric, multi: column names forcing a type; other columns are inferred
        (float -> numeric; list/array values -> multi; everything else -> categorical).
    exclude: columns to ignore (the label is always excluded).
    features: if given, only these columns are used (in this order).
    min_count: values seen fewer times in training map to index 0.
    max_len: padded length of multi-valued fields (per-field override via ``max_lens``).
    bucketize: numeric columns that also get a quantile-bucket categorical field.
    n_buckets: number of quantile buckets for ``bucketize``.
    share: multi field -> categorical field whose vocabulary it reuses.
    keep_last: multi fields that keep the LAST ``max_len`` values of a longer list (the most
        recent behaviours of a history ordered oldest first) instead of the first ones.
    """

    def __init__(
        self,
        *,
        categorical: Iterable[str] = (),
        numeric: Iterable[str] = (),
        multi: Iterable[str] = (),
        exclude: Iterable[str] = (),
        features: Iterable[str] | None = None,
        min_count: int = 1,
        max_len: int = 8,
        max_lens: Mapping[str, int] | None = None,
        bucketize: Iterable[str] = (),
        n_buckets: int = 10,
        share: Mapping[str, str] | None = None,
        keep_last: Iterable[str] = (),
    ) -> None:
        self.categorical = list(categorical)
        self.numeric = list(numeric)
        self.multi = list(multi)
        self.exclude = list(exclude)
        self.features = None if features is None else list(features)
        self.min_count = min_count
        self.max_len = max_len
        self.max_lens = dict(max_lens or {})
        self.bucketize = list(bucketize)
        self.n_buckets = n_buckets
        self.share = dict(share or {})
        self.keep_last = list(keep_last)

    # ------------------------------------------------------------------ schema
    @property
    def fields_(self) -> list[Field]:
        if not hasattr(self, "_fields"):
            raise NotFittedError(self, "fields_")
        return self._fields

    def fields_of(self, type_: str) -> list[Field]:
        return [f for f in self.fields_ if f.type == type_]

    @property
    def n_categorical(self) -> int:
        return len(self.fields_of(CATEGORICAL))

    @property
    def n_numeric(self) -> int:
        return len(self.fields_of(NUMERIC))

    # ------------------------------------------------------------------ fit
    def fit(self, frame: pd.DataFrame, label: str | None = None) -> FeatureEncoder:
        """Learn fields from ``frame`` (the ``label`` column is skipped)."""
        if not isinstance(frame, pd.DataFrame):
            raise DataError(
                f"FeatureEncoder.fit expects a pandas DataFrame, got {type(frame).__name__}."
            )
        return self.fit_stream([frame], label)

    def fit_stream(
        self, frames: Iterable[pd.DataFrame], label: str | None = None
    ) -> FeatureEncoder:
        """Learn fields in one pass over chunks of a frame too large for memory (e.g.
        ``recforge.data.stream.ParquetSource.frames()``): the same fields as ``fit`` on the
        concatenation — vocabularies in order of first appearance with ``min_count``,
        numeric mean/std merged exactly; bucket edges are quantiles of a uniform sample of
        at most ``BUCKET_SAMPLE`` values. Column types are read from the first chunk."""
        stats: _FitStats | None = None
        for frame in frames:
            if stats is None:
                stats = _FitStats(self, frame, label)
            stats.add(frame)
        if stats is None:
            raise DataError("FeatureEncoder.fit_stream: no data (the stream was empty).")
        self._fields, self._vocabs = stats.finish()
        return self

    def _type_of(self, s: pd.Series) -> str:
        name = s.name
        if name in self.multi or name in self.share or name in self.keep_last:
            return MULTI
        if name in self.numeric:
            return NUMERIC
        if name in self.categorical:
            return CATEGORICAL
        if pd.api.types.is_float_dtype(s.dtype):
            return NUMERIC
        if s.dtype == object:
            first = s.dropna().head(50)
            if len(first) and all(isinstance(v, list | tuple | np.ndarray) for v in first):
                return MULTI
        return CATEGORICAL

    def _vocab(self, values: np.ndarray) -> pd.Index:
        values = pd.Series(values).dropna()
        counts = values.value_counts(sort=False)  # order of first appearance
        kept = counts.index[counts.to_numpy() >= self.min_count]
        if kept.dtype.kind in "iu":  # plain integer column: no Python objects
            return pd.Index(kept.to_numpy(dtype=np.int64))
        return pd.Index(list(kept))

    # ------------------------------------------------------------------ transform
    def transform(self, frame: pd.DataFrame) -> EncodedFeatures:
        """Encode ``frame``; unseen values -> 0. Raises DataError naming a missing column."""
        fields = self.fields_
        n = len(frame)
        for f in fields:
            col = f.source or f.name
            if col not in frame.columns:
                raise DataError(
                    f"feature column {col!r} is missing; the model was trained with "
                    f"{[x.source or x.name for x in fields]}, found {list(frame.columns)}.",
                    column=col,
                )
        cat = _stack_columns(
            [self.encode_field(f, frame[f.source or f.name]) for f in self.fields_of(CATEGORICAL)],
            n,
            np.int64,
        )
        num = _stack_columns(
            [self.encode_field(f, frame[f.name]) for f in self.fields_of(NUMERIC)], n, np.float32
        )
        multi = {f.name: self.encode_field(f, frame[f.name]) for f in self.fields_of(MULTI)}
        return EncodedFeatures(cat, num, multi)

    def vocabulary(self, name: str) -> pd.Index:
        """The known values of categorical or multi field ``name``; value at position i
        encodes to i + 1 (0 is missing / unseen)."""
        if name not in self._vocabs:
            raise ConfigError(f"{name!r} has no vocabulary (not a categorical or multi field).")
        return self._vocabs[name]

    def encode_field(self, f: Field, column: pd.Series) -> np.ndarray:
        """One field's codes for a column of raw values: (n,) int64 indices (categorical and
        bucket fields; the bucket field reads its numeric source column), (n,) float32
        standardised values (numeric), or (n, max_len) int64 (multi). Unseen -> 0."""
        if f.type == CATEGORICAL and f.source is not None:
            values = _numbers(column, f.source)
            b = np.searchsorted(np.asarray(f.boundaries), values, side="right") + 1
            return np.where(np.isnan(values), 0, b).astype(np.int64)
        if f.type == CATEGORICAL:
            return (_lookup(self._vocabs[f.name], column) + 1).astype(np.int64)
        if f.type == NUMERIC:
            values = _numbers(column, f.name)
            return np.nan_to_num((values - f.mean) / f.std, nan=0.0).astype(np.float32)
        flat, lengths = _flatten(column, f.name)
        codes = self._vocabs[f.name].get_indexer(flat) + 1 if len(flat) else np.zeros(0, np.int64)
        return _pad(codes, lengths, f.max_len, keep_last=f.keep == "last")

    def fit_transform(self, frame: pd.DataFrame, label: str | None = None) -> EncodedFeatures:
        return self.fit(frame, label).transform(frame)

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> dict[str, Any]:
        return {
            "fields": [asdict(f) for f in self.fields_],
            "vocabs": {k: [_py(v) for v in idx] for k, idx in self._vocabs.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureEncoder:
        enc = cls()
        enc._fields = [Field(**f) for f in data["fields"]]
        enc._vocabs = {k: pd.Index(v) for k, v in data["vocabs"].items()}
        return enc


def pad_lists(col: pd.Series, max_len: int, *, keep_last: bool = False) -> np.ndarray:
    """A column of integer lists as a (n, max_len) int64 array, values as they are (no
    vocabulary), each row's first (``keep_last``: last) max_len values then 0 padding."""
    flat, lengths = _flatten(col, str(col.name))
    try:
        values = flat.astype(np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(
            f"column {col.name!r} must hold lists of integers: {e}", column=col.name
        ) from e
    return _pad(values, lengths, max_len, keep_last=keep_last)


BUCKET_SAMPLE = 200_000  # values kept (uniformly, reservoir) for streaming bucket edges


class _FitStats:
    """What ``FeatureEncoder.fit_stream`` accumulates: value counts, moments, samples."""

    def __init__(self, enc: FeatureEncoder, frame: pd.DataFrame, label: str | None) -> None:
        if not isinstance(frame, pd.DataFrame):
            raise DataError(
                f"FeatureEncoder.fit_stream: chunks must be DataFrames, got {type(frame).__name__}."
            )
        self.enc = enc
        skip = set(enc.exclude) | ({label} if label else set())
        columns = (
            enc.features
            if enc.features is not None
            else [c for c in frame.columns if c not in skip]
        )
        forced = [
            *enc.categorical,
            *enc.numeric,
            *enc.multi,
            *enc.bucketize,
            *enc.share,
            *enc.keep_last,
        ]
        for col in [*columns, *forced]:
            if col not in frame.columns:
                raise DataError(
                    f"feature column {col!r} not in the frame{suggest(col, list(frame.columns))}; "
                    f"found {list(frame.columns)}.",
                    column=col,
                )
        if not columns:
            raise DataError(
                f"no feature columns left; found {list(frame.columns)}, label={label!r}."
            )
        self.columns = list(columns)
        self.kinds = {c: enc._type_of(frame[c]) for c in self.columns}
        self.counts: dict[str, list[pd.Series]] = {
            c: [] for c in self.columns if self.kinds[c] != NUMERIC
        }
        self.moments = {
            c: (0, 0.0, 0.0) for c in self.columns if self.kinds[c] == NUMERIC
        }  # n, mean, M2
        self.samples: dict[str, list[np.ndarray]] = {c: [] for c in enc.bucketize}
        self.seen = {c: 0 for c in enc.bucketize}
        self.rng = np.random.default_rng(0)

    def add(self, frame: pd.DataFrame) -> None:
        enc = self.enc
        for col in self.columns:
            kind = self.kinds[col]
            if kind == NUMERIC:
                v = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
                v = v[~np.isnan(v)]
                if len(v):  # Chan et al.'s merge of two (n, mean, M2)
                    n0, m0, q0 = self.moments[col]
                    n1, m1 = len(v), float(v.mean())
                    q1 = float(((v - m1) ** 2).sum())
                    n = n0 + n1
                    d = m1 - m0
                    self.moments[col] = (n, m0 + d * n1 / n, q0 + q1 + d * d * n0 * n1 / n)
            elif kind == CATEGORICAL:
                self._count(col, _native_or_object(frame[col]))
            elif col not in enc.share:  # multi with a vocabulary of its own
                self._count(col, _flatten(frame[col], col)[0])
        for col in enc.bucketize:
            v = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
            self.samples[col].append(v)
            self.seen[col] += len(v)
            kept = np.concatenate(self.samples[col])
            if len(kept) > BUCKET_SAMPLE:  # keep a uniform sample of everything seen so far
                keep = self.rng.choice(len(kept), BUCKET_SAMPLE, replace=False)
                self.samples[col] = [kept[np.sort(keep)]]

    def _count(self, col: str, values: np.ndarray) -> None:
        parts = self.counts[col]
        parts.append(pd.Series(values).dropna().value_counts(sort=False))
        if len(parts) >= 16:  # merged now and then: memory is the number of distinct values
            self.counts[col] = [_merge_counts(parts)]

    def _vocab(self, col: str) -> pd.Index:
        parts = self.counts[col]
        counts = _merge_counts(parts) if parts else pd.Series(dtype=np.int64)
        kept = counts.index[counts.to_numpy() >= self.enc.min_count]
        if kept.dtype.kind in "iu":  # plain integer column: no Python objects
            return pd.Index(kept.to_numpy(dtype=np.int64))
        return pd.Index(list(kept))

    def finish(self) -> tuple[list[Field], dict[str, pd.Index]]:
        enc = self.enc
        fields: list[Field] = []
        vocabs: dict[str, pd.Index] = {}
        for col in self.columns:
            kind = self.kinds[col]
            if kind == NUMERIC:
                n, mean, m2 = self.moments[col]
                if n == 0:
                    raise DataError(f"numeric column {col!r} has no numeric value.", column=col)
                std = float(np.sqrt(m2 / n))
                fields.append(Field(col, NUMERIC, mean=float(mean), std=std if std > 0 else 1.0))
            elif kind == CATEGORICAL:
                vocabs[col] = self._vocab(col)
                fields.append(Field(col, CATEGORICAL, vocab_size=len(vocabs[col]) + 1))
        for col in self.columns:  # multi after categorical so that shared vocabularies exist
            if self.kinds[col] != MULTI:
                continue
            max_len = enc.max_lens.get(col, enc.max_len)
            if col in enc.share:
                target = enc.share[col]
                if target not in vocabs:
                    raise ConfigError(
                        f"share: {col!r} -> {target!r}, but {target!r} is not a categorical feature."
                    )
                vocabs[col] = vocabs[target]
            else:
                vocabs[col] = self._vocab(col)
            fields.append(
                Field(
                    col,
                    MULTI,
                    vocab_size=len(vocabs[col]) + 1,
                    max_len=max_len,
                    share=enc.share.get(col),
                    keep="last" if col in enc.keep_last else "first",
                )
            )
        for col in enc.bucketize:
            values = np.concatenate(self.samples[col])
            qs = np.nanquantile(values, np.linspace(0, 1, enc.n_buckets + 1)[1:-1])
            edges = sorted(set(float(q) for q in qs))
            fields.append(
                Field(
                    f"{col}_bucket",
                    CATEGORICAL,
                    vocab_size=len(edges) + 2,
                    source=col,
                    boundaries=edges,
                )
            )
        return fields, vocabs


def _merge_counts(parts: list[pd.Series]) -> pd.Series:
    """Sum of value counts, values in order of first appearance."""
    if len(parts) == 1:
        return parts[0]
    return pd.concat(parts).groupby(level=0, sort=False).sum()


def _native_or_object(col: pd.Series) -> np.ndarray:
    """A plain NumPy integer column as is (value counts on the int64 hash table, ~10x
    faster and no per-row Python objects), anything else as an object array."""
    dt = col.dtype
    if isinstance(dt, np.dtype) and (dt.kind == "i" or (dt.kind == "u" and dt.itemsize < 8)):
        return col.to_numpy()
    return col.to_numpy(dtype=object)


def _lookup(vocab: pd.Index, values: pd.Series) -> np.ndarray:
    """Positions of ``values`` in ``vocab`` (-1 if absent). Integer columns against an
    integer vocabulary use the native int64 hash table (several times faster than object)."""
    if pd.api.types.is_integer_dtype(vocab.dtype) and pd.api.types.is_integer_dtype(values.dtype):
        return vocab.get_indexer(values.to_numpy())
    return vocab.get_indexer(values.to_numpy(dtype=object))


def _flatten(col: pd.Series, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate list-valued cells: (values (sum of lengths,), lengths (n,)).

    Cells that are all NumPy arrays of one integer dtype (what ``data.history`` builds)
    are concatenated as they are, without a Python object per value."""
    cells = col.to_numpy(dtype=object)
    if len(cells) and all(isinstance(v, np.ndarray) and v.ndim == 1 for v in cells):
        kinds = {v.dtype for v in cells}
        if len(kinds) == 1 and next(iter(kinds)).kind in "iu":
            lengths = np.fromiter((len(v) for v in cells), dtype=np.int64, count=len(cells))
            return np.concatenate(list(cells)), lengths
    lengths = np.zeros(len(col), dtype=np.int64)
    parts = []
    for i, v in enumerate(cells):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        if not isinstance(v, list | tuple | np.ndarray):
            raise DataError(
                f"multi-valued column {name!r} row {i}: expected a list, got {type(v).__name__}.",
                column=name,
            )
        lengths[i] = len(v)
        parts.append(np.asarray(v, dtype=object))
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=object)
    return flat, lengths


def _pad(
    codes: np.ndarray, lengths: np.ndarray, max_len: int, *, keep_last: bool = False
) -> np.ndarray:
    """Scatter a flat code array into (n, max_len), keeping each row's first max_len values
    (``keep_last``: its last max_len values), in order, left-aligned, 0 after them."""
    n = len(lengths)
    out = np.zeros((n, max_len), dtype=np.int64)
    if codes.size == 0:
        return out
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    pos = np.arange(len(codes)) - starts
    if keep_last:  # shift each row so that its last max_len values land on 0..max_len-1
        pos = pos - np.repeat(np.maximum(lengths - max_len, 0), lengths)
    rows = np.repeat(np.arange(n), lengths)
    keep = (pos >= 0) & (pos < max_len)
    out[rows[keep], pos[keep]] = codes[keep]
    return out


def _stack_columns(columns: list[np.ndarray], n: int, dtype: type) -> np.ndarray:
    """(n,) columns as one C-order (n, len(columns)) array, copied in blocks of rows that
    stay in cache: a column at a time over the whole array touches every cache line of
    it once per column (26 int64 columns of 300,000 rows: 0.125 s, blocked 0.046)."""
    out = np.empty((n, len(columns)), dtype=dtype)
    for r0 in range(0, n, _STACK_BLOCK):
        block = out[r0 : r0 + _STACK_BLOCK]
        for j, col in enumerate(columns):
            block[:, j] = col[r0 : r0 + _STACK_BLOCK]
    return out


_STACK_BLOCK = 8192  # rows


def _py(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def _numbers(column: pd.Series, name: str) -> np.ndarray:
    """A numeric field's raw values as float64 (missing or blank -> NaN); a value that is
    present but not a number (``"cheap"`` in a price column) is a DataError naming the
    column."""
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(values) & column.notna().to_numpy()
    if bad.any():  # an empty or blank string counts as missing, like NaN
        blank = column.map(lambda v: isinstance(v, str) and not v.strip()).to_numpy(dtype=bool)
        bad &= ~blank
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"numeric feature {name!r} holds {column.iloc[i]!r} (row {i}), which is not a "
            f"number; the model was trained with numbers there. Pass numbers (or leave the "
            f"value missing).",
            column=name,
        )
    return values
