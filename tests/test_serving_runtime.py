"""Runtime parameters change by config reload, without re-exporting a model: each one is
changed by a reload (admin call or the watcher) and observed in the recommend answers; a bad
file is refused with its file and field named and the parameters in force keep serving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from recforge.exceptions import ConfigError
from recforge.serving.app import create_app
from recforge.serving.repository import BundleLoader, VersionManager, VersionSource, publish
from recforge.serving.runtime import RuntimeFiles, parse_params
from recforge.serving.settings import ServerSettings
from tests.serving_fakes import set_bundle_version, tiny_recall_bundle  # noqa: F401

A = "admin-key-0123456789"
ADMIN = {"X-API-Key": A}
USER = "u3"


@pytest.fixture
def served(tiny_recall_bundle, tmp_path):  # noqa: F811
    root = tmp_path / "root"
    src = tmp_path / "src"
    shutil.copytree(tiny_recall_bundle, src)
    set_bundle_version(src, "one")
    publish(src, root / "demo")
    file = tmp_path / "runtime.yaml"
    file.write_text("models: {demo: {}}\n")
    manager = VersionManager(VersionSource(root), BundleLoader(), runtime=RuntimeFiles(file, root))
    manager.sync()
    client = TestClient(create_app(manager, ServerSettings(admin_keys=(A,))))
    return client, manager, file, root


def _set(file: Path, params: dict) -> None:
    file.write_text(yaml.safe_dump({"models": {"demo": params}}))


def _reload(client, status: int = 200) -> dict:
    r = client.post("/v1/admin/models/demo/runtime", headers=ADMIN)
    assert r.status_code == status, r.text
    return r.json()


def _rec(client, k: int = 10, **extra) -> dict:
    r = client.post("/v1/recommend", json={"user": USER, "k": k, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def _items(answer: dict) -> list:
    return [e["item"] for e in answer["items"]]


def _category(manager) -> dict:
    rec = manager.get("demo")
    return dict(zip(rec.catalogue.raw_ids.tolist(), rec.item_values["category"]))


def test_each_parameter_changes_the_answers_on_reload(served):
    client, manager, file, _ = served
    cat = _category(manager)
    base = _rec(client, k=10, explain=True)
    top = _items(base)

    _set(file, {"max_k": 5})  # k limit: larger k refused with 422
    status = _reload(client)["runtime"]
    assert status["params"] == {"max_k": 5} and status["sources"] == [str(file)]
    assert status["digest"] and status["error"] is None
    assert client.get("/v1/models").json()["models"][0]["runtime"] == status
    r = client.post("/v1/recommend", json={"user": USER, "k": 6})
    assert r.status_code == 422 and "at most 5" in r.text
    assert _items(_rec(client, k=5)) == top[:5]  # nothing else changed

    _set(file, {"mmr_lambda": 0.6, "diversity_field": "category"})  # diversity reorders
    _reload(client)
    div = _items(_rec(client))
    assert div != top and len({cat[i] for i in div}) > len({cat[i] for i in top})

    # quotas: one candidate from itemcf and als at most, the rest from ease
    _set(file, {"channels": {"itemcf": {"quota": 1}, "als": {"quota": 1}}})
    _reload(client)
    tr = _rec(client, k=10, explain=True)["trace"]
    for name in ("itemcf", "als"):
        assert sum(name in it["channels"] for it in tr["items"]) <= 1, tr["items"]
    base_itemcf = sum("itemcf" in it["channels"] for it in base["trace"]["items"])
    assert base_itemcf > 1  # the mix did change

    # blend weights: the merged score (what a bundle without a ranker ranks by) follows them
    _set(
        file, {"merge": "weighted", "channels": {"itemcf": {"weight": 0.0}, "als": {"weight": 0.0}}}
    )
    _reload(client)
    tr = _rec(client, k=10, explain=True)["trace"]
    ease_ranks = [it["channels"]["ease"]["rank"] for it in tr["items"] if "ease" in it["channels"]]
    assert ease_ranks == sorted(ease_ranks) and len(ease_ranks) == 10  # ease's order only

    wanted = cat[top[0]]  # filters: only items of one category
    _set(file, {"filters": {"category": [wanted]}})
    _reload(client)
    got = _items(_rec(client))
    assert got and all(cat[i] == wanted for i in got)

    _set(file, {"exclude": {"category": [wanted]}, "exclude_items": [top[1]]})  # excluded
    _reload(client)
    got = _items(_rec(client))
    assert len(got) == 10 and all(cat[i] != wanted for i in got) and top[1] not in got

    _set(file, {"rank_top": 3})  # only the best 3 recalled candidates are ranked
    _reload(client)
    tr = _rec(client, explain=True)["trace"]
    assert tr["n_ranked"] == 3 and len(tr["items"]) == 3

    _set(file, {})  # back to the bundle's own parameters
    _reload(client)
    assert _items(_rec(client)) == top


def test_bad_reload_is_refused_with_file_and_field_and_old_values_serve(served):
    client, manager, file, _ = served
    _set(file, {"max_k": 5})
    good = _reload(client)["runtime"]
    cases = [
        ({"max_kk": 3}, "max_kk"),  # unknown key (with a suggestion)
        ({"max_k": "ten"}, "max_k"),  # wrong type
        ({"mmr_lambda": 1.5}, "mmr_lambda"),
        ({"channels": {"nope": {"quota": 3}}}, "channels.nope"),  # no such channel
        ({"channels": {"itemcf": {"quota": 0}}}, "channels.itemcf.quota"),
        ({"filters": {"colour": ["red"]}}, "filters.colour"),  # not an item column
        ({"mmr_lambda": 0.3}, "diversity_field"),  # MMR needs a field
    ]
    for params, field in cases:
        _set(file, params)
        r = client.post("/v1/admin/models/demo/runtime", headers=ADMIN)
        assert r.status_code == 400, (params, r.text)
        msg = r.json()["detail"][0]["msg"]
        assert str(file) in msg and field in msg, (params, msg)
        (entry,) = client.get("/v1/models").json()["models"]
        assert entry["runtime"]["digest"] == good["digest"]  # still in force
        assert field in entry["runtime"]["error"]
        assert client.post("/v1/recommend", json={"user": USER, "k": 6}).status_code == 422
    file.write_text("models: {demo: [unclosed\n")  # not YAML at all
    r = client.post("/v1/admin/models/demo/runtime", headers=ADMIN)
    assert r.status_code == 400 and str(file) in r.text
    _set(file, {"max_k": 8})  # a good file again is taken
    assert _reload(client)["runtime"]["error"] is None
    assert client.post("/v1/recommend", json={"user": USER, "k": 8}).status_code == 200
    assert client.post("/v1/admin/models/demo/runtime").status_code == 401  # admin key


def test_watcher_reloads_a_changed_file_and_a_new_version_gets_the_params(
    served,
    tiny_recall_bundle,  # noqa: F811
    tmp_path,
):
    client, manager, file, root = served
    _set(file, {"max_k": 4})
    manager.sync()  # what the watcher does at each poll
    assert client.post("/v1/recommend", json={"user": USER, "k": 5}).status_code == 422
    (root / "demo" / "runtime.yaml").write_text("max_k: 7\n")  # beside the versions: wins
    manager.sync()
    (entry,) = client.get("/v1/models").json()["models"]
    assert entry["runtime"]["params"]["max_k"] == 7
    assert entry["runtime"]["sources"] == [str(file), str(root / "demo" / "runtime.yaml")]
    assert client.post("/v1/recommend", json={"user": USER, "k": 7}).status_code == 200

    (root / "demo" / "runtime.yaml").write_text("max_k: -1\n")  # bad: logged, not applied
    manager.sync()
    (entry,) = client.get("/v1/models").json()["models"]
    assert "max_k" in entry["runtime"]["error"] and entry["runtime"]["params"]["max_k"] == 7
    assert client.post("/v1/recommend", json={"user": USER, "k": 7}).status_code == 200

    (root / "demo" / "runtime.yaml").unlink()
    src = tmp_path / "two"
    shutil.copytree(tiny_recall_bundle, src)
    set_bundle_version(src, "two")
    publish(src, root / "demo")
    manager.sync()  # a new version starts with the parameters in force
    r = client.post("/v1/recommend", json={"user": USER, "k": 5})
    assert r.status_code == 422
    assert _rec(client, k=4)["version"] == "two"


def test_runtime_files_parse_errors_name_file_and_field(tmp_path):
    f = tmp_path / "rt.json"
    f.write_text(json.dumps({"models": {"a": {"channels": {"x": {"qouta": 3}}}}}))
    with pytest.raises(ConfigError, match=r"rt.json: models.a.channels.x: unknown key 'qouta'"):
        RuntimeFiles(f).read("a")
    f.write_text(json.dumps({"model": {}}))
    with pytest.raises(ConfigError, match="unknown key 'model'"):
        RuntimeFiles(f).read("a")
    p = parse_params({"exclude_items": [1, "b"], "merge": "quota"}, "here")
    assert p.as_dict() == {"merge": "quota", "exclude_items": [1, "b"]}
    with pytest.raises(ConfigError, match="here: merge"):
        parse_params({"merge": "sum"}, "here")


def test_one_bundle_reads_the_file_once_at_start(tiny_recall_bundle, tmp_path):  # noqa: F811
    from recforge.exceptions import DataError
    from recforge.serving.core import Recommender
    from recforge.serving.runtime import apply_file

    rec = Recommender.load(tiny_recall_bundle)
    before = rec.recommend(USER, k=10).items
    # the file's exclude_items acts as a request's exclude would (recall is asked without the
    # item, so the channels' ranks below it, and the merged order, may move)
    expected = rec.recommend(USER, k=3, exclude=[before[0]]).items
    f = tmp_path / "rt.yaml"
    rules = {"models": {"tiny": {"max_k": 3, "exclude_items": [before[0]]}}}
    f.write_text(yaml.safe_dump(rules))
    apply_file(rec, f, "tiny")  # what `recforge serve --bundle DIR --runtime FILE` does
    got = rec.recommend(USER, k=3).items
    assert got == expected and before[0] not in got
    with pytest.raises(DataError, match="at most 3"):
        rec.recommend(USER, k=4)
    assert rec.info()["runtime"]["max_k"] == 3
    f.write_text("models: {tiny: {channels: {nope: {quota: 1}}}}\n")
    with pytest.raises(ConfigError, match=r"rt.yaml: models.tiny.channels.nope"):
        apply_file(rec, f, "tiny")
    assert rec.info()["runtime"]["max_k"] == 3  # unchanged
