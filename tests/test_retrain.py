"""The closed loop end to end: events posted to a running server -> ``recforge retrain
--from-feedback`` -> the new version published and hot-reloaded -> the user's
recommendations move toward the new events; a worse candidate is never published; a
second run with nothing new does nothing; two runs never overlap."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from recforge.cli.main import main
from recforge.jobs import load_data
from recforge.serving.build import BundleJob, build_bundle
from recforge.serving.demo import free_port
from recforge.serving.feedback import Event, StoredEvent, open_store
from recforge.serving.repository import publish
from recforge.serving.retrain import FeedbackMapping, feedback_interactions

pytestmark = pytest.mark.xdist_group("retrain")  # one worker builds the first version once

F = "feedback-key-0123456789"
REPO = Path(__file__).absolute().parents[1]
ALS = {
    "name": "als",
    "model": "als",
    "params": {"factors": 16, "iterations": 10, "num_threads": 1},
    "quota": 100,
}
JOB = {
    "data": {"source": "synth", "size": "small", "seed": 0},
    "split": {"method": "temporal", "test_ratio": 0.1},
    "recall": {"channels": [ALS], "fallback": "most_popular", "k": 100},
    "evaluate": {"k": 10, "max_users": 300},
    "name": "loop",
}
# the worse recipe: popularity alone (funnel NDCG@10 on the held-out slice 0.434 vs ALS 0.464
# on the synthetic log of 2026-12-01 before it gained a daypart context; still below ALS after)
POPULAR = {**JOB, "recall": {"channels": [{"name": "pop", "model": "most_popular"}], "k": 100}}


@pytest.fixture(scope="module")
def first_version(tmp_path_factory) -> Path:
    """The bundle `recforge bundle build` makes from JOB: version 1 of every test's root."""
    out = tmp_path_factory.mktemp("v1") / "bundle"
    build_bundle(BundleJob.from_dict({**JOB, "output": str(out)}))
    return out


def _job_file(tmp_path: Path, job: dict, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(job))
    return path


def _retrain(db: Path, job: Path, root: Path, *extra: str):
    args = ["retrain", "--from-feedback", f"sqlite://{db}", "--config", str(job)]
    return CliRunner().invoke(main, [*args, "--models", str(root), *extra])


def test_feedback_becomes_interactions_shaped_like_the_log():
    log = load_data(BundleJob.from_dict({**JOB, "output": "x"}).data)
    ev = [
        StoredEvent(1, "u1", "5", "click", 1.0, 2e9, None, 2e9),
        StoredEvent(2, "u1", "5", "click", 1.0, 2e9 + 1, None, 2e9),  # repeated pair
        StoredEvent(3, "u2", "7", "rating", 5.0, 2e9, None, 2e9),
        StoredEvent(4, "u2", "8", "rating", 2.0, 2e9, None, 2e9),  # below rating_min
        StoredEvent(5, "u2", "9", "impression", 1.0, 2e9, None, 2e9),
        StoredEvent(6, "new-user", "999999", "purchase", 1.0, 2e9, None, 2e9),  # no such item
        StoredEvent(7, "new-user", "3", "view", 1.0, 2e9, None, 2e9),
    ]
    rows, counts = feedback_interactions(iter(ev), log, FeedbackMapping(("click", "view")))
    assert counts == {"events": 7, "rows": 3, "not_positive": 3, "unknown_item": 0,
                      "bad_user": 0, "repeated": 1}  # fmt: skip
    assert list(rows.columns) == list(log.frame.columns)
    assert rows["item"].tolist() == [5, 7, 3] and rows["item"].dtype == log.frame["item"].dtype
    assert rows["rating"].tolist() == [log.frame["rating"].max(), 5, log.frame["rating"].max()]
    assert rows["label"].tolist() == [1, 1, 1] and rows["timestamp"].dtype == np.int64
    _, counts = feedback_interactions(iter(ev), log, FeedbackMapping())
    assert counts["unknown_item"] == 1 and counts["rows"] == 2  # purchase of item 999999


