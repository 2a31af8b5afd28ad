"""File readers: generic CSV/TSV/Parquet/JSONL with a column mapping, and named datasets.

Every reader raises :class:`recforge.exceptions.DataError` naming the file, the 1-based
line and the column of the first malformed row, or with ``skip_bad_rows=True`` drops the
malformed rows, logs their count at WARNING and reports it in ``meta["skipped_rows"]``
(``DataFrame.attrs`` for the frame readers) with the first line numbers in
``meta["skipped_lines"]``. A missing file raises :class:`DataFileNotFoundError` (a
``DataError`` and a ``FileNotFoundError``) naming the path.
"""

from recforge.data.readers._tabular import DataFileNotFoundError
from recforge.data.readers.criteo import CRITEO_COLUMNS, read_criteo
from recforge.data.readers.datasets import DATASETS, load_dataset, resolve_data_dir
from recforge.data.readers.generic import read_interactions, read_table
from recforge.data.readers.libfm import FRAPPE_FIELDS, read_frappe, read_libfm
from recforge.data.readers.movielens import read_movielens_100k, read_movielens_latest
from recforge.data.readers.sequences import read_sequences

__all__ = [
    "CRITEO_COLUMNS",
    "DATASETS",
    "FRAPPE_FIELDS",
    "DataFileNotFoundError",
    "load_dataset",
    "read_criteo",
    "read_frappe",
    "read_interactions",
    "read_libfm",
    "read_movielens_100k",
    "read_movielens_latest",
    "read_sequences",
    "read_table",
    "resolve_data_dir",
]
