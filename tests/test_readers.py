"""File readers: column mapping, raw ids, every bad-input path, named formats, real data."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recforge.data.readers import (
    CRITEO_COLUMNS,
    FRAPPE_FIELDS,
    DataFileNotFoundError,
    load_dataset,
    read_criteo,
    read_frappe,
    read_interactions,
    read_libfm,
    read_movielens_100k,
    read_movielens_latest,
    read_sequences,
    read_table,
)
from recforge.exceptions import ConfigError, DataError


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


# ---------------------------------------------------------------------- generic: mapping
def test_csv_column_mapping_types_and_context(tmp_path):
    p = write(
        tmp_path / "log.csv",
        "uid,iid,ts,stars,clicked,w,device,price\n"
        "alice,10,100,4.5,1,0.5,phone,1.5\n"
        'bob,"x,y",101,3,0,1,,2\n',
    )
    inter = read_interactions(
        p,
        user_col="uid",
        item_col="iid",
        timestamp_col="ts",
        rating_col="stars",
        label_col="clicked",
        weight_col="w",
    )
    f = inter.frame
    assert list(f.columns) == [
        "user",
        "item",
        "timestamp",
        "rating",
        "label",
        "weight",
        "device",
        "price",
    ]
    assert f["user"].tolist() == ["alice", "bob"]
    assert f["item"].tolist() == ["10", "x,y"]  # one non-integer id: all stay strings
    assert f["timestamp"].dtype == np.int64 and f["timestamp"].tolist() == [100, 101]
    assert f["rating"].dtype == np.float64 and f["rating"].tolist() == [4.5, 3.0]
    assert f["label"].tolist() == [1, 0] and f["weight"].tolist() == [0.5, 1.0]
    assert f["device"].tolist() == ["phone", None]
    assert f["price"].dtype == np.float64 and f["price"].tolist() == [1.5, 2.0]
    assert inter.context_columns == ["device", "price"]
    assert inter.meta["skipped_rows"] == 0 and inter.meta["source"] == str(p)


def test_int_ids_kept_as_int_and_non_canonical_as_str(tmp_path):
    p = write(tmp_path / "a.csv", "user,item\n1,7\n2,8\n")
    f = read_interactions(p).frame
    assert f["user"].dtype == np.int64 and f["user"].tolist() == [1, 2]
    p = write(tmp_path / "b.csv", "user,item\n007,7\n2,8\n")
    assert read_interactions(p).frame["user"].tolist() == ["007", "2"]


def test_canonical_column_names_are_used_and_clashes_refused(tmp_path):
    p = write(tmp_path / "a.csv", "user,item,rating,stars\n1,2,4,x\n")
    f = read_interactions(p).frame
    assert f["rating"].tolist() == [4.0] and f["stars"].tolist() == ["x"]
    with pytest.raises(DataError, match="column 'rating' would clash.*'stars'"):
        read_interactions(p, rating_col="stars")


def test_tsv_headerless_with_column_names_and_custom_delimiter(tmp_path):
    p = write(tmp_path / "u.tsv", "1\t5\t3\t100\n2\t6\t4\t101\n")
    inter = read_interactions(
        p,
        has_header=False,
        column_names=["u", "i", "r", "t"],
        user_col="u",
        item_col="i",
        rating_col="r",
    )
    assert inter.frame["item"].tolist() == [5, 6] and inter.frame["t"].tolist() == [100, 101]
    p = write(tmp_path / "pipe.txt", "user|item\na|b\n")
    inter = read_interactions(p, format="csv", delimiter="|")
    assert inter.frame[["user", "item"]].values.tolist() == [["a", "b"]]


def test_iso_timestamps_become_datetimes(tmp_path):
    p = write(tmp_path / "a.csv", "user,item,when\nu,i,2024-01-02T03:04:05\nv,j,2024-01-03\n")
    ts = read_interactions(p, timestamp_col="when").frame["timestamp"]
    assert ts.dtype.kind == "M" and ts.iloc[0] == pd.Timestamp("2024-01-02T03:04:05")


def test_parquet_and_jsonl(tmp_path):
    table = pa.table({"u": ["a", "b"], "i": [1, 2], "r": [1.0, 5.0], "ctx": ["x", "y"]})
    pq.write_table(table, tmp_path / "a.parquet")
    f = read_interactions(tmp_path / "a.parquet", user_col="u", item_col="i", rating_col="r").frame
    assert f.to_dict("list") == {
        "user": ["a", "b"],
        "item": [1, 2],
        "rating": [1.0, 5.0],
        "ctx": ["x", "y"],
    }
    p = write(
        tmp_path / "a.jsonl",
        '{"user": 1, "item": "p", "rating": 2}\n\n{"user": 2, "item": "q", "rating": 3}\n',
    )
    f = read_interactions(p, rating_col="rating").frame
    assert (
        f["user"].tolist() == [1, 2]
        and f["item"].tolist() == ["p", "q"]
        and f["rating"].tolist() == [2.0, 3.0]
    )


def test_jsonl_mixed_id_types_fall_back_to_strings(tmp_path):
    p = write(tmp_path / "a.jsonl", '{"user": 1, "item": 2}\n{"user": "x", "item": 3}\n')
    f = read_interactions(p).frame
    assert f["user"].tolist() == ["1", "x"] and f["item"].tolist() == [2, 3]


# ---------------------------------------------------------------------- generic: bad input
def test_header_after_blank_lines_bom_and_empty_files(tmp_path):
    p = write(tmp_path / "a.csv", "\ufeff\n\nuser,item\n1,2\n\n3,4\n")
    assert read_interactions(p).frame[["user", "item"]].values.tolist() == [[1, 2], [3, 4]]
    p = write(tmp_path / "bad.csv", "\n\nuser,item\n1,2\n\n3\n")
    with pytest.raises(DataError, match="line 6"):
        read_interactions(p)
    assert len(read_interactions(write(tmp_path / "h.csv", "user,item\n"))) == 0
    with pytest.raises(DataError, match=r"e\.csv: file is empty"):
        read_interactions(write(tmp_path / "e.csv", ""))


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataFileNotFoundError, match="nope.csv") as e:
        read_interactions(tmp_path / "nope.csv")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, DataError)


def test_missing_column_lists_found_columns(tmp_path):
    p = write(tmp_path / "a.csv", "userId,movieId\n1,2\n")
    with pytest.raises(DataError, match=r"'user'.*\['userId', 'movieId'\]") as e:
        read_interactions(p)
    assert "a.csv" in str(e.value) and "did you mean 'userId'" in str(e.value)


def test_unknown_suffix_asks_for_format(tmp_path):
    p = write(tmp_path / "a.xyz", "user,item\n1,2\n")
    with pytest.raises(DataError, match="pass format="):
        read_interactions(p)


@pytest.mark.parametrize(
    ("body", "line", "column", "text"),
    [
        ("1,2,3\n1,2\n", 3, None, "expected 3 fields"),  # too few fields
        ("1,2,3\n1,2,3,4\n", 3, None, "found 4"),  # too many fields
        ("1,2,3\n\n1,2,abc\n", 4, "r", "'abc' is not a number"),  # blank line counted
        ("1,2,3\n,2,3\n", 3, "u", "empty is not a valid user id"),
        ("1,2,3\n1, ,3\n", 3, "i", "not a valid item id"),
        ("1,2,\n", 2, "r", "empty is not a number"),
        ('"a\nb",2,3\n1,2,x\n', 4, "r", "'x'"),  # a quoted newline: line numbers stay physical
    ],
)
def test_bad_row_names_file_line_and_column(tmp_path, body, line, column, text):
    p = write(tmp_path / "bad.csv", "u,i,r\n" + body)
    with pytest.raises(DataError) as e:
        read_interactions(p, user_col="u", item_col="i", rating_col="r")
    msg = str(e.value)
    assert "bad.csv" in msg and f"line {line}" in msg and text in msg, msg
    assert e.value.line == line and e.value.column == column


def test_first_bad_row_in_file_order_wins(tmp_path):
    # a bad value on line 3 precedes a wrong field count on line 4 (parsed separately)
    p = write(tmp_path / "bad.csv", "u,i,r\n1,2,3\n1,2,zz\n1,2\n")
    with pytest.raises(DataError, match="line 3"):
        read_interactions(p, user_col="u", item_col="i", rating_col="r")


def test_skip_bad_rows_counts_and_keeps_good_rows(tmp_path, caplog):
    body = "u,i,r\n1,a,1\n2,b\n3,c,x\n,d,2\n4,e,5\n5,f,2,9\n6,g,3\n"
    p = write(tmp_path / "bad.csv", body)
    with caplog.at_level(logging.WARNING):
        inter = read_interactions(p, user_col="u", item_col="i", rating_col="r", skip_bad_rows=True)
    assert inter.frame["user"].tolist() == [1, 4, 6] and inter.frame["item"].tolist() == [
        "a",
        "e",
        "g",
    ]
    assert inter.meta["skipped_rows"] == 4 and inter.meta["skipped_lines"] == [3, 4, 5, 7]
    assert "skipped 4 malformed row(s)" in caplog.text and "bad.csv" in caplog.text


def test_bad_row_at_the_end_of_a_large_file(tmp_path):
    n = 50_000
    lines = [f"{u % 97},{u % 113},{u % 5 + 1}" for u in range(n)] + ["5,6,oops"]
    p = write(tmp_path / "big.csv", "u,i,r\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=f"line {n + 2}"):
        read_interactions(p, user_col="u", item_col="i", rating_col="r")
    inter = read_interactions(p, user_col="u", item_col="i", rating_col="r", skip_bad_rows=True)
    assert len(inter) == n and inter.meta["skipped_lines"] == [n + 2]


def test_parquet_bad_row_names_the_row(tmp_path):
    pq.write_table(pa.table({"user": ["a", None], "item": [1, 2]}), tmp_path / "a.parquet")
    with pytest.raises(DataError, match=r"a\.parquet.*row 2.*user") as e:
        read_interactions(tmp_path / "a.parquet")
    assert e.value.column == "user"
    inter = read_interactions(tmp_path / "a.parquet", skip_bad_rows=True)
    assert inter.frame["user"].tolist() == ["a"] and inter.meta["skipped_lines"] == [2]


def test_jsonl_bad_line(tmp_path):
    p = write(
        tmp_path / "a.jsonl",
        '{"user": 1, "item": 2}\n\n{"user": 1, "item": \n[1]\n{"user": 3, "item": 4}\n',
    )
    with pytest.raises(DataError, match=r"a\.jsonl, line 3: not valid JSON"):
        read_interactions(p)
    inter = read_interactions(p, skip_bad_rows=True)
    assert inter.frame["user"].tolist() == [1, 3] and inter.meta["skipped_lines"] == [3, 4]
    p = write(tmp_path / "b.jsonl", '{"user": 1, "item": 2}\n\n{"user": null, "item": 3}\n')
    with pytest.raises(DataError, match=r"b\.jsonl, line 3, column 'user'"):
        read_interactions(p)


# ---------------------------------------------------------------------- read_table
def test_read_table_index_types_and_encoding(tmp_path):
    p = write(
        tmp_path / "users.csv",
        "id,zip,age,city\n1,02134,30,Zürich\n2,10001,,\n",
        encoding="latin-1",
    )
    t = read_table(p, index_col="id", encoding="latin-1")
    assert t.index.name == "id" and t.index.tolist() == [1, 2]
    assert t["zip"].tolist() == ["02134", "10001"]  # leading zero: stays a string
    assert t["age"].tolist()[0] == 30 and np.isnan(t["age"].tolist()[1])
    assert t["city"].tolist() == ["Zürich", None]
    assert t.attrs["skipped_rows"] == 0


def test_read_table_bad_rows(tmp_path):
    p = write(tmp_path / "t.csv", "id,a\n1,x\n,y\n3\n4,z\n")
    with pytest.raises(DataError, match=r"t\.csv, line 3, column 'id'"):
        read_table(p, index_col="id")
    t = read_table(p, index_col="id", skip_bad_rows=True)
    assert t.index.tolist() == [1, 4] and t.attrs["skipped_lines"] == [3, 4]


# ---------------------------------------------------------------------- MovieLens
GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
]  # fmt: skip


def make_ml100k(root: Path, u_data: str | None = None) -> Path:
    def flags(*on: int) -> str:
        return "|".join("1" if g in on else "0" for g in range(19))

    write(root / "u.genre", "".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n")
    write(
        root / "u.item",
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags(3, 4, 5)}\n"
        f'2|Café "Noir" (1996)|15-Mar-1996||http://y|{flags(8)}\n'
        f"3|unknown|||http://z|{flags(0)}\n",
        encoding="latin-1",
    )
    write(root / "u.user", "1|24|M|technician|85711\n2|53|F|other|T8H1N\n")
    write(root / "u.data", u_data or "1\t1\t5\t881250949\n2\t1\t3\t881250950\n2\t3\t1\t881250951\n")
    return root


def test_movielens_100k(tmp_path):
    inter = read_movielens_100k(make_ml100k(tmp_path / "ml"))
    assert inter.frame.to_dict("list") == {
        "user": [1, 2, 2],
        "item": [1, 1, 3],
        "timestamp": [881250949, 881250950, 881250951],
        "rating": [5.0, 3.0, 1.0],
    }
    items = inter.item_features
    assert items.index.tolist() == [1, 2, 3] and items.index.name == "item"
    assert items.loc[2, "title"] == 'Café "Noir" (1996)'  # latin-1, quotes kept
    assert items["year"].tolist()[:2] == [1995, 1996] and pd.isna(items.loc[3, "year"])
    assert items.loc[1, "genres"] == ["Animation", "Children's", "Comedy"]
    assert items.loc[3, "genres"] == ["unknown"]
    users = inter.user_features
    assert users.loc[2].tolist() == [53, "F", "other", "T8H1N"] and users["age"].dtype == np.int64


def test_movielens_100k_bad_rating_and_missing_dir(tmp_path):
    root = make_ml100k(tmp_path / "ml", u_data="1\t1\t5\t881250949\n2\t1\tfive\t881250950\n")
    with pytest.raises(DataError, match=r"u\.data, line 2, column 'rating'"):
        read_movielens_100k(root)
    assert read_movielens_100k(root, skip_bad_rows=True).meta["skipped_rows"] == 1
    (root / "u.user").unlink()
    with pytest.raises(DataFileNotFoundError, match="u.user"):
        read_movielens_100k(root)
    with pytest.raises(DataFileNotFoundError, match="missing-dir"):
        read_movielens_100k(tmp_path / "missing-dir")


def test_movielens_latest(tmp_path):
    root = tmp_path / "ml-latest"
    write(
        root / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,29,3.0,1260759179\n",
    )
    write(
        root / "movies.csv",
        "movieId,title,genres\n"
        '29,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",Adventure|Drama\n'
        "31,Fawlty Towers (1975-1979),Comedy\n"
        "40,Hyena Road,(no genres listed)\n",
    )
    inter = read_movielens_latest(root)
    assert inter.frame["rating"].tolist() == [2.5, 3.0] and inter.frame["item"].tolist() == [31, 29]
    items = inter.item_features
    assert items.loc[29, "title"].startswith("City of Lost Children, The (Cité")
    assert items.loc[29, "genres"] == ["Adventure", "Drama"] and items.loc[40, "genres"] == []
    assert (
        items.loc[29, "year"] == 1995
        and items.loc[31, "year"] == 1975
        and pd.isna(items.loc[40, "year"])
    )
    write(
        root / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,29,3.0,yesterday\n",
    )
    with pytest.raises(DataError, match=r"ratings\.csv, line 3, column 'timestamp'"):
        read_movielens_latest(root)


# ---------------------------------------------------------------------- libFM / Frappe
def test_libfm_positional_fields_labels_and_values(tmp_path):
    p = write(
        tmp_path / "a.libfm",
        "+1 3:1 10:1 20:1\n-1 4:1 11:1 20:1\n1 3:1 12:0.5 21:1\n0 5:1 10:2 22:1\n",
    )
    df = read_libfm(p)
    assert list(df.columns) == ["label", "f0", "f1", "f2", "f1_value"]  # values only where != 1
    assert df["label"].tolist() == [1, 0, 1, 0]
    assert df["f0"].tolist() == [3, 4, 3, 5] and df["f0"].dtype == np.int64
    assert df["f1_value"].tolist() == [1.0, 1.0, 0.5, 2.0]
    named = read_libfm(p, ["user", "item", "ctx"])
    assert list(named.columns) == ["label", "user", "item", "ctx", "item_value"]
    with pytest.raises(DataError, match="2 field_names"):
        read_libfm(p, ["a", "b"])


def test_libfm_bad_rows(tmp_path):
    p = write(tmp_path / "a.libfm", "1 3:1 10:1\n-1 4:1 x:1\n1 3:1\n1 5:1 7:1\n")
    with pytest.raises(DataError, match=r"a\.libfm, line 2, column 'f1'.*'x:1'"):
        read_libfm(p)
    df = read_libfm(p, skip_bad_rows=True)
    assert (
        df["f0"].tolist() == [3, 5]
        and df.attrs["skipped_rows"] == 2
        and df.attrs["skipped_lines"] == [2, 3]
    )
    p = write(tmp_path / "b.libfm", "1 3:1\nyes 4:1\n")
    with pytest.raises(DataError, match=r"line 2, column 'label'"):
        read_libfm(p)


def test_read_frappe(tmp_path):
    line = " ".join(f"{100 * j + 1}:1" for j in range(10))
    write(tmp_path / "frappe.test.libfm", f"1 {line}\n")
    write(tmp_path / "frappe.validation.libfm", f"-1 {line}\n-1 {line}\n")
    write(tmp_path / "README.txt", "not data\n")
    df = read_frappe(tmp_path)
    assert list(df.columns) == ["label", *FRAPPE_FIELDS, "split"]
    assert df["split"].tolist() == ["validation", "validation", "test"] and df[
        "label"
    ].tolist() == [0, 0, 1]
    assert df["city"].tolist() == [901] * 3
    with pytest.raises(DataFileNotFoundError, match="frappe"):
        read_frappe(tmp_path / "empty")


# ---------------------------------------------------------------------- sequences
def test_read_sequences_with_attributes(tmp_path):
    p = write(tmp_path / "Beauty.txt", "1 5 6 7\n\n2 6 5\n")
    attrs = write(tmp_path / "attrs.json", '{"5": [1, 2], "6": [], "7": [3]}')
    inter = read_sequences(p, attrs)
    assert inter.frame.to_dict("list") == {
        "user": [1, 1, 1, 2, 2],
        "item": [5, 6, 7, 6, 5],
        "timestamp": [0, 1, 2, 0, 1],
    }
    assert inter.user_sequences() == {1: [5, 6, 7], 2: [6, 5]}
    assert (
        inter.item_features.loc[5, "attributes"] == [1, 2]
        and inter.item_features.loc[6, "attributes"] == []
    )


def test_read_sequences_string_ids_and_bad_lines(tmp_path):
    p = write(tmp_path / "s.txt", "ua A B\nub\nuc C\n")
    with pytest.raises(DataError, match=r"s\.txt, line 2, column 'item'.*no items"):
        read_sequences(p)
    inter = read_sequences(p, skip_bad_rows=True)
    assert inter.frame["user"].tolist() == ["ua", "ua", "uc"] and inter.frame["item"].tolist() == [
        "A",
        "B",
        "C",
    ]
    assert inter.meta["skipped_rows"] == 1 and inter.meta["skipped_lines"] == [2]
    bad = write(tmp_path / "attrs.json", '{"A": 3}')
    with pytest.raises(DataError, match=r"attrs\.json.*'A'.*list"):
        read_sequences(p, bad, skip_bad_rows=True)


# ---------------------------------------------------------------------- Criteo
def _criteo_row(label: str, i1: str = "", c1: str = "68fd1e64") -> list[str]:
    return [label, i1, *[str(k) for k in range(12)], c1, *["a1b2c3d4"] * 24, ""]


def test_read_criteo_tab_and_csv_with_header(tmp_path):
    rows = [_criteo_row("0", "3"), _criteo_row("1", "", ""), _criteo_row("0", "-1")]
    tab = write(tmp_path / "train.txt", "".join("\t".join(r) + "\n" for r in rows))
    csv = write(
        tmp_path / "sample.txt",
        ",".join(CRITEO_COLUMNS) + "\n" + "".join(",".join(r) + "\n" for r in rows),
    )
    for p in (tab, csv):
        df = read_criteo(p)
        assert list(df.columns) == list(CRITEO_COLUMNS) and len(df) == 3
        assert df["label"].tolist() == [0, 1, 0] and df["label"].dtype == np.int64
        assert (
            df["I1"].iloc[0] == 3.0 and np.isnan(df["I1"].iloc[1]) and df["I1"].dtype == np.float64
        )
        assert (
            df["C1"].iloc[0] == "68fd1e64"
            and pd.isna(df["C1"].iloc[1])
            and pd.isna(df["C26"].iloc[0])
        )
        assert len(read_criteo(p, nrows=2)) == 2


def test_read_criteo_bad_rows(tmp_path):
    rows = [_criteo_row("0", "3"), _criteo_row("1", "abc"), _criteo_row("2")]
    p = write(tmp_path / "train.txt", "".join("\t".join(r) + "\n" for r in rows) + "1\t2\n")
    with pytest.raises(DataError, match=r"train\.txt, line 2, column 'I1'.*'abc'"):
        read_criteo(p)
    assert len(read_criteo(p, nrows=1)) == 1  # the bad rows lie beyond nrows
    df = read_criteo(p, skip_bad_rows=True)
    assert len(df) == 1 and df.attrs["skipped_rows"] == 3 and df.attrs["skipped_lines"] == [2, 3, 4]


# ---------------------------------------------------------------------- load_dataset
def test_load_dataset_resolution_and_errors(tmp_path, monkeypatch):
    make_ml100k(tmp_path / "data" / "ml-100k")
    assert len(load_dataset("ml-100k", tmp_path / "data")) == 3
    monkeypatch.setenv("RECFORGE_DATA_DIR", str(tmp_path / "data"))
    assert load_dataset("ml-100k").item_features.shape[0] == 3
    monkeypatch.delenv("RECFORGE_DATA_DIR")
    monkeypatch.chdir(tmp_path / "data")  # ../shared/data from here does not exist
    with pytest.raises(DataFileNotFoundError, match=r"shared/data/ml-100k.*RECFORGE_DATA_DIR"):
        load_dataset("ml-100k")
    with pytest.raises(DataFileNotFoundError, match=str(tmp_path / "data" / "frappe")):
        load_dataset("frappe", tmp_path / "data")
    with pytest.raises(ConfigError, match="did you mean 'ml-100k'"):
        load_dataset("ml-100")


# ---------------------------------------------------------------------- real data
def test_real_movielens(real_data):
    ml = load_dataset("ml-100k", real_data)
    assert (len(ml), ml.n_users, ml.n_items) == (100_000, 943, 1682)
    assert len(ml.item_features) == 1682 and len(ml.user_features) == 943
    assert ml.item_features.loc[1, "genres"] == ["Animation", "Children's", "Comedy"]
    latest = load_dataset("ml-latest-small", real_data)
    assert (len(latest), latest.n_users) == (100_004, 671)
    assert latest.frame["rating"].between(0.5, 5).all() and len(latest.item_features) == 9125


def test_real_beauty_and_frappe(real_data):
    beauty = load_dataset("amazon-beauty", real_data)
    assert (len(beauty), beauty.n_users, beauty.n_items) == (198_502, 22_363, 12_101)
    assert beauty.item_features["attributes"].map(len).gt(0).all()
    frappe = load_dataset("frappe", real_data)
    assert len(frappe) == 86_582 and set(frappe.frame["label"].unique()) == {0, 1}
    assert frappe.frame["split"].value_counts().to_dict() == {"validation": 57_722, "test": 28_860}


def test_real_criteo_sample(real_data):
    df = read_criteo(real_data / "samples" / "criteo_sample.txt")
    assert df.shape == (200, 40) and set(df["label"].unique()) <= {0, 1}
