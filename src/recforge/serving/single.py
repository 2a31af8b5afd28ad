"""A single saved model (or recall pipeline) directory served as a bundle.

A model repository version is a bundle directory, or one of these:

    manifest.json + weights.safetensors + state.json    a retrieval model (``model.save``)
    recall.json + channels/ + fallback/                 a recall pipeline (``pipe.save``)

``load_servable(path)`` tells them apart by their manifest and returns a ``Bundle`` the
``Recommender`` serves: a model becomes a one-channel recall pipeline named after the model
(quota: ``QUOTA``), with a popularity fallback computed from the model's own training
interactions (``seen_``), no ranker and the default re-rank rules; a recall pipeline keeps its
channels and fallback. Every file is verified first (``verify_artifact``,
``RecallPipeline.verify``: listed, checksummed, no path leaving the directory), so the gate
before traffic is the same as for a bundle; the warm-up then runs as for a bundle.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from recforge.artifacts import MANIFEST as MODEL_MANIFEST
from recforge.artifacts import read_json, read_manifest, verify_artifact
from recforge.exceptions import ArtifactError
from recforge.serving.bundle import MANIFEST as BUNDLE_MANIFEST
from recforge.serving.bundle import Bundle, RerankConfig, load_bundle, verify_bundle

log = logging.getLogger(__name__)

QUOTA = 200  # candidates asked of a single model per request (a runtime parameter)
RECALL_MANIFEST = "recall.json"


def kind_of(path: str | Path) -> str:
    """``"bundle"``, ``"recall"`` or ``"model"``: what the directory holds (by manifest)."""
    path = Path(path)
    if (path / BUNDLE_MANIFEST).is_file():
        return "bundle"
    if (path / RECALL_MANIFEST).is_file():
        return "recall"
    if (path / MODEL_MANIFEST).is_file():
        return "model"
    raise ArtifactError(
        f"{path}: neither a bundle ({BUNDLE_MANIFEST}), a recall pipeline ({RECALL_MANIFEST}) "
        f"nor a saved model ({MODEL_MANIFEST}); publish one of those."
    )


def verify_servable(path: str | Path) -> dict[str, Any]:
    """Check every file of a bundle, recall pipeline or model directory without building
    anything (``recforge models publish`` runs it first); returns its manifest."""
    from recforge.pipeline import RecallPipeline

    kind = kind_of(path)
    if kind == "bundle":
        return verify_bundle(path)
    if kind == "recall":
        return RecallPipeline.verify(path)
    return _retrieval_only(path, verify_artifact(path))


def _retrieval_only(path: str | Path, manifest: dict[str, Any]) -> dict[str, Any]:
    if manifest.get("kind") != "retrieval":
        raise ArtifactError(
            f"{Path(path) / MODEL_MANIFEST}: a {manifest.get('kind')!r} model "
            f"({manifest.get('name')!r}) cannot serve alone: a ranker needs candidates; "
            f"publish a bundle (`recforge bundle build`) with it."
        )
    return manifest


def load_servable(path: str | Path) -> Bundle:
    """The ``Bundle`` of a bundle, recall pipeline or model directory (module docstring)."""
    from recforge import models
    from recforge.pipeline import Channel, RecallPipeline

    path = Path(path)
    kind = kind_of(path)
    if kind == "bundle":
        return load_bundle(path)
    # the loaders verify every file as they read it (one hashing pass)
    manifest = read_json(path / RECALL_MANIFEST) if kind == "recall" else {}
    try:
        if kind == "recall":
            pipeline = RecallPipeline.load(path)
            name = "recall"
        else:
            manifest = _retrieval_only(path, read_manifest(path))
            model = models.load(path)
            name = model.name
            pipeline = RecallPipeline(
                [Channel(model.name, model, quota=QUOTA)], fallback=popularity_of(model)
            )
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"{path}: the {kind} cannot be loaded ({e}).") from None
    marker = path / "READY"  # the repository's marker holds the version published
    version = read_json(marker).get("version") if marker.is_file() else None
    bundle_manifest = {
        "format": "recforge.bundle",
        "kind": kind,
        "name": name,
        "version": f"{kind}-{version if version is not None else path.name}",
        "created": manifest.get("created"),
        "recall": ".",
        "ranker": None,
        "channels": [c.name for c in pipeline.channels],
        "tables": {},
        "fields": {},
        "rerank": asdict(RerankConfig()),
        "metrics": {},
        "files": manifest.get("files", {}),
    }
    log.info("serving %s %s as a one-part bundle", kind, path)
    return Bundle(path, bundle_manifest, pipeline, None, None, None, RerankConfig())


def popularity_of(model: Any) -> Any:
    """A fitted ``most_popular`` over the model's own training interactions: the fallback
    for users the model never saw (and to fill short lists)."""
    from recforge import models

    pop = models.get("most_popular")
    pop.user_vocab_, pop.item_vocab_, pop.seen_ = model.user_vocab_, model.item_vocab_, model.seen_
    pop.item_scores_ = np.asarray(model.seen_.sum(axis=0), dtype=np.float32).ravel()
    return pop
