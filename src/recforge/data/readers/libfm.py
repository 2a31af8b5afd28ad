"""libFM files (``label feat:val feat:val ...``) as CTR frames, and the Frappe dataset."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recforge.data.readers._tabular import (
    Check,
    DataFileNotFoundError,
    Dialect,
    numeric,
    read_strings,
    resolve_bad_rows,
)
from recforge.exceptions import DataError

FRAPPE_FIELDS = (
    "user",
    "item",
    "daytime",
    "weekday",
    "isweekend",
    "homework",
    "cost",
    "weather",
    "country",
    "city",
)
_SPLIT_ORDER = {"train": 0, "validation": 1, "test": 2}


def read_libfm(
    path: str | Path,
    field_names: Sequence[str] | None = None,
    *,
    skip_bad_rows: bool = False,
) -> pd.DataFrame:
    """Read a positional libFM file: every line holds a label and one ``id:value`` per field.

    The field of a feature id is its position in the line (as in Frappe, where each line
    has exactly one feature per field); a line with a different number of features is a
    malformed row.

    Args:
        path: the file; fields are separated by single spaces.
        field_names: names of the fields in line order; default ``f0..f{n-1}``.
        skip_bad_rows: drop malformed rows instead of raising (count in
            ``df.attrs["skipped_rows"]``, first lines in ``df.attrs["skipped_lines"]``).

    Returns:
        DataFrame (n_rows, 1 + n_fields [+ value columns]): ``label`` int64 (1 for a
        positive label such as +1 or 1, 0 for -1 or 0), then one int64 column per field
        holding the feature id, and ``{field}_value`` (float64) only for fields where some
        value is not 1.

    Raises:
        DataError: naming the file, line and column of a non-numeric label, a feature that
            is not ``int:number``, or a line with a different number of features.
    """
    table = read_strings(path, Dialect(delimiter=" ", has_header=False, quote_char=None))
    frame = table.frame
    last = frame.columns[-1]
    if frame.shape[1] > 1 and frame[last].eq("").all():  # trailing space on every line
        frame = frame.drop(columns=[last])
    n_fields = frame.shape[1] - 1
    if field_names is None:
        names = [f"f{i}" for i in range(n_fields)]
    else:
        names = list(field_names)
        if len(names) != n_fields:
            raise DataError(
                f"{len(names)} field_names given ({names}) but the lines hold {n_fields} features.",
                path=str(table.path),
            )
    label, bad_label = numeric(frame["f0"])
    checks = [Check("label", bad_label, frame["f0"])]
    ids, values = {}, {}
    for j, name in enumerate(names):
        raw = frame[f"f{j + 1}"]
        parts = pc.extract_regex(
            pa.array(raw), r"^(?P<id>\d{1,18}):(?P<value>.+)$"
        )  # null: no match
        matched = parts.is_valid().to_numpy(zero_copy_only=False)
        fid = pc.cast(pc.fill_null(pc.struct_field(parts, [0]), "0"), pa.int64()).to_numpy()
        val, bad_val = numeric(
            pd.Series(pc.fill_null(pc.struct_field(parts, [1]), "1").to_pandas())
        )
        checks.append(Check(name, ~matched | bad_val, raw, "is not 'feature_id:value'"))
        ids[name], values[name] = fid, val.to_numpy()
    keep = resolve_bad_rows(table, len(frame), checks, skip_bad_rows=skip_bad_rows)
    out = {"label": (label[keep].to_numpy() > 0).astype(np.int64)}
    for name in names:
        out[name] = ids[name][keep]
    for name in names:
        v = values[name][keep]
        if (v != 1.0).any():
            out[f"{name}_value"] = v
    df = pd.DataFrame(out)
    df.attrs.update(source=str(table.path), **table.meta)
    return df


def read_frappe(path: str | Path, *, skip_bad_rows: bool = False) -> pd.DataFrame:
    """Read every ``frappe.*.libfm`` file of a Frappe directory into one CTR frame.

    Returns:
        DataFrame with ``label`` (0/1), the 10 fields user, item, daytime, weekday,
        isweekend, homework, cost, weather, country, city (int64 libFM feature ids, one
        id space shared by all fields) and ``split`` (the file's middle name: "train",
        "validation", "test"); files in train, validation, test order.
    """
    path = Path(path)
    files = sorted(
        path.glob("frappe.*.libfm"),
        key=lambda p: (_SPLIT_ORDER.get(p.name.split(".")[1], 9), p.name),
    )
    if not files:
        raise DataFileNotFoundError(
            "no frappe.*.libfm files found (expected frappe.train/validation/test.libfm).",
            path=str(path),
        )
    parts, skipped, lines = [], 0, []
    for f in files:
        df = read_libfm(f, FRAPPE_FIELDS, skip_bad_rows=skip_bad_rows)
        skipped += df.attrs["skipped_rows"]
        lines += [f"{f.name}:{n}" for n in df.attrs["skipped_lines"]]
        df["split"] = f.name.split(".")[1]
        parts.append(df)
    out = pd.concat(parts, ignore_index=True)
    out.attrs.update(source=str(path), skipped_rows=skipped, skipped_lines=lines)
    return out
