"""Tamper-proof model, index and pipeline directories: every data file is required and
checksummed, names stay inside the directory, content that does not fit the model is an
ArtifactError naming the file, and saving is atomic."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recforge import models
from recforge.artifacts import sha256_file, verify_artifact
from recforge.exceptions import ArtifactError, ConfigError
from recforge.index import AnnIndex, build_index, verify_index
from recforge.pipeline import Channel, RecallPipeline
from tests.conftest import make_tiny_ctr, make_tiny_interactions


@pytest.fixture(scope="module")
def data():
    return make_tiny_interactions()


@pytest.fixture(scope="module")
def als(data):
    return models.get("als", factors=4, iterations=2).fit(data)


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def _write_manifest(path, m):
    (path / "manifest.json").write_text(json.dumps(m))


def _flip_byte(f, offset=-5):
    b = bytearray(f.read_bytes())
    b[offset] ^= 0x01
    f.write_bytes(bytes(b))


def test_bit_flip_is_caught_even_with_an_emptied_file_list(als, tmp_path):
    path = als.save(tmp_path / "m")
    _flip_byte(path / "weights.safetensors")
    m = _manifest(path)
    m["files"] = {}
    _write_manifest(path, m)
    with pytest.raises(ArtifactError, match="no checksum for 'weights.safetensors'"):
        models.load(path)
    with pytest.raises(ArtifactError, match="weights.safetensors"):
        verify_artifact(path)


def test_bit_flip_in_listed_file_is_a_checksum_mismatch(als, tmp_path):
    path = als.save(tmp_path / "m")
    _flip_byte(path / "state.json", offset=3)
    with pytest.raises(ArtifactError, match=r"state.json: checksum mismatch"):
        verify_artifact(path)


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/passwd", "a/../../b", "C:\\x", ""])
def test_unsafe_file_names_are_refused(als, tmp_path, name):
    (tmp_path / "outside.bin").write_bytes(b"x")
    path = als.save(tmp_path / "m")
    m = _manifest(path)
    m["files"][name] = sha256_file(tmp_path / "outside.bin")
    _write_manifest(path, m)
    with pytest.raises(ArtifactError, match="not a safe relative file name"):
        models.load(path)


def test_link_out_of_the_directory_is_refused(als, tmp_path):
    (tmp_path / "secret").write_bytes(b"x")
    path = als.save(tmp_path / "m")
    (path / "extra").symlink_to(tmp_path / "secret")
    m = _manifest(path)
    m["files"]["extra"] = sha256_file(tmp_path / "secret")
    _write_manifest(path, m)
    with pytest.raises(ArtifactError, match="points outside"):
        verify_artifact(path)


def test_truncated_weights_with_a_matching_checksum_name_the_file(als, tmp_path):
    path = als.save(tmp_path / "m")
    w = path / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:40])
    m = _manifest(path)
    m["files"]["weights.safetensors"] = sha256_file(w)
    _write_manifest(path, m)
    with pytest.raises(ArtifactError, match="weights.safetensors: cannot be read"):
        verify_artifact(path)


def test_missing_state_file(als, tmp_path):
    path = als.save(tmp_path / "m")
    (path / "state.json").unlink()
    with pytest.raises(ArtifactError, match="state.json: missing"):
        models.load(path)


def test_verify_artifact_returns_the_manifest(als, tmp_path):
    path = als.save(tmp_path / "m")
    m = verify_artifact(path)
    assert m["name"] == "als" and set(m["files"]) == {"weights.safetensors", "state.json"}


def test_params_that_do_not_fit_the_weights(tmp_path):
    """A torch model whose manifest says other layer sizes than its tensors hold."""
    df = make_tiny_ctr(200, seed=1)
    model = models.get("deepfm", **models.get_class("deepfm").smoke_params)
    path = model.fit(df, label="label").save(tmp_path / "m")
    m = _manifest(path)
    m["params"]["hidden"] = [9]
    _write_manifest(path, m)
    with pytest.raises(ArtifactError, match="do not fit the DeepFM.*RuntimeError"):
        models.load(path)


def test_factors_of_another_shape_are_an_artifact_error(als, tmp_path):
    """Content that passes the checksums but does not fit together (the writer was buggy or
    the files were re-signed): the load-time consistency check catches it."""
    from safetensors.numpy import load_file, save_file

    path = als.save(tmp_path / "m")
    w = path / "weights.safetensors"
    arrays = load_file(str(w))
    arrays["item_factors"] = arrays["item_factors"][:-2]
    save_file(arrays, str(w))
    m = _manifest(path)
    m["files"]["weights.safetensors"] = sha256_file(w)
    _write_manifest(path, m)
    with pytest.raises(ArtifactError, match="weights.safetensors / state.json do not fit"):
        models.load(path)


def test_save_replaces_an_existing_model_atomically(data, als, tmp_path):
    path = als.save(tmp_path / "m")
    (path / "job.json").write_text("{}")  # a file of the previous run goes with it
    pop = models.get("most_popular").fit(data)
    pop.save(path)
    assert _manifest(path)["name"] == "most_popular"
    assert not (path / "job.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp dir left behind


def test_failed_save_leaves_the_old_directory_intact(als, tmp_path, monkeypatch):
    import safetensors.numpy

    path = als.save(tmp_path / "m")
    before = sha256_file(path / "weights.safetensors")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        als.save(path)
    assert sha256_file(path / "weights.safetensors") == before
    verify_artifact(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_save_refuses_to_replace_an_unrelated_directory(als, tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    (d / "holiday.jpg").write_bytes(b"jpg")
    with pytest.raises(ArtifactError, match="refusing to replace"):
        als.save(d)
    assert (d / "holiday.jpg").exists()


def test_index_file_is_checksummed(tmp_path):
    x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    path = build_index(x, kind="flat").save(tmp_path / "idx")
    assert verify_index(path)["files"]["index.faiss"] == sha256_file(path / "index.faiss")
    _flip_byte(path / "index.faiss")
    with pytest.raises(ArtifactError, match="index.faiss: checksum mismatch"):
        AnnIndex.load(path)
    meta = json.loads((path / "index.json").read_text())
    meta["files"] = {}
    (path / "index.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="no checksum for 'index.faiss'"):
        verify_index(path)


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", ".hidden", "x" * 65, "fallback"])
def test_recall_channel_names_must_be_safe_directory_names(name):
    with pytest.raises(ConfigError, match="channel name"):
        RecallPipeline([Channel(name, models.get("most_popular"))])


def test_recall_pipeline_verify_and_edited_channel_name(data, tmp_path):
    pipe = RecallPipeline([Channel("pop.v1", models.get("most_popular"), quota=5)]).fit(data)
    path = pipe.save(tmp_path / "p")
    assert RecallPipeline.verify(path)["channels"][0]["name"] == "pop.v1"
    m = json.loads((path / "recall.json").read_text())
    m["channels"][0]["name"] = "../../evil"
    (path / "recall.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="not a safe directory name"):
        RecallPipeline.load(path)
    m["channels"][0]["name"] = "pop.v1"
    (path / "recall.json").write_text(json.dumps(m))
    _flip_byte(path / "channels" / "pop.v1" / "model" / "weights.safetensors")
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        RecallPipeline.verify(path)
