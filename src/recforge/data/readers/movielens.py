"""MovieLens (GroupLens): the 100K directory and the "latest" CSV releases."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recforge.data.interactions import Interactions
from recforge.data.readers._tabular import (
    Check,
    DataFileNotFoundError,
    Dialect,
    as_ids,
    empty,
    numeric,
    read_strings,
    require_file,
    resolve_bad_rows,
)
from recforge.data.readers.generic import read_interactions
from recforge.exceptions import DataError

_YEAR_IN_TITLE = (
    r"\((\d{4})(?:-\d{0,4})?\)\s*$"  # "Heat (1995)", a series "(1975-1979)" -> its first year
)


def _require_dir(path: str | Path, files: list[str], what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise DataFileNotFoundError(
            f"{what} directory not found (expected it to hold {files}).", path=str(path)
        )
    for name in files:
        require_file(path / name, f"{what} file {name}")
    return path


def read_movielens_100k(path: str | Path, *, skip_bad_rows: bool = False) -> Interactions:
    """Read the MovieLens 100K directory (``u.data``, ``u.item``, ``u.genre``, ``u.user``).

    Returns:
        Interactions with columns ``user``, ``item`` (int64 raw ids), ``rating`` (float64,
        1-5) and ``timestamp`` (int64 seconds); ``item_features`` indexed by ``item`` with
        ``title`` (str), ``year`` (nullable Int64, from the release date) and ``genres``
        (list of genre names from ``u.genre``); ``user_features`` indexed by ``user`` with
        ``age`` (int64), ``gender``, ``occupation`` and ``zip`` (str: some zips are letters).
    """
    path = _require_dir(path, ["u.data", "u.item", "u.genre", "u.user"], "MovieLens 100K")
    inter = read_interactions(
        path / "u.data",
        format="tsv",
        has_header=False,
        column_names=["user", "item", "rating", "timestamp"],
        timestamp_col="timestamp",
        rating_col="rating",
        skip_bad_rows=skip_bad_rows,
    )
    pipe = Dialect(delimiter="|", has_header=False, quote_char=None, encoding="latin-1")

    genre_table = read_strings(path / "u.genre", pipe, ["name", "index"])
    genres = genre_table.frame["name"].tolist()

    n_item_fields = 5 + len(genres)
    items = read_strings(path / "u.item", pipe)
    if items.n_fields != n_item_fields:
        raise DataError(
            f"expected {n_item_fields} fields (id|title|release date|video release date|URL and "
            f"{len(genres)} genre flags from u.genre), found {items.n_fields}.",
            path=str(items.path),
            line=1,
        )
    f = items.frame
    flags = f[[f"f{5 + g}" for g in range(len(genres))]]
    checks = [Check("id", empty(f["f0"]), f["f0"], "is not a valid item id")]
    checks += [
        Check(
            f"genre {genres[g]}",
            ~flags.iloc[:, g].isin(["0", "1"]).to_numpy(),
            flags.iloc[:, g],
            "is not 0 or 1",
        )
        for g in range(len(genres))
    ]
    keep = resolve_bad_rows(items, len(f), checks, skip_bad_rows=skip_bad_rows)
    f, flags = f[keep], flags[keep].eq("1").to_numpy()
    dates = pd.to_datetime(f["f2"].str.strip(), format="%d-%b-%Y", errors="coerce")
    item_features = pd.DataFrame(
        {
            "title": f["f1"].astype(object).to_numpy(),
            "year": dates.dt.year.astype("Int64").array,
            "genres": [[genres[g] for g in row.nonzero()[0]] for row in flags],
        },
        index=pd.Index(as_ids(f["f0"]).to_numpy(), name="item"),
    )

    users = read_strings(path / "u.user", pipe, ["user", "age", "gender", "occupation", "zip"])
    u = users.frame
    age, bad_age = numeric(u["age"])
    checks = [
        Check("user", empty(u["user"]), u["user"], "is not a valid user id"),
        Check("age", bad_age, u["age"]),
    ]
    keep = resolve_bad_rows(users, len(u), checks, skip_bad_rows=skip_bad_rows)
    user_features = pd.DataFrame(
        {
            "age": age[keep].astype("int64").to_numpy(),
            "gender": u["gender"][keep].astype(object).to_numpy(),
            "occupation": u["occupation"][keep].astype(object).to_numpy(),
            "zip": u["zip"][keep].astype(object).to_numpy(),
        },
        index=pd.Index(as_ids(u["user"][keep]).to_numpy(), name="user"),
    )
    meta = dict(inter.meta)
    meta["source"] = str(path)
    meta["skipped_rows"] = (
        inter.meta["skipped_rows"] + items.meta["skipped_rows"] + users.meta["skipped_rows"]
    )
    return Interactions(inter.frame, user_features, item_features, name="ml-100k", meta=meta)


def read_movielens_latest(path: str | Path, *, skip_bad_rows: bool = False) -> Interactions:
    """Read a MovieLens "latest" directory (``ratings.csv``, ``movies.csv``), e.g.
    ml-latest-small.

    Returns:
        Interactions with ``user``, ``item`` (int64), ``rating`` (float64, 0.5-5) and
        ``timestamp`` (int64 seconds); ``item_features`` indexed by ``item`` with ``title``
        (as in the file, year included), ``year`` (nullable Int64, parsed from a trailing
        "(1995)" in the title) and ``genres`` (list of names; "(no genres listed)" -> []).
    """
    path = _require_dir(path, ["ratings.csv", "movies.csv"], "MovieLens latest")
    inter = read_interactions(
        path / "ratings.csv",
        format="csv",
        user_col="userId",
        item_col="movieId",
        rating_col="rating",
        timestamp_col="timestamp",
        skip_bad_rows=skip_bad_rows,
    )
    movies = read_strings(path / "movies.csv", Dialect(delimiter=","))
    m = movies.frame
    for col in ("movieId", "title", "genres"):
        if col not in m.columns:
            raise DataError(
                f"column {col!r} not found; the columns are {list(m.columns)}.",
                path=str(movies.path),
                column=col,
            )
    checks = [Check("movieId", empty(m["movieId"]), m["movieId"], "is not a valid item id")]
    keep = resolve_bad_rows(movies, len(m), checks, skip_bad_rows=skip_bad_rows)
    m = m[keep]
    title = m["title"].str.strip()
    year = pd.to_numeric(title.str.extract(_YEAR_IN_TITLE, expand=False), errors="coerce").astype(
        "Int64"
    )
    genres = [
        [] if g in ("", "(no genres listed)") else g.split("|") for g in m["genres"].str.strip()
    ]
    item_features = pd.DataFrame(
        {"title": title.astype(object).to_numpy(), "year": year.array, "genres": genres},
        index=pd.Index(as_ids(m["movieId"]).to_numpy(), name="item"),
    )
    meta = dict(inter.meta)
    meta["source"] = str(path)
    meta["skipped_rows"] = inter.meta["skipped_rows"] + movies.meta["skipped_rows"]
    return Interactions(inter.frame, None, item_features, name=path.name, meta=meta)
