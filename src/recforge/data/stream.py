"""Data larger than memory: Parquet read in bounded chunks, shuffled through a bounded buffer.

    src = ParquetSource("clicks/")            # a file or a directory of Parquet files
    enc = FeatureEncoder().fit_stream(src.frames(), label="label")   # one pass
    for frame in src.shuffled(epoch=0): ...   # every row once per epoch, in random order

``frames()`` yields the rows in storage order, ``batch_rows`` at a time (pyarrow reads one
record batch after another; nothing else is held). ``shuffled(epoch)`` visits the row
groups in a random order seeded by ``(seed, epoch)`` and passes their rows through a buffer
of ``buffer_rows``, emitted in random order whenever it is full: memory is bounded by the
buffer, and a row can move anywhere within about ``buffer_rows`` of its neighbours (write
the data with row groups much smaller than the buffer for a good shuffle).
``shard(rank, size)``: each data-parallel rank takes every size-th row group.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recforge.exceptions import ConfigError, DataError


@dataclass
class ParquetSource:
    """A Parquet file or directory read in chunks (module docstring)."""

    path: str | Path
    columns: list[str] | None = None  # columns to read (None: all)
    batch_rows: int = 65_536  # rows per chunk read
    buffer_rows: int = 262_144  # shuffle buffer
    seed: int = 0
    rank: int = 0
    size: int = 1
    _fragments: list = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        import pyarrow.dataset as ds

        p = Path(self.path)
        if not p.exists():
            raise DataError(f"{p}: no such Parquet file or directory.")
        if self.batch_rows < 1 or self.buffer_rows < 1:
            raise ConfigError("ParquetSource: batch_rows and buffer_rows must be >= 1.")
        try:
            dataset = ds.dataset(str(p), format="parquet")
            self._fragments = [
                rg for frag in dataset.get_fragments() for rg in frag.split_by_row_group()
            ]
        except Exception as e:  # pyarrow raises several types for a bad file
            raise DataError(f"{p}: cannot be read as Parquet ({e}).") from None
        if not self._fragments:
            raise DataError(f"{p}: holds no Parquet row group.")

    @property
    def n_rows(self) -> int:
        """Rows in this rank's share (from the Parquet metadata; nothing is read)."""
        return sum(rg.num_rows for f in self._mine() for rg in f.row_groups)

    def shard(self, rank: int, size: int) -> ParquetSource:
        """The share of data-parallel rank ``rank`` of ``size``: every size-th row group."""
        return ParquetSource(
            self.path, self.columns, self.batch_rows, self.buffer_rows, self.seed, rank, size
        )

    def _mine(self) -> list:
        return self._fragments[self.rank :: self.size]

    def _read(self, fragments: list) -> Iterator[pd.DataFrame]:
        for frag in fragments:
            for batch in frag.to_batches(batch_size=self.batch_rows, columns=self.columns):
                if batch.num_rows:
                    yield batch.to_pandas()

    def frames(self) -> Iterator[pd.DataFrame]:
        """This rank's rows in storage order, ``batch_rows`` at a time."""
        return self._read(self._mine())

    def shuffled(self, epoch: int = 0) -> Iterator[pd.DataFrame]:
        """Every row of this rank's share once, in an order seeded by (seed, epoch), in
        frames of ``buffer_rows`` (the last may be shorter)."""
        rng = np.random.default_rng([self.seed, epoch])
        mine = self._mine()
        order = [mine[i] for i in rng.permutation(len(mine))]
        buf: list[pd.DataFrame] = []
        held = 0
        for frame in self._read(order):
            buf.append(frame)
            held += len(frame)
            while held >= self.buffer_rows:
                block = pd.concat(buf, ignore_index=True)
                block = block.iloc[rng.permutation(len(block))].reset_index(drop=True)
                yield block.iloc[: self.buffer_rows].reset_index(drop=True)
                rest = block.iloc[self.buffer_rows :]
                buf, held = ([rest] if len(rest) else []), len(rest)
        if held:
            block = pd.concat(buf, ignore_index=True)
            yield block.iloc[rng.permutation(len(block))].reset_index(drop=True)
