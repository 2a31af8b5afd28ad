"""A fake loader for the version manager (as TF Serving tests its manager): a version directory
holds ``fake.json`` describing how the fake servable behaves, so that tests can make versions
that load, fail, score NaN, take long, or change their schema, without training anything."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from recforge.exceptions import ArtifactError
from recforge.serving.repository import MARKER
from tests.serving_fixtures import build_tiny_bundle

SCHEMA = {"user_id": "str", "item_id": "int", "context": []}


def write_fake(path: Path, version: int, *, complete: bool = True, **behaviour: Any) -> Path:
    """A fake version directory; ``behaviour``: fail (message), nan (bool), warmup_s, load_s,
    schema (dict), padding (bytes of size on disk)."""
    path.mkdir(parents=True, exist_ok=True)
    spec = {"version": version, **behaviour}
    (path / "fake.json").write_text(json.dumps(spec))
    if behaviour.get("padding"):
        (path / "pad.bin").write_bytes(b"\0" * int(behaviour["padding"]))
    if complete:
        (path / MARKER).write_text("{}")
    return path


class FakeServable:
    """Answers with its own version on every item, so that a mixed response shows."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.version = int(spec["version"])
        self.spec = spec

    def recommend(self, user: str, k: int = 3, **_: Any) -> dict[str, Any]:
        first = self.version
        time.sleep(self.spec.get("request_s", 0.0))
        return {
            "version": self.version,
            "items": [(f"{first}-{i}", float(first)) for i in range(k)],
        }

    def info(self) -> dict[str, Any]:
        return {"version": self.version, "schema": self.spec.get("schema", SCHEMA)}

    def warmup(self) -> list[float]:
        time.sleep(self.spec.get("warmup_s", 0.0))
        return [float("nan")] if self.spec.get("nan") else [1.0, 0.5]


class FakeLoader:
    """Loads ``fake.json``; counts loads so tests can see what was tried."""

    def __init__(self) -> None:
        self.loaded: list[int] = []

    def load(self, path: Path) -> FakeServable:
        f = path / "fake.json"
        if not f.exists():
            raise ArtifactError(f"{f}: missing from the version directory.")
        spec = json.loads(f.read_text())
        time.sleep(spec.get("load_s", 0.0))
        if spec.get("fail"):
            raise ArtifactError(f"{path}: {spec['fail']}")
        if path.name.isdigit():  # a published copy: the directory is the version
            spec["version"] = int(path.name)
        self.loaded.append(int(spec["version"]))
        return FakeServable(spec)

    def schema(self, servable: FakeServable) -> dict[str, Any]:
        return servable.info()["schema"]

    def warmup(self, servable: FakeServable) -> list[float]:
        return servable.warmup()


# ---------------------------------------------------------------------------- real bundles
def set_bundle_version(bundle: Path, version: str) -> None:
    """Give a copy its own manifest version (bundle.json is the manifest, not checksummed),
    so that responses show which copy answered."""
    m = json.loads((bundle / "bundle.json").read_text())
    m["version"] = version
    (bundle / "bundle.json").write_text(json.dumps(m, indent=2))


def resign(bundle: Path, rel: str) -> None:
    """After editing ``rel`` inside a part: refresh its checksum in the part's manifest and in
    bundle.json, as a forger would, so that only the content checks can catch it."""
    from recforge.artifacts import sha256_file

    part = bundle / Path(rel).parent
    pm = json.loads((part / "manifest.json").read_text())
    pm["files"][Path(rel).name] = sha256_file(bundle / rel)
    (part / "manifest.json").write_text(json.dumps(pm))
    m = json.loads((bundle / "bundle.json").read_text())
    m["files"][rel] = sha256_file(bundle / rel)
    m["files"][(Path(rel).parent / "manifest.json").as_posix()] = sha256_file(
        part / "manifest.json"
    )
    (bundle / "bundle.json").write_text(json.dumps(m))


def edit_weights(bundle: Path, rel: str, fn) -> None:
    """Rewrite the safetensors file ``rel`` through ``fn(dict of arrays) -> dict``, re-signed."""
    from safetensors.numpy import load_file, save_file

    arrays = fn(dict(load_file(str(bundle / rel))))
    save_file(arrays, str(bundle / rel))
    resign(bundle, rel)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """One tiny real bundle per test session (import this fixture into a test module)."""
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny-bundle") / "bundle")  # DeepFM ranker


@pytest.fixture(scope="session")
def tiny_recall_bundle(tmp_path_factory) -> Path:
    """The same without a ranker: a server process over it starts without importing torch."""
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny-recall") / "bundle", ranker=False)
