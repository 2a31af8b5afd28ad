"""benchmarks.seq_recbole: the Beauty file as RecBole's atomic .inter (no RecBole needed)."""

from __future__ import annotations

from benchmarks.seq_recbole import write_atomic


def test_write_atomic_keeps_each_users_order_as_timestamps(tmp_path):
    src = tmp_path / "Beauty.txt"
    src.write_text("1 5 6 7\n2 8 9\n")
    write_atomic(src, tmp_path / "out")
    lines = (tmp_path / "out" / "beauty" / "beauty.inter").read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token\ttimestamp:float"
    assert lines[1:] == ["1\t5\t0", "1\t6\t1", "1\t7\t2", "2\t8\t0", "2\t9\t1"]
