"""The serving bundle: everything one recommend call needs, written and checked as one unit.

A bundle directory holds::

    bundle.json              format, version id, created, the parts, which ranker field comes
                             from the user, the item or the request context, the re-rank
                             rules, offline metrics, and a sha256 of every other file
    recall/                  the RecallPipeline (channels, their Faiss indexes, fallback)
    ranker/                  the ranker's model directory (optional: without one, the funnel
                             ranks by the merged recall score)
    features/user.parquet    user feature table keyed by raw user id (column ``user``)
    features/item.parquet    item feature table keyed by raw item id (column ``item``)

One manifest, one version, one set of checksums: the index and the ranker can never come
from different trainings. ``write_bundle`` builds the directory beside its target and
renames it into place, so a reader never sees half a bundle. ``verify_bundle`` checks every
file (present, listed, checksum, no path outside the directory, no unlisted file) without
loading a model; ``load_bundle`` verifies, then loads.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from recforge.artifacts import atomic_dir, safe_name, sha256_file, verify_files
from recforge.config import from_dict
from recforge.exceptions import ArtifactError, ConfigError

log = logging.getLogger(__name__)

MANIFEST = "bundle.json"
FORMAT = "recforge.bundle"
FORMAT_VERSION = 1
SOURCES = ("user_id", "item_id", "user", "item", "context", "recall", "cross")
READY_MARKER = "READY"  # written last by `recforge models publish` (serving/repository.py)


@dataclass
class RerankConfig:
    """What happens after the ranker (``rerank:`` in a bundle config)."""

    rank_top: int = 200  # candidates the ranker scores, best by recall order; the rest drop
    mmr_lambda: float = 0.0  # 0: no diversity; in (0, 1): MMR weight on dissimilarity
    diversity_field: str | None = None  # item feature whose equal values count as similar
    max_k: int = 1000  # largest k a request may ask for

    def __post_init__(self) -> None:
        from recforge.jobs import check_types

        check_types(self, "rerank")  # a value of the wrong type names the field
        if self.rank_top < 1:
            raise ConfigError(f"rerank.rank_top: must be >= 1, got {self.rank_top!r}.")
        if not 0.0 <= self.mmr_lambda < 1.0:
            raise ConfigError(f"rerank.mmr_lambda: must be in [0, 1), got {self.mmr_lambda!r}.")
        if self.max_k < 1:
            raise ConfigError(f"rerank.max_k: must be >= 1, got {self.max_k!r}.")

    def check(self, item_columns: list[str]) -> RerankConfig:
        """Check the fields against the bundle's item feature columns; returns self."""
        if self.mmr_lambda > 0 and self.diversity_field is None:
            raise ConfigError(
                "rerank.mmr_lambda > 0 needs rerank.diversity_field: an item feature column "
                f"(one of {item_columns}) whose equal values count as similar items."
            )
        if self.diversity_field is not None and self.diversity_field not in item_columns:
            raise ConfigError(
                f"rerank.diversity_field: {self.diversity_field!r} is not an item feature "
                f"column; item columns: {item_columns}."
            )
        return self


@dataclass
class Bundle:
    """A verified, loaded bundle."""

    path: Path
    manifest: dict[str, Any]
    pipeline: Any  # RecallPipeline
    ranker: Any | None
    user_table: pd.DataFrame | None  # indexed by raw user id
    item_table: pd.DataFrame | None  # indexed by raw item id
    rerank: RerankConfig = field(default_factory=RerankConfig)

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def fields(self) -> dict[str, dict[str, str]]:
        """Ranker field -> {"source": one of SOURCES, "column": raw column it reads}."""
        return self.manifest.get("fields", {})


# ---------------------------------------------------------------------------- write
def field_sources(
    ranker: Any, user_table: pd.DataFrame | None, item_table: pd.DataFrame | None
) -> dict[str, dict[str, str]]:
    """Where each ranker input field comes from at request time.

    A field reads column ``f.source or f.name`` of the training frame: ``user``/``item`` are
    the ids, a column of the user (item) table, or that name with a ``user_`` (``item_``)
    prefix (``jobs.ranking_frame`` adds one on a clash), comes from that table; a
    ``recall_*`` column is the candidate's place in the request's recall and an ``a|b``
    column the cross of two such columns (``recforge.pipeline.candidate_features``);
    anything else is request context.
    """
    from recforge.pipeline.candidate_features import RECALL_PREFIX, cross_parts

    user_cols = [] if user_table is None else list(user_table.columns)
    item_cols = [] if item_table is None else list(item_table.columns)
    out: dict[str, dict[str, str]] = {}
    for f in ranker.encoder_.fields_:
        col = f.source or f.name
        if col.startswith(RECALL_PREFIX):
            out[f.name] = {"source": "recall", "column": col}
        elif cross_parts(col) is not None:
            out[f.name] = {"source": "cross", "column": col}
        elif col == "user":
            out[f.name] = {"source": "user_id", "column": "user"}
        elif col == "item":
            out[f.name] = {"source": "item_id", "column": "item"}
        elif col in item_cols or (col.startswith("item_") and col[5:] in item_cols):
            out[f.name] = {"source": "item", "column": col if col in item_cols else col[5:]}
        elif col in user_cols or (col.startswith("user_") and col[5:] in user_cols):
            out[f.name] = {"source": "user", "column": col if col in user_cols else col[5:]}
        else:
            out[f.name] = {"source": "context", "column": col}
    return out


