"""The model repository without HTTP: source scan, policies, the gate, labels, the swap."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from recforge.exceptions import ConfigError
from recforge.serving.repository import (
    MARKER,
    NoServableError,
    Policy,
    State,
    VersionManager,
    VersionSource,
    Watcher,
    publish,
)
from tests.serving_fakes import FakeLoader, write_fake


def manager(root: Path, **kw) -> VersionManager:
    return VersionManager(VersionSource(root), FakeLoader(), **kw)


def states(m: VersionManager, name: str = "m") -> dict[int, tuple[str, str | None]]:
    (entry,) = [e for e in m.describe() if e["name"] == name]
    return {v["version"]: (v["state"], v["reason"]) for v in entry["versions"]}


def test_source_scan_integer_versions_and_completion(tmp_path):
    write_fake(tmp_path / "m" / "1", 1)
    write_fake(tmp_path / "m" / "2", 2, complete=False)
    write_fake(tmp_path / "m" / "latest", 9)  # not an integer: ignored
    write_fake(tmp_path / "m" / ".3.tmp-77ab", 3)  # publish's temp dir: ignored
    (tmp_path / ".hidden").mkdir()
    scan = VersionSource(tmp_path).scan()
    assert set(scan) == {"m"}
    assert {v: d.complete for v, d in scan["m"].items()} == {1: True, 2: False}


def test_latest_policy_swaps_and_unloads_the_old(tmp_path):
    write_fake(tmp_path / "m" / "1", 1)
    m = manager(tmp_path)
    assert not m.ready()
    m.sync()
    assert m.ready() and m.get("m").version == 1 and m.get().version == 1
    write_fake(tmp_path / "m" / "2", 2)
    m.sync()
    assert m.get("m").version == 2
    assert states(m) == {2: ("available", None)}  # v1 unloaded once v2 was available
    entry = m.describe()[0]
    assert entry["default_version"] == 2 and entry["versions"][0]["load_seconds"] >= 0


def test_latest_n_and_specific(tmp_path):
    for v in (1, 2, 3):
        write_fake(tmp_path / "m" / str(v), v)
    m = manager(tmp_path, default_policy=Policy.parse("latest:2"))
    m.sync()
    assert set(states(m)) == {2, 3} and m.get("m@2").version == 2
    m.set_policy("m", "specific:1")  # a pin: the rollback by policy
    assert set(states(m)) == {1} and m.get("m").version == 1
    with pytest.raises(ConfigError, match="latest:N"):
        Policy.parse("newest")


def test_failed_version_never_serves_and_the_old_keeps_serving(tmp_path):
    write_fake(tmp_path / "m" / "1", 1)
    m = manager(tmp_path)
    m.sync()
    write_fake(tmp_path / "m" / "2", 2, fail="weights.safetensors: checksum mismatch")
    m.sync()
    assert m.get("m").version == 1
    st = states(m)
    assert st[2][0] == "failed" and "checksum mismatch" in st[2][1]
    with pytest.raises(NoServableError, match="failed"):
        m.get("m@2")
    m.sync()  # not retried by the poll
    assert m.loader.loaded == [1]
    write_fake(tmp_path / "m" / "2", 2)  # fixed in place: an explicit reload retries
    m.reload("m")
    assert m.get("m").version == 2


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ({"schema": {"user_id": "int", "item_id": "int", "context": []}}, "schema mismatch"),
        ({"nan": True}, "non-finite"),
        ({"warmup_s": 0.3}, "over the 100 ms budget"),
    ],
)
def test_gate_rejects(tmp_path, behaviour, reason):
    write_fake(tmp_path / "m" / "1", 1)
    m = manager(tmp_path, warmup_budget_s=0.1)
    m.sync()
    write_fake(tmp_path / "m" / "2", 2, **behaviour)
    m.sync()
    assert states(m)[2][0] == "failed" and reason in states(m)[2][1]
    assert m.get("m").version == 1


def test_configured_schema_checked_on_the_first_version(tmp_path):
    write_fake(tmp_path / "m" / "1", 1)
    m = manager(tmp_path, schemas={"m": {"user_id": "int"}})
    m.sync()
    assert states(m)[1][0] == "failed" and "'user_id' expected 'int'" in states(m)[1][1]
    assert not m.ready()


def test_memory_budget_refuses_a_load_that_does_not_fit(tmp_path):
    write_fake(tmp_path / "m" / "1", 1, padding=600_000)
    m = manager(tmp_path, memory_budget_bytes=1_000_000)
    m.sync()
    write_fake(tmp_path / "m" / "2", 2, padding=600_000)
    m.sync()
    st = states(m)
    assert st[2][0] == "failed" and st[2][1].startswith("memory budget")
    assert m.get("m").version == 1 and m.loader.loaded == [1]


def test_incomplete_copy_is_listed_and_never_loaded(tmp_path):
    write_fake(tmp_path / "m" / "1", 1)
    write_fake(tmp_path / "m" / "2", 2, complete=False)
    m = manager(tmp_path)
    m.sync()
    st = states(m)
    assert st[2][0] == "incomplete" and MARKER in st[2][1]
    assert m.get("m").version == 1 and m.loader.loaded == [1]
    (tmp_path / "m" / "2" / MARKER).write_text("{}")
    m.sync()
    assert m.get("m").version == 2


def test_in_flight_requests_finish_on_the_old_version(tmp_path):
    write_fake(tmp_path / "m" / "1", 1)
    m = manager(tmp_path)
    m.sync()
    with m.lease("m") as old:
        write_fake(tmp_path / "m" / "2", 2)
        m.sync()
        assert m.get("m").version == 2  # new requests go to the new version
        assert old.version == 1 and states(m)[1][0] == "unloading"
        assert old.recommend("u")["version"] == 1
    assert set(states(m)) == {2}  # the lease ended: v1 dropped


def test_labels_canary_and_rollback_by_relabel(tmp_path):
    write_fake(tmp_path / "m" / "1", 1)
    m = manager(tmp_path)
    m.sync()
    m.set_label("m", "stable", 1)
    write_fake(tmp_path / "m" / "2", 2)
    m.sync()
    # stable keeps v1 loaded and serving by default; v2 is loaded and takes canary traffic
    assert m.get("m").version == 1 and m.get("m@2").version == 2
    m.set_label("m", "canary", 2)
    assert m.get("m@canary").version == 2
    m.set_label("m", "stable", 2)  # promote
    assert m.get("m").version == 2
    m.set_label("m", "stable", 1)  # rollback: one call
    assert m.get("m").version == 1
    assert m.describe()[0]["labels"] == {"stable": 1, "canary": 2}
    with pytest.raises(ConfigError, match="label"):
        m.set_label("m", "beta", 1)


def test_explicit_load_unload(tmp_path):
    for v in (1, 2):
        write_fake(tmp_path / "m" / str(v), v)
    m = manager(tmp_path)
    m.sync()
    assert set(states(m)) == {2}
    m.load("m", 1)
    m.sync()
    assert set(states(m)) == {1, 2}  # pinned besides the policy
    with pytest.raises(ConfigError, match="only available"):
        m.unload("m", 2) or m.unload("m", 1)
    assert set(states(m)) == {1}
    m.sync()
    assert set(states(m)) == {1}  # the unloaded v2 is not brought back by the poll
    m.reload("m")
    assert m.get("m").version == 2


def test_watcher_picks_up_a_published_version(tmp_path):
    src = write_fake(tmp_path / "src", 1)
    (src / MARKER).unlink()
    v1 = publish(src, tmp_path / "root" / "m")
    assert v1.name == "1" and (v1 / MARKER).is_file()
    m = manager(tmp_path / "root")
    m.sync()
    w = Watcher(m, interval_s=0.02).start()
    try:
        publish(src, tmp_path / "root" / "m")
        deadline = time.monotonic() + 5
        while 2 not in states(m) or states(m)[2][0] != "available":
            assert time.monotonic() < deadline, states(m)
            time.sleep(0.01)
    finally:
        w.stop()


def test_concurrent_publishers_get_distinct_versions(tmp_path):
    src = write_fake(tmp_path / "src", 1, padding=200_000)
    out: list[Path] = []
    threads = [
        threading.Thread(target=lambda: out.append(publish(src, tmp_path / "root" / "m")))
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(int(p.name) for p in out) == [1, 2, 3, 4, 5, 6]
    assert not [
        p for p in (tmp_path / "root" / "m").iterdir() if p.name.startswith(".") and p.is_dir()
    ]


def test_publish_refuses_bad_destination(tmp_path):
    src = write_fake(tmp_path / "src", 1)
    with pytest.raises(ConfigError, match="model name"):
        publish(src, tmp_path / "root" / "bad name")


def test_hot_swap_under_load_in_process(tmp_path):
    """20 versions published while 4 clients request at a steady rate: no request fails,
    every response comes from one version, versions only move forward."""
    src = write_fake(tmp_path / "src", 0, load_s=0.02, request_s=0.001)
    (src / MARKER).unlink()
    root = tmp_path / "root"
    publish(src, root / "m")
    m = manager(root)
    m.sync()
    w = Watcher(m, interval_s=0.01).start()
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[list[int]] = [[] for _ in range(4)]

    def client(i: int) -> None:
        while not stop.is_set():
            try:
                with m.lease("m") as s:
                    r = s.recommend("u", k=3)
                assert {int(it[0].split("-")[0]) for it in r["items"]} == {r["version"]}
                seen[i].append(r["version"])
            except BaseException as e:  # noqa: BLE001 - collected and asserted below
                errors.append(e)
            time.sleep(0.002)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            publish(src, root / "m")
            time.sleep(0.03)
        deadline = time.monotonic() + 10
        while m.get("m").version != 21:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
        w.stop()
    assert errors == []
    for s in seen:
        assert s and np.all(np.diff(s) >= 0)  # one client never goes back a version
    assert states(m) == {21: ("available", None)}
    assert all(r.state is State.AVAILABLE for r in m._records["m"].values())
