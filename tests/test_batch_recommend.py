"""Batch inference: every user's top-k into a Parquet dataset, in chunks, on processes,
resumable after a kill (whole chunks only; the rest written on the next run)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from recforge import models
from recforge.cli.main import main
from recforge.exceptions import ConfigError
from recforge.serving.batch import batch_recommend
from tests.conftest import make_tiny_interactions


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model = models.get("itemcf", k=10).fit(make_tiny_interactions())
    return model.save(tmp_path_factory.mktemp("m") / "itemcf"), model


def test_all_users_match_recommend(model_dir, tmp_path):
    path, model = model_dir
    r = batch_recommend(path, tmp_path / "recs.parquet", k=5, chunk_size=7)
    assert r["users"] == model.n_users and r["chunks"] == -(-model.n_users // 7)
    recs = pd.read_parquet(tmp_path / "recs.parquet")
    assert set(recs.columns) == {"user", "rank", "item", "score"}
    assert (tmp_path / "recs.parquet" / "_SUCCESS").exists()
    for user in ["u0", "u13"]:
        want_items, want_scores = model.recommend(user, k=5)
        got = recs[recs["user"] == user].sort_values("rank")
        ok = np.isfinite(want_scores[0])
        assert list(got["item"]) == list(want_items[0][ok])


def test_resumes_after_a_kill_and_refuses_another_job(model_dir, tmp_path):
    path, _ = model_dir
    out = tmp_path / "recs.parquet"
    first = batch_recommend(path, out, k=5, chunk_size=10)
    parts = sorted(out.glob("part-*.parquet"))
    full = pd.read_parquet(out)
    # a kill after two chunks: the rest are missing, a temporary file is left behind
    for p in parts[2:]:
        p.unlink()
    (out / "_SUCCESS").unlink()
    (out / ".part-00003.parquet.tmp-123").write_bytes(b"half a file")
    again = batch_recommend(path, out, k=5, chunk_size=10)
    assert again["skipped"] == 2 and again["written"] == first["chunks"] - 2
    pd.testing.assert_frame_equal(
        pd.read_parquet(out, columns=["user", "rank", "item"])
        .sort_values(["user", "rank"])
        .reset_index(drop=True),
        full[["user", "rank", "item"]].sort_values(["user", "rank"]).reset_index(drop=True),
    )
    with pytest.raises(ConfigError, match="another batch job"):
        batch_recommend(path, out, k=7, chunk_size=10)


def test_processes_and_cli(model_dir, tmp_path):
    path, model = model_dir
    users = tmp_path / "users.txt"
    users.write_text("u0\nu1\nu2\nnobody\n")
    result = CliRunner().invoke(
        main,
        ["batch-recommend", "--model", str(path), "--users", str(users), "-k", "3",
         "--out", str(tmp_path / "r.parquet"), "--chunk-size", "2", "--processes", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    recs = pd.read_parquet(tmp_path / "r.parquet")
    assert set(recs["user"]) == {"u0", "u1", "u2"}  # unknown users have no row
    assert recs.groupby("user").size().max() == 3


def test_from_a_bundle_and_a_pipeline(tmp_path):
    from recforge.serving import Recommender
    from tests.serving_fixtures import build_tiny_bundle, tiny_log

    bundle = build_tiny_bundle(tmp_path / "bundle")
    users = list(tiny_log().users[:4]) + ["cold-user"]
    batch_recommend(bundle, tmp_path / "b.parquet", users=users, k=4, chunk_size=2)
    recs = pd.read_parquet(tmp_path / "b.parquet")
    rec = Recommender.load(bundle)
    for u in users:  # the served funnel, cold users included
        got = recs[recs["user"] == u].sort_values("rank")["item"].tolist()
        assert got == rec.recommend(u, k=4).items
    batch_recommend(bundle / "recall", tmp_path / "p.parquet", users=users, k=4)
    assert pd.read_parquet(tmp_path / "p.parquet").groupby("user").size().eq(4).all()