def _parts(spec: dict[str, str]) -> list[str]:
    from recforge.pipeline.candidate_features import cross_parts

    return cross_parts(spec["column"]) or []


def write_bundle(
    path: str | Path,
    *,
    pipeline: Any,
    ranker: Any | None = None,
    user_features: pd.DataFrame | None = None,
    item_features: pd.DataFrame | None = None,
    rerank: RerankConfig | dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    name: str = "recforge",
    onnx: bool = False,
) -> Path:
    """Write a bundle directory (module docstring) atomically; returns its path.

    pipeline: a fitted ``RecallPipeline``; ranker: a fitted ranker or None; user_features /
    item_features: tables indexed by raw id (``Interactions.user_features`` /
    ``item_features``), kept with only the columns the ranker or the re-rank rules read.
    onnx: also write the (torch) ranker as ``ranker.onnx`` (``recforge.export``, checked
    against torch); the server then scores with onnxruntime.
    """
    from recforge.pipeline import RecallPipeline

    if not isinstance(pipeline, RecallPipeline) or not pipeline.is_fitted:
        raise ConfigError("write_bundle: pipeline must be a fitted RecallPipeline.")
    if ranker is not None and (getattr(ranker, "kind", None) != "ranker" or not ranker.is_fitted):
        raise ConfigError("write_bundle: ranker must be a fitted ranker (or None).")
    item_cols = [] if item_features is None else list(item_features.columns)
    if not isinstance(rerank, RerankConfig):
        rerank = from_dict(RerankConfig, rerank or {}, where="rerank")
    rerank.check(item_cols)
    fields = field_sources(ranker, user_features, item_features) if ranker is not None else {}
    with atomic_dir(path, replaces=(MANIFEST,)) as tmp:
        pipeline.save(tmp / "recall")
        if ranker is not None:
            ranker.save(tmp / "ranker")
        if onnx:
            if ranker is None:
                raise ConfigError("write_bundle: onnx=True needs a ranker.")
            from recforge.export import export_onnx

            export_onnx(ranker, tmp / "ranker.onnx")
        tables = {}
        for key, table in (("user", user_features), ("item", item_features)):
            if table is None:
                continue
            keep = {v["column"] for v in fields.values() if v["source"] == key}
            keep |= {p for v in fields.values() if v["source"] == "cross" for p in _parts(v)}
            if key == "item":
                keep |= set(table.columns)  # every item column can be a request filter
            if not keep:
                continue
            t = table[[c for c in table.columns if c in keep]].copy()
            t.index = t.index.rename(key)
            (tmp / "features").mkdir(exist_ok=True)
            rel = f"features/{key}.parquet"
            t.reset_index().to_parquet(tmp / rel, index=False)
            tables[key] = rel
        files = {
            p.relative_to(tmp).as_posix(): sha256_file(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        now = _dt.datetime.now(_dt.UTC)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": name,
            "version": f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}",
            "created": now.isoformat(timespec="seconds"),
            "recall": "recall",
            "ranker": "ranker" if ranker is not None else None,
            "ranker_name": getattr(ranker, "name", None),
            "onnx": "ranker.onnx" if onnx else None,
            "channels": [c.name for c in pipeline.channels],
            "tables": tables,
            "fields": fields,
            "rerank": asdict(rerank),
            "metrics": metrics or {},
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default))
    log.info("bundle %s written to %s", manifest["version"], path)
    return path


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"cannot store {type(x).__name__} in bundle.json")