def test_events_to_a_server_retrain_hot_reload_and_recommendations_move(first_version, tmp_path):
    root, db = tmp_path / "root", tmp_path / "feedback.db"
    publish(first_version, root / "loop")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RECFORGE_FEEDBACK_KEYS": F,
           "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}  # fmt: skip
    cmd = [sys.executable, "-m", "recforge.cli.main", "serve", "--models", str(root),
           "--feedback", f"sqlite://{db}", "--port", str(port), "--grpc-port", "0",
           "--poll-interval", "0.2"]  # fmt: skip
    with open(tmp_path / "server.log", "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        http = httpx.Client(base_url=url, timeout=30)
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            try:
                if http.get("/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server not ready in 60 s"
            time.sleep(0.1)

        # a user with a short history clicks 20 items of one cluster: the most popular item
        # they have not seen and its nearest neighbours (version 1's item similarity); the
        # cluster's next 80 neighbours are where their recommendations should move
        log = load_data(BundleJob.from_dict({**JOB, "output": "x"}).data)
        user = log.frame.groupby("user").size().idxmin()
        mine = set(log.frame.loc[log.frame["user"] == user, "item"])
        shown = {e["item"] for e in http.post("/v1/recommend", json={"user": user}).json()["items"]}
        seed = next(int(i) for i in log.frame["item"].value_counts().index
                    if i not in mine and i not in shown)  # fmt: skip
        sim = http.post("/v1/similar", json={"item": seed, "k": 100}).json()["items"]
        sim = [e["item"] for e in sim if e["item"] not in mine]
        clicks, cluster = [seed, *sim[:19]], set(sim[19:])
        events = [{"user": user, "item": i, "type": "click", "key": f"c{i}"} for i in clicks]
        r = http.post("/v1/feedback", json={"events": events}, headers={"X-API-Key": F})
        assert r.json() == {"stored": 20, "duplicates": 0}
        before = http.post("/v1/recommend", json={"user": user, "k": 30}).json()
        share_before = np.mean([e["item"] in cluster for e in before["items"]])

        job = _job_file(tmp_path, JOB)
        res = _retrain(db, job, root)
        assert res.exit_code == 0, res.output
        report = json.loads((root / "loop" / ".retrain" / "last.json").read_text())
        assert report["decision"] == "published" and report["published_version"] == 2
        assert report["feedback"]["rows"] == 20
        key = report["settings"]["metric"]
        assert report["scores"]["candidate"][key] >= report["scores"]["serving"][key]

        deadline = time.monotonic() + 30  # the watcher picks version 2 up
        while True:
            (m,) = http.get("/v1/models").json()["models"]
            if m["default_version"] == 2:
                break
            assert time.monotonic() < deadline, m
            time.sleep(0.1)
        after = http.post("/v1/recommend", json={"user": user, "k": 30}).json()
        share_after = np.mean([e["item"] in cluster for e in after["items"]])
        assert after["version"] != before["version"]  # answered by the new bundle
        # at least 5 more of the top 30 from the cluster (0.20-0.33 more for the users with
        # the shortest histories in a check outside the server, 0.07 for a 27-event history)
        assert share_after >= share_before + 0.15, (share_before, share_after)

        res = _retrain(db, job, root)  # nothing new: nothing done, nothing published
        assert res.exit_code == 4, res.output
        assert not (root / "loop" / "3").exists()
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_worse_candidate_is_not_published_and_runs_never_overlap(first_version, tmp_path):
    root, db = tmp_path / "root", tmp_path / "feedback.db"
    publish(first_version, root / "loop")
    store = open_store(f"sqlite://{db}")
    store.append([Event("u1", "5", "click")])
    store.close()
    res = _retrain(db, _job_file(tmp_path, POPULAR), root, "--report", str(tmp_path / "r.json"))
    assert res.exit_code == 3, res.output
    report = json.loads((tmp_path / "r.json").read_text())
    key = report["settings"]["metric"]
    assert report["decision"] == "kept"
    assert report["scores"]["candidate"][key] < report["scores"]["serving"][key]
    assert report["scores"]["candidate"]["n_users"] == report["scores"]["serving"]["n_users"]
    assert sorted(p.name for p in (root / "loop").iterdir() if p.name.isdigit()) == ["1"]

    with open(root / "loop" / ".retrain" / "lock", "a") as f:  # a run in progress
        fcntl.flock(f, fcntl.LOCK_EX)
        res = _retrain(db, _job_file(tmp_path, JOB), root, "--force")
    assert res.exit_code == 5, res.output
