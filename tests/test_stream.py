"""Out-of-core data: Parquet in bounded chunks, a bounded shuffle, encoders fitted in one
streaming pass equal to the in-memory fit, and a ranker trained from the stream."""

from __future__ import annotations

import numpy as np
import pytest

from recforge import models
from recforge.data.features import FeatureEncoder
from recforge.data.stream import ParquetSource
from recforge.exceptions import ConfigError, DataError
from tests.conftest import make_tiny_ctr


@pytest.fixture
def parquet(tmp_path):
    df = make_tiny_ctr(3000, seed=2)
    df["price"] = np.random.default_rng(0).gamma(2.0, 10.0, len(df))
    path = tmp_path / "clicks.parquet"
    df.to_parquet(path, row_group_size=250, index=False)
    return df, path


def test_fit_stream_equals_fit(parquet):
    df, path = parquet
    src = ParquetSource(path, batch_rows=200)
    kw = {"min_count": 2, "bucketize": ["price"], "n_buckets": 5}
    a = FeatureEncoder(**kw).fit(df, label="label")
    b = FeatureEncoder(**kw).fit_stream(src.frames(), label="label")
    assert [f.name for f in a.fields_] == [f.name for f in b.fields_]
    for fa, fb in zip(a.fields_, b.fields_):
        assert fa.type == fb.type and fa.vocab_size == fb.vocab_size, fa.name
        assert fa.mean == pytest.approx(fb.mean) and fa.std == pytest.approx(fb.std)
        assert fa.boundaries == pytest.approx(fb.boundaries)  # all values fit the sample
    for name in ("cat", "uid", "tags"):
        assert list(a.vocabulary(name)) == list(b.vocabulary(name))  # first-appearance order
    ea, eb = a.transform(df), b.transform(df)
    np.testing.assert_array_equal(ea.categorical, eb.categorical)
    np.testing.assert_allclose(ea.numeric, eb.numeric, rtol=1e-6)


def test_shuffle_is_bounded_complete_and_seeded(parquet):
    df, path = parquet
    src = ParquetSource(path, batch_rows=100, buffer_rows=700, columns=["num", "label"])
    blocks = list(src.shuffled(epoch=0))
    assert all(len(b) <= 700 for b in blocks)
    got = np.sort(np.concatenate([b["num"].to_numpy() for b in blocks]))
    np.testing.assert_array_equal(got, np.sort(df["num"].to_numpy()))  # every row once
    again = np.concatenate([b["num"].to_numpy() for b in src.shuffled(epoch=0)])
    other = np.concatenate([b["num"].to_numpy() for b in src.shuffled(epoch=1)])
    flat = np.concatenate([b["num"].to_numpy() for b in blocks])
    np.testing.assert_array_equal(flat, again)
    assert not np.array_equal(flat, other) and not np.array_equal(flat, df["num"].to_numpy())
    # data-parallel shards: disjoint, together everything
    parts = [
        np.concatenate([f["num"].to_numpy() for f in src.shard(r, 3).frames()]) for r in range(3)
    ]
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.sort(df["num"].to_numpy()))
    assert src.shard(1, 3).n_rows == len(parts[1])


def test_bad_sources(tmp_path):
    with pytest.raises(DataError, match="no such"):
        ParquetSource(tmp_path / "missing.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="bad.parquet"):
        ParquetSource(bad)
    with pytest.raises(ConfigError):
        ParquetSource(bad, buffer_rows=0)


def test_ranker_trains_from_parquet_like_from_memory(parquet):
    df, path = parquet
    train, test = df.iloc[:2500], df.iloc[2500:]
    p = path.with_name("train.parquet")
    train.to_parquet(p, row_group_size=250, index=False)
    params = {"embedding_dim": 8, "hidden": (16,), "epochs": 3, "batch_size": 128, "lr": 0.01}
    mem = models.get("deepfm", **params).fit(train, label="label")
    stream = models.get("deepfm", **params).fit(
        ParquetSource(p, batch_rows=300, buffer_rows=1024), label="label", valid=test
    )
    from recforge.metrics import auc

    a_mem = auc(test["label"], mem.predict_proba(test))
    a_stream = auc(test["label"], stream.predict_proba(test))
    assert a_stream > 0.6 and abs(a_stream - a_mem) < 0.05, (a_mem, a_stream)
    assert len(stream.train_history_.train_loss) == 3
    with pytest.raises(ConfigError, match="in memory"):
        models.get("deepfm", sampling="under", **params).fit(ParquetSource(p), label="label")