# ---------------------------------------------------------------------------- read
def read_bundle_manifest(path: str | Path) -> dict[str, Any]:
    """bundle.json, parsed and checked for format (not the files)."""
    path = Path(path)
    mfile = path / MANIFEST
    if not path.is_dir():
        raise ArtifactError(f"{path}: not a bundle directory (it does not exist or is a file).")
    if not mfile.is_file():
        raise ArtifactError(
            f"{mfile}: missing; {path} is not a bundle (build one with `recforge bundle build`)."
        )
    try:
        manifest = json.loads(mfile.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{mfile}: corrupt JSON ({e}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{mfile}: not a recforge bundle manifest (format != {FORMAT!r}).")
    for key in ("format_version", "version", "recall", "files", "fields", "rerank"):
        if key not in manifest:
            raise ArtifactError(f"{mfile}: field {key!r} is missing.")
    if (
        not isinstance(manifest["format_version"], int)
        or manifest["format_version"] > FORMAT_VERSION
    ):
        raise ArtifactError(
            f"{mfile}: format version {manifest['format_version']!r} is not one this recforge "
            f"reads (<= {FORMAT_VERSION})."
        )
    if not isinstance(manifest["files"], dict) or not manifest["files"]:
        raise ArtifactError(f"{mfile}: 'files' must list every file of the bundle.")
    return manifest


def verify_bundle(path: str | Path, *, deep: bool = True) -> dict[str, Any]:
    """Check every file of a bundle without loading a model; returns the manifest.

    Raises ``ArtifactError`` naming the file when one is missing, corrupt (checksum), not
    listed in bundle.json, or listed with a name that leaves the directory; and when a
    part the manifest names (recall, ranker, tables) has no files. ``deep=False`` (what
    ``load_bundle`` uses) leaves the weights, states and Faiss files of the parts to their
    loaders, which hash them against the part's own manifest, itself checksummed here: a
    load then reads and hashes every byte once instead of twice, with the same guarantee.
    """
    path = Path(path)
    manifest = read_bundle_manifest(path)
    files: dict[str, str] = manifest["files"]
    parts = [
        manifest["recall"],
        manifest.get("ranker"),
        manifest.get("onnx"),
        *manifest.get("tables", {}).values(),
    ]
    for part in [p for p in parts if p]:
        safe_name(part, what="part", where=path / MANIFEST)
    later = () if deep else [n for n in files if _hashed_by_part(path, n, manifest)]
    verify_files(path, files, required=(), where=path / MANIFEST, hashed_later=later)
    listed = set(files) | {MANIFEST, READY_MARKER}  # the model repository's marker
    for f in path.rglob("*"):
        if f.is_file() and f.relative_to(path).as_posix() not in listed:
            raise ArtifactError(f"{f}: not listed in bundle.json; the bundle was modified.")
    for part in [p for p in parts if p]:
        if not any(rel == part or rel.startswith(f"{part}/") for rel in files):
            raise ArtifactError(f"{path / part}: the manifest names this part but it has no files.")
    return manifest


def _hashed_by_part(path: Path, name: str, manifest: dict[str, Any]) -> bool:
    """Whether a part's loader hashes ``name`` against a part manifest listed (so pinned) in
    bundle.json: a model's weights/state (``artifacts.read_artifact``), a Faiss index file
    (``verify_index``), under the recall or ranker part."""
    from recforge.artifacts import MANIFEST as MODEL_MANIFEST
    from recforge.artifacts import REQUIRED_FILES
    from recforge.index.faiss_index import CONFIG_FILE, INDEX_FILE

    parts = [p for p in (manifest.get("recall"), manifest.get("ranker")) if p]
    if not any(name.startswith(f"{p}/") for p in parts):
        return False
    parent, _, base = name.rpartition("/")
    guard = {**dict.fromkeys(REQUIRED_FILES, MODEL_MANIFEST), INDEX_FILE: CONFIG_FILE}.get(base)
    return guard is not None and f"{parent}/{guard}" in manifest["files"]


def load_bundle(path: str | Path) -> Bundle:
    """Verify and load a bundle directory."""
    from recforge import models
    from recforge.pipeline import RecallPipeline

    path = Path(path)
    manifest = verify_bundle(path, deep=False)  # the parts' loaders hash their own files
    try:
        pipeline = RecallPipeline.load(path / manifest["recall"])
        ranker = models.load(path / manifest["ranker"]) if manifest.get("ranker") else None
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"{path}: a part of the bundle cannot be loaded ({e}).") from None
    tables: dict[str, pd.DataFrame | None] = {"user": None, "item": None}
    for key, rel in manifest.get("tables", {}).items():
        try:
            t = pd.read_parquet(path / rel)
        except Exception as e:  # pyarrow raises several types on a bad file
            raise ArtifactError(f"{path / rel}: cannot be read ({e}).") from None
        if key not in t.columns:
            raise ArtifactError(f"{path / rel}: no {key!r} id column.")
        tables[key] = t.drop_duplicates(key).set_index(key)
    rerank = from_dict(RerankConfig, manifest["rerank"], where=f"{path / MANIFEST} rerank")
    for name, spec in manifest["fields"].items():
        if spec.get("source") not in SOURCES:
            raise ArtifactError(
                f"{path / MANIFEST}: field {name!r} has an unknown source {spec!r}."
            )
    return Bundle(path, manifest, pipeline, ranker, tables["user"], tables["item"], rerank)
