"""Bad versions against real bundles: each is rejected by the gate with its reason in the
status API, serves 0 requests, and the previous version keeps serving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from recforge.artifacts import sha256_file
from recforge.serving.app import create_app
from recforge.serving.repository import (
    MARKER,
    BundleLoader,
    VersionManager,
    VersionSource,
    publish,
)
from recforge.serving.settings import ServerSettings
from tests.serving_fakes import edit_weights, set_bundle_version, tiny_bundle  # noqa: F401

RANKER_W = "ranker/weights.safetensors"
ITEMCF_W = "recall/channels/itemcf/model/weights.safetensors"


@pytest.fixture
def bundle(tiny_bundle) -> Path:  # noqa: F811
    return tiny_bundle


def _manifest(d: Path) -> dict:
    return json.loads((d / "bundle.json").read_text())


def _write_manifest(d: Path, m: dict) -> None:
    (d / "bundle.json").write_text(json.dumps(m))


def truncated_weights(d: Path) -> None:
    f = d / RANKER_W
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def flipped_byte(d: Path) -> None:
    f = d / ITEMCF_W
    b = bytearray(f.read_bytes())
    b[len(b) // 2] ^= 0xFF
    f.write_bytes(bytes(b))


def missing_tensor(d: Path) -> None:
    edit_weights(d, RANKER_W, lambda a: dict(sorted(a.items())[1:]))


def nan_weights(d: Path) -> None:
    edit_weights(
        d,
        RANKER_W,
        lambda a: {k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v for k, v in a.items()},
    )


def schema_mismatch(d: Path) -> None:
    m = _manifest(d)  # a ranker field that was a user feature now comes from the request
    m["fields"]["age"]["source"] = "context"
    _write_manifest(d, m)


def emptied_file_list(d: Path) -> None:
    m = _manifest(d)
    m["files"] = {}
    _write_manifest(d, m)


def path_escape(d: Path) -> None:
    outside = d.parent / "outside.txt"
    outside.write_text("not part of the bundle")
    m = _manifest(d)
    m["files"]["../outside.txt"] = sha256_file(outside)
    _write_manifest(d, m)


BAD = [
    (truncated_weights, "checksum mismatch"),
    (flipped_byte, "checksum mismatch"),
    (missing_tensor, "do not fit"),
    (nan_weights, "warm-up"),
    (schema_mismatch, "schema mismatch"),
    (emptied_file_list, "'files'"),
    (path_escape, "../outside.txt"),
]


def test_bad_versions_are_rejected_with_their_reason_and_never_serve(bundle, tmp_path):
    root = tmp_path / "root"
    good = tmp_path / "good"
    shutil.copytree(bundle, good)
    set_bundle_version(good, "good-1")
    publish(good, root / "demo")
    m = VersionManager(VersionSource(root), BundleLoader())
    m.sync()
    client = TestClient(create_app(m, ServerSettings()))
    body = {"user": "u3", "k": 5}
    assert client.post("/v1/recommend", json=body).json()["version"] == "good-1"

    expected: dict[int, tuple[str, str]] = {}
    for i, (corrupt, reason) in enumerate(BAD):
        src = tmp_path / f"bad-{i}" / "b"
        shutil.copytree(bundle, src)
        set_bundle_version(src, f"bad-{corrupt.__name__}")
        corrupt(src)
        v = int(publish(src, root / "demo").name)
        expected[v] = ("failed", reason)
    in_progress = root / "demo" / str(len(BAD) + 2)  # a copy still going on: no READY yet
    shutil.copytree(bundle, in_progress)
    (in_progress / MARKER).unlink(missing_ok=True)
    expected[int(in_progress.name)] = ("incomplete", MARKER)

    m.sync()
    for _ in range(3):  # a bad version serves nothing: the previous one answers
        r = client.post("/v1/recommend", json=body)
        assert r.status_code == 200 and r.json()["version"] == "good-1"
    (status,) = client.get("/v1/models").json()["models"]
    versions = {x["version"]: x for x in status["versions"]}
    assert versions[1]["state"] == "available" and status["default_version"] == 1
    for v, (state, reason) in expected.items():
        assert versions[v]["state"] == state, (v, versions[v])
        assert reason in versions[v]["reason"], (v, versions[v]["reason"])
    text = client.get("/metrics").text
    assert f'recforge_model_load_failures_total{{model="demo"}} {float(len(BAD))}' in text
    assert client.get("/health/ready").status_code == 200

    good2 = tmp_path / "good2"
    shutil.copytree(bundle, good2)
    set_bundle_version(good2, "good-2")
    publish(good2, root / "demo")
    m.sync()  # the next good version takes over
    assert client.post("/v1/recommend", json=body).json()["version"] == "good-2"


def test_a_single_model_directory_serves_as_a_one_channel_bundle(tmp_path):
    """A version may hold a saved retrieval model (or a recall pipeline): it passes the same
    gate (checksums, warm-up) and serves through REST with a popularity fallback."""
    from click.testing import CliRunner

    from recforge import models
    from recforge.cli.serve_cmd import publish as publish_cmd
    from recforge.pipeline import RecallPipeline
    from tests.serving_fixtures import RECALL, tiny_log

    inter = tiny_log()
    model = models.get("itemcf", k=20).fit(inter)
    model.save(tmp_path / "itemcf")
    root = tmp_path / "root"
    run = CliRunner().invoke(publish_cmd, [str(tmp_path / "itemcf"), str(root / "cf")])
    assert run.exit_code == 0, run.output
    m = VersionManager(VersionSource(root), BundleLoader())
    m.sync()
    client = TestClient(create_app(m, ServerSettings()))
    known = inter.frame["user"].iloc[0]
    r = client.post("/v1/recommend", json={"user": known, "k": 5, "explain": True}).json()
    want, _ = model.recommend([known], k=5)
    assert [e["item"] for e in r["items"]] == want[0].tolist() and not r["cold"]
    assert r["version"] == "model-1" and r["trace"]["items"][0]["found_by"] == ["itemcf"]
    cold = client.post("/v1/recommend", json={"user": "nobody", "k": 5}).json()
    assert cold["cold"] and len(cold["items"]) == 5  # the model's own popularity
    item = int(inter.frame["item"].iloc[0])
    sim = client.post("/v1/similar", json={"item": item, "k": 3}).json()
    assert sim["channel"] == "itemcf" and len(sim["items"]) == 3
    (status,) = client.get("/v1/models").json()["models"]
    assert status["versions"][0]["state"] == "available"

    # the same gate: a flipped byte in the weights is refused, the model keeps serving
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "itemcf", bad)
    w = bad / "weights.safetensors"
    b = bytearray(w.read_bytes())
    b[len(b) // 2] ^= 0xFF
    w.write_bytes(bytes(b))
    publish(bad, root / "cf")  # no verify here: the server's gate must catch it
    m.sync()
    versions = {v["version"]: v for v in client.get("/v1/models").json()["models"][0]["versions"]}
    assert versions[2]["state"] == "failed" and "checksum mismatch" in versions[2]["reason"]
    assert client.post("/v1/recommend", json={"user": known}).json()["version"] == "model-1"

    pipe = RecallPipeline.from_config(RECALL).fit(inter)  # a recall pipeline directory too
    pipe.save(tmp_path / "recall")
    publish(tmp_path / "recall", root / "cf")
    m.sync()
    r = client.post("/v1/recommend", json={"user": known, "k": 5, "explain": True}).json()
    assert r["version"] == "recall-3"
    assert {c for it in r["trace"]["items"] for c in it["found_by"]} <= {"itemcf", "als", "ease"}

    ranker_dir = tmp_path / "ranker"  # a ranker alone has no candidates: refused at publish
    from recforge.data.synth import make_ctr_frame

    frame = make_ctr_frame(inter, n_negatives=1, seed=1)
    models.get("lr", epochs=1, num_threads=1).fit(frame, label="label").save(ranker_dir)
    run = CliRunner().invoke(publish_cmd, [str(ranker_dir), str(root / "cf")])
    assert run.exit_code != 0 and "cannot serve alone" in str(run.exception)
